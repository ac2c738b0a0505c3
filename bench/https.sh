#!/usr/bin/env bash
# HTTPS benchmark, on demand: full TLS handshakes per second from pxe-pilot and nginx with
# the same certificate, and POST /answer over HTTPS (a new TLS connection each time)
# during a 20-client download of a 1 GiB asset over plain HTTP, all over loopback. Needs
# nginx-light and curl (apt-get install) and .venv (scripts/test creates it).
#   bench/https.sh                       # about a minute on a 2-core machine
#   bench/https.sh --size-mb 512 --seconds 5
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec "$root/.venv/bin/python" "$root/bench/https_bench.py" "$@"
