#!/usr/bin/env bash
# The original service's sample-data command, kept working:
#
#     bash test/test_random_data.sh [device_count metrics_per_device iterations] [options]
#
# It runs scripts/generate_data.py with the same arguments (see --help for the options: --url,
# --bulk-size, --token, --range, ...). The service is http://127.0.0.1:8080 (`make run`) unless
# --url or BASE_URL says otherwise, e.g. BASE_URL=http://localhost for `docker compose up`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python"
[[ -x "$python" ]] || python="$(command -v python3)"  # the generator needs only the standard library
if [[ -n "${BASE_URL:-}" ]]; then
    exec "$python" "$root/scripts/generate_data.py" --url "$BASE_URL" "$@"
fi
exec "$python" "$root/scripts/generate_data.py" "$@"
