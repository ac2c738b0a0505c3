"""
TFTP under a flood, on demand: pxe-pilot's TFTP server on loopback, read requests
nobody acknowledges sent at rising rates from other addresses (127.0.0.2 and up, many
source ports each), while a real client downloads a 1 MiB file again and again. Prints,
for each rate: the flood rate achieved, what the server did with it, the real client's
success ratio and median download time, and the server's memory.

    .venv/bin/python bench/tftp_flood.py [--rates 1000,5000,10000,20000,max] [--seconds 10]

Spoofed addresses need a private network namespace; loopback accepts any 127/8 source,
which is what this uses. Every request is new to the server, as one from a fresh source
port is: it comes from one of 128 ports with another spelling of the file's name. The
client retransmits its request and its ACKs after 1 s, as firmware and iPXE do, because
at high rates the kernel drops requests the server cannot read in time, the real
client's among them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from multiprocessing.connection import Connection
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pxepilot.tftp.packets import (  # noqa: E402
    Ack,
    Data,
    Error,
    OptionAck,
    ReadRequest,
    RequestOption,
    decode,
    encode,
)

TWISTD = ROOT / ".venv" / "bin" / "twistd"
FILE_NAME = "m1"
FILE_SIZE = 1 << 20
BLKSIZE = 1468
# The flood comes from this many addresses (127.0.0.2 and up), each from this many ports.
FLOOD_ADDRESSES = 8
FLOOD_PORTS = 16
# Spellings of the file's name: with the ports above, half a million requests in a row
# are each new to the server.
VARIANTS = 4096
LISTENING = re.compile(r"(HTTP|TFTP) listening on [^ ]+:(\d+)\n")


class ClientFailure(Exception):
    pass


def fetch(server: tuple[str, int], name: str, blksize: int, tries: int = 6) -> bytes:
    """
    Download C{name} in lock-step as firmware does: the request, then each ACK, sent
    again after 1 s of silence, up to C{tries} times.
    """
    options = (RequestOption("blksize", str(blksize).encode()), RequestOption("tsize", b"0"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.0)
        last = encode(ReadRequest(name.encode(), "octet", options))
        destination = server
        peer: tuple[str, int] | None = None
        data = bytearray()
        expected = 1
        size = None
        silent = 0
        while True:
            sock.sendto(last, destination)
            try:
                datagram, source = sock.recvfrom(70000)
            except TimeoutError:
                silent += 1
                if silent >= tries:
                    raise ClientFailure(f"no answer after {tries} tries") from None
                continue
            silent = 0
            if peer is None:
                peer = destination = source[:2]
            elif source[:2] != peer:
                continue
            reply = decode(datagram)
            if isinstance(reply, Error):
                raise ClientFailure(f"error {reply.code}: {reply.message}")
            if isinstance(reply, OptionAck):
                size = int(dict(reply.options).get("tsize", "-1"))
                last = encode(Ack(0))
                continue
            if not isinstance(reply, Data):
                raise ClientFailure(f"unexpected {reply}")
            if reply.block == expected & 0xFFFF:
                data += reply.payload
                expected += 1
            last = encode(Ack((expected - 1) & 0xFFFF))
            if reply.block == (expected - 1) & 0xFFFF and len(reply.payload) < blksize:
                sock.sendto(last, destination)
                break
    if size is not None and size != len(data):
        raise ClientFailure(f"tsize {size}, received {len(data)}")
    return bytes(data)


def spelling(number: int) -> bytes:
    """
    The C{number}th spelling of the file's name: "/" and "./" by its binary digits.
    """
    prefix = "".join("./" if number >> bit & 1 else "/" for bit in range(number.bit_length()))
    return f"{prefix}{FILE_NAME}".encode()


def flood(server: tuple[str, int], rate: float | None, seconds: float, report: Connection) -> None:
    """
    Send read requests to C{server} at C{rate} a second (L{None}: as fast as possible)
    for C{seconds}, and report how many were sent.
    """
    sockets = []
    for address in range(FLOOD_ADDRESSES):
        for _ in range(FLOOD_PORTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((f"127.0.0.{address + 2}", 0))
            sock.setblocking(False)
            sockets.append(sock)
    # Each request must look new to the server, as a request from a fresh source port
    # does: the names differ ("/m1", "./m1", "/./m1", ...) but all name the same file.
    requests = [
        encode(ReadRequest(spelling(n), "octet", (RequestOption("blksize", b"1468"),)))
        for n in range(VARIANTS)
    ]
    sent = tried = 0
    start = time.monotonic()
    deadline = start + seconds
    count = len(sockets)
    while (now := time.monotonic()) < deadline:
        due = 256 if rate is None else int((now - start) * rate) - tried
        if due <= 0:
            time.sleep(0.0005)
            continue
        for _ in range(min(due, 256)):
            tried += 1
            try:
                sockets[tried % count].sendto(requests[(tried // count) % VARIANTS], server)
            except (BlockingIOError, ConnectionRefusedError):
                continue  # the socket's buffer is full: that one is not sent
            sent += 1
    report.send((sent, time.monotonic() - start))
    for sock in sockets:
        sock.close()


def kernel_drops(port: int) -> int:
    """
    Datagrams the kernel dropped for the UDP socket on C{port} (its buffer was full).
    """
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[-1])
    return 0


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def health(http_port: int) -> dict[str, int]:
    url = f"http://127.0.0.1:{http_port}/health"
    with urllib.request.urlopen(url, timeout=10) as response:
        counts: dict[str, int] = json.load(response)["tftp"]["transfers"]
        return counts


def start_server(work: Path, interface: str) -> tuple[subprocess.Popen[bytes], Path, int, int]:
    for name in ("answers", "assets", "root", "state"):
        (work / name).mkdir()
    (work / "root" / FILE_NAME).write_bytes(os.urandom(FILE_SIZE))
    log = work / "pxe-pilot.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PXE_PILOT_")}
    environ["PXE_PILOT_HTTPS_PORT"] = "0"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                str(TWISTD),
                "-n",
                "--pidfile=",
                "pxe-pilot",
                "--boot",
                "--interface",
                interface,
                "--port",
                "0",
                "--tftp-port",
                "0",
                "--tftp-root",
                str(work / "root"),
                "--answers",
                str(work / "answers"),
                "--assets",
                str(work / "assets"),
                "--state",
                str(work / "state"),
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environ,
        )
    deadline = time.monotonic() + 30
    ports: dict[str, int] = {}
    while len(ports) < 2:
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"pxe-pilot did not start; see {log}")
        ports = {kind: int(port) for kind, port in LISTENING.findall(log.read_text())}
        time.sleep(0.1)
    return process, work / "root" / FILE_NAME, ports["HTTP"], ports["TFTP"]


def run_rate(
    rate: float | None,
    seconds: float,
    server: tuple[str, int],
    http_port: int,
    pid: int,
    digest: str,
) -> list[str]:
    before = health(http_port)
    drops_before = kernel_drops(server[1])
    receiving, sending = multiprocessing.Pipe(duplex=False)
    sender = multiprocessing.Process(target=flood, args=(server, rate, seconds, sending))
    sender.start()
    times = []
    attempts = failures = 0
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        attempts += 1
        began = time.monotonic()
        try:
            data = fetch(server, FILE_NAME, BLKSIZE)
        except (ClientFailure, OSError):
            failures += 1
            continue
        if hashlib.sha256(data).hexdigest() != digest:
            failures += 1
            continue
        times.append(time.monotonic() - began)
    sent, elapsed = receiving.recv()
    sender.join()
    after = health(http_port)
    turned = {k: after.get(k, 0) - before.get(k, 0) for k in ("rate-limited", "dropped")}
    # Evictions are of flood transfers, and the real client's own would show as failures.
    evicted = after.get("evicted", 0) - before.get("evicted", 0)
    median = f"{statistics.median(times):.2f}" if times else "-"
    return [
        "max" if rate is None else f"{rate:,.0f}",
        f"{sent / elapsed:,.0f}",
        f"{kernel_drops(server[1]) - drops_before:,}",
        f"{turned['rate-limited']:,}",
        f"{turned['dropped']:,}",
        f"{evicted:,}",
        f"{attempts - failures}/{attempts}",
        median,
        f"{memory_kb(pid, 'VmRSS') / 1024:.0f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1000,5000,10000,20000,max")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--interface",
        default="127.0.0.1",
        help="the server's --interface; '' binds every address, as in production, where "
        "the request port is read in smaller batches",
    )
    args = parser.parse_args()
    rates = [None if r == "max" else float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="pxe-flood-") as directory:
        process, path, http_port, tftp_port = start_server(Path(directory), args.interface)
        try:
            server = ("127.0.0.1", tftp_port)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            fetch(server, FILE_NAME, BLKSIZE)  # warm the page cache and the server
            rows = [
                [
                    "target req/s",
                    "achieved req/s",
                    "kernel drops",
                    "over budget",
                    "dropped (full)",
                    "evicted",
                    "client ok",
                    "median s",
                    "RSS MB",
                ]
            ]
            idle = memory_kb(process.pid, "VmRSS") / 1024
            for rate in rates:
                rows.append(run_rate(rate, args.seconds, server, http_port, process.pid, digest))
                print(" | ".join(rows[-1]), file=sys.stderr)
            peak = memory_kb(process.pid, "VmHWM") / 1024
        finally:
            process.terminate()
            process.wait(20)
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows[1:]:
        print("| " + " | ".join(row) + " |")
    print(f"\nserver RSS idle {idle:.0f} MB, peak {peak:.0f} MB; {args.seconds:.0f} s per rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
