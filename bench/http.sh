#!/usr/bin/env bash
# Assets benchmark, on demand: a 1 GiB file over loopback HTTP from pxe-pilot, nginx and
# Twisted's static.File, to 1 and to 20 curl clients, with POST /answer latency measured
# during the 20-client storm. Needs nginx-light and curl (apt-get install) and .venv
# (scripts/test creates it).
#   bench/http.sh                       # about 4 minutes on a 2-core machine
#   bench/http.sh --size-mb 256 --reps 1
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/.venv/bin/python" "$root/bench/http_bench.py" "$@"
