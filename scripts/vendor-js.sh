#!/usr/bin/env bash
# Re-fetch the dashboard's vendored chart library (uPlot) from the npm registry and verify it.
#
#   scripts/vendor-js.sh            # fetch uplot@VERSION, check its sha256s, copy it into the static folder
#   UPDATE=1 scripts/vendor-js.sh   # after changing VERSION/TARBALL_SHA256: copy and print the new file sums
#
# Needs npm (only this script does; the tests and the service do not).
set -euo pipefail

VERSION=1.6.32
TARBALL_SHA256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
STATIC="$ROOT/functions/dashboard/static"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

command -v npm >/dev/null || { echo "vendor-js: npm is needed to fetch uplot@$VERSION" >&2; exit 1; }

(cd "$WORK" && npm pack --silent "uplot@$VERSION" >/dev/null)
TARBALL="$WORK/uplot-$VERSION.tgz"
ACTUAL="$(sha256sum "$TARBALL" | cut -d' ' -f1)"
if [ "$ACTUAL" != "$TARBALL_SHA256" ]; then
    echo "vendor-js: uplot-$VERSION.tgz has sha256 $ACTUAL, expected $TARBALL_SHA256" >&2
    exit 1
fi
tar -xzf "$TARBALL" -C "$WORK"

cp "$WORK/package/dist/uPlot.iife.min.js" "$STATIC/uplot.iife.min.js"
cp "$WORK/package/dist/uPlot.min.css" "$STATIC/uplot.min.css"
cp "$WORK/package/LICENSE" "$STATIC/uplot.LICENSE.txt"

cd "$STATIC"
if [ "${UPDATE:-}" = 1 ]; then
    echo "Copied uplot@$VERSION. Put these lines in VENDORED.md:"
    sha256sum uplot.iife.min.js uplot.min.css uplot.LICENSE.txt
    exit 0
fi
# The checksums recorded in VENDORED.md (the ```sha256 block) must match what npm served.
sed -n '/^```sha256$/,/^```$/p' VENDORED.md | grep -E '^[0-9a-f]{64}  ' | sha256sum --check --strict
grep -q "| version | $VERSION |" VENDORED.md || { echo "vendor-js: VENDORED.md does not name $VERSION" >&2; exit 1; }
echo "uplot@$VERSION vendored and verified in functions/dashboard/static/"
