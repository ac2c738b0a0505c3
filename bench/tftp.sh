#!/usr/bin/env bash
# TFTP benchmark, on demand: pxe-pilot beside tftpd-hpa, dnsmasq and atftpd in one run on
# loopback (inside a private network namespace when run as root), then a table of
# throughput, ratios to each peer and the targets.
#
#   bench/tftp.sh                  # about 5 minutes on a 2-core machine
#   REPS=1 bench/tftp.sh           # quicker, noisier
#
# The peers are started and measured by the shared harness (../shared/bench, or
# PXE_PILOT_BENCH_HARNESS); run its setup.sh once first. pxe-pilot runs from .venv
# (scripts/test creates it).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
harness=${PXE_PILOT_BENCH_HARNESS:-$root/../shared/bench}
[[ -x $root/.venv/bin/twistd ]] || { echo "run scripts/test once to create .venv" >&2; exit 1; }
[[ -f $harness/tftp_bench.sh ]] || { echo "no benchmark harness at $harness" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/answers" "$work/assets"

# 50 clients share one address on loopback: the per-client limit is raised to let them.
export PXE_PILOT_CMD="$root/.venv/bin/twistd -n --pidfile= pxe-pilot --boot \
--interface {host} --tftp-port {port} --tftp-root {root} --port 0 \
--answers $work/answers --assets $work/assets --tftp-max-per-client 64"
export PXE_PILOT_VERSION="pxe-pilot $("$root/.venv/bin/python" -c 'import pxepilot; print(pxepilot.__version__)')"
export TFTP_SIZES=${TFTP_SIZES:-32M}
export TFTP_VARIANTS=${TFTP_VARIANTS:-"curl:512 curl:1468 curl:8192 atftp:1468 atftp:1468:8 atftp:1468:16"}
export TFTP_CONC=${TFTP_CONC:-50} TFTP_CONC_SIZE=${TFTP_CONC_SIZE:-32M} TFTP_CONC_BLKSIZE=1468
export REPS=${REPS:-3} BENCH_CELL_BUDGET_S=${BENCH_CELL_BUDGET_S:-30}
export BENCH_OUT=${BENCH_OUT:-${TMPDIR:-/tmp}/pxe-pilot-bench/tftp-$(date +%Y%m%d-%H%M%S)}

bash "$harness/tftp_bench.sh" tftpd-hpa dnsmasq atftpd pxe-pilot >"$work/harness.out"
"$root/.venv/bin/python" "$root/bench/tftp_report.py" "$BENCH_OUT"
