#!/usr/bin/env bash
# Builder benchmark, on demand: pxe-pilot-builder against curl and against the original
# unpack-and-repack approach, one run, loopback. Needs nginx-light, curl, xorriso, zstd,
# cpio (apt-get install) and .venv (scripts/test creates it).
#   bench/builder.sh                 # 1.5 GB ISO, 3 runs each, original approach once
#   bench/builder.sh --skip-original # without the (slow) original approach
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/.venv/bin/python" "$root/bench/builder_bench.py" "$@"
