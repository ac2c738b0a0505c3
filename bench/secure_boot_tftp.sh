#!/usr/bin/env bash
# The Secure Boot chain's initrd over TFTP, on demand: a signed GRUB without the http
# module loads kernel and initrd from pxe-pilot's TFTP (assets/<version>/<file>), one
# block at a time (GRUB asks for a block size and no window). This fetches a large
# initrd that way with curl, at each block size given, and prints time and throughput.
#
#   bench/secure_boot_tftp.sh                        # 1.5 GiB initrd, blksize 1468 and 1024
#   SIZE=256M BLKSIZES="512 1468" bench/secure_boot_tftp.sh
#
# The initrd is a sparse file: the figures are pxe-pilot's TFTP on loopback, not a disk.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[[ -x $root/.venv/bin/twistd ]] || { echo "run scripts/test once to create .venv" >&2; exit 1; }
SIZE=${SIZE:-1536M}
BLKSIZES=${BLKSIZES:-"1468 1024"}
PORT=${PORT:-16969}

work=$(mktemp -d)
pid=""
cleanup() {
    [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
version=$work/assets/proxmox-ve/9.1-1
mkdir -p "$work/answers" "$work/tftp" "$version"
head -c 4096 /dev/urandom >"$version/vmlinuz"
truncate -s "$SIZE" "$version/initrd"
"$root/.venv/bin/python" - "$version" <<'EOF'
import json, os, sys
directory = sys.argv[1]
files = {name: {"size": os.path.getsize(os.path.join(directory, name))} for name in ("vmlinuz", "initrd")}
json.dump(
    {"format": 1, "product": "pve", "product_name": "Proxmox VE", "release": "9.1",
     "iso_release": "1", "layout": "combined", "kernel": "vmlinuz",
     "initrds": [{"file": "initrd"}], "kernel_cmdline": "quiet", "files": files},
    open(os.path.join(directory, "asset.json"), "w"),
)
EOF
"$root/.venv/bin/twistd" -n --pidfile= pxe-pilot --boot --interface 127.0.0.1 \
    --tftp-port "$PORT" --tftp-root "$work/tftp" --port 0 --https-port 0 \
    --answers "$work/answers" --assets "$work/assets" --state "$work/state" \
    --log-level warning >"$work/pxe-pilot.log" 2>&1 &
pid=$!
for _ in $(seq 50); do
    curl -s --max-time 1 -o /dev/null "tftp://127.0.0.1:$PORT/assets/proxmox-ve/9.1-1/vmlinuz" && break
    sleep 0.2
done
bytes=$(stat -c %s "$version/initrd")
echo "initrd: $bytes bytes over TFTP from pxe-pilot (assets/proxmox-ve/9.1-1/initrd), loopback"
for blksize in $BLKSIZES; do
    seconds=$(curl -s --tftp-blksize "$blksize" -o /dev/null -w '%{time_total}' \
        "tftp://127.0.0.1:$PORT/assets/proxmox-ve/9.1-1/initrd")
    awk -v b="$bytes" -v s="$seconds" -v k="$blksize" \
        'BEGIN { printf "blksize %5d: %7.1f s, %6.1f MB/s, %5.0f blocks/s\n", k, s, b / s / 1e6, b / k / s }'
done
