#!/bin/sh
# Make sure Debian's chromium is installed for the dashboard's browser tests (Playwright drives it;
# no browser is ever downloaded by Playwright itself). Does nothing when it is already there.
set -eu
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$CHROMIUM" != /usr/bin/chromium ]; then
    echo "ensure-chromium: CHROMIUM_PATH=$CHROMIUM is not an executable file" >&2
    exit 1
fi
echo "ensure-chromium: installing Debian's chromium (needed by tests/test_dashboard_browser.py)"
if [ "$(id -u)" = 0 ]; then
    SUDO=
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
else
    echo "ensure-chromium: /usr/bin/chromium is missing and this user cannot install it." >&2
    echo "  Install it as root:  apt-get update && apt-get install -y chromium" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no apt-get here; install Chromium and set CHROMIUM_PATH to its executable." >&2
    exit 1
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
test -x /usr/bin/chromium || { echo "ensure-chromium: chromium did not install /usr/bin/chromium" >&2; exit 1; }
echo "ensure-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo chromium installed)"
