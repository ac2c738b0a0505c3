"""
The CPU pxe-pilot's TFTP server spends on each block of a lock-step transfer: N clients
(20 by default) download a file at blksize 1468 from a TFTP server made in this process,
on real sockets on 127.0.0.1, and only the server's side is timed (its transfers'
poller: reading each ACK and sending the next block). With --before, the same from
another source tree (an earlier commit unpacked with git archive), in alternate rounds,
and the ratio.

The clients run in the same process, between the server's turns, so no client is woken
by a datagram and none preempts the server: the figure is the server's own work per
block, without the scheduling a loopback benchmark adds (see bench/tftp.sh for that).

    .venv/bin/python bench/tftp_block_cost.py [--clients 20] [--mib 16] [--rounds 3]
        [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLKSIZE = 1468


class Readers:
    """
    Where the transfers' poller registers, as it would with the reactor.
    """

    def __init__(self) -> None:
        self.readers: list[object] = []

    def addReader(self, reader: object) -> None:
        self.readers.append(reader)

    def removeReader(self, reader: object) -> None:
        self.readers.remove(reader)


def measure(clients: int, mib: int) -> tuple[float, int]:
    """
    Microseconds of server CPU per block, and the blocks sent, for one download by
    each of C{clients} clients of a C{mib} MiB file.
    """
    # Imported here: the tree on sys.path (this one, or --before's) is the one measured.
    from twisted.internet.task import Clock

    from pxepilot.events import EventBus
    from pxepilot.tftp.files import TFTPRoot
    from pxepilot.tftp.server import TFTPServer
    from pxepilot.tftp.sockets import TransferPoller, reactor_port_opener

    root = Path(tempfile.mkdtemp())
    (root / "file").write_bytes(os.urandom(mib << 20))
    readers = Readers()
    poller = TransferPoller(readers)  # type: ignore[arg-type]
    server = TFTPServer(
        files=TFTPRoot(root),
        clock=Clock(),
        open_port=reactor_port_opener(readers, poller),  # type: ignore[arg-type]
        interface="127.0.0.1",
        events=EventBus(),
        max_per_client=clients,
    )
    request = b"\0\1file\0octet\0blksize\0" + str(BLKSIZE).encode() + b"\0"
    sockets = []
    for _ in range(clients):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        server.requestReceived(request, sock.getsockname(), "127.0.0.1", "127.0.0.1")
        sockets.append(sock)
    transfer_ports = {}
    for sock in sockets:
        select.select([sock], [], [], 1)
        _oack, transfer_ports[sock] = sock.recvfrom(2048)
        sock.sendto(b"\0\4\0\0", transfer_ports[sock])
    blocks = 0
    spent = 0.0
    running = set(sockets)
    while running:
        start = time.process_time()
        poller.doRead()
        spent += time.process_time() - start
        ready, _, _ = select.select(list(running), [], [], 1)
        if not ready:
            raise RuntimeError("the server stopped sending")
        for sock in ready:
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                blocks += 1
                sock.sendto(b"\0\4" + data[2:4], transfer_ports[sock])
                if len(data) < BLKSIZE + 4:
                    running.discard(sock)
                    break
    for sock in sockets:
        sock.close()
    for name in root.iterdir():
        name.unlink()
    root.rmdir()
    return spent / blocks * 1e6, blocks


def measure_in(tree: Path, clients: int, mib: int) -> float:
    """
    The figure of L{measure} for the pxe-pilot in C{tree}, in a process of its own.
    """
    result = subprocess.run(
        [sys.executable, __file__, "--worker", "--clients", str(clients), "--mib", str(mib)],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    return float(result.stdout.split()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--mib", type=int, default=16, help="the file's size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another source tree to compare with")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cost, blocks = measure(args.clients, args.mib)
        print(f"{cost:.3f} {blocks}")
        return 0
    trees = [("pxe-pilot", ROOT)] + ([("before", args.before)] if args.before else [])
    figures: dict[str, list[float]] = {name: [] for name, _tree in trees}
    for round_ in range(args.rounds):
        # Alternate which goes first: what ran just before weighs on the next.
        for name, tree in trees if round_ % 2 == 0 else trees[::-1]:
            figures[name].append(measure_in(tree, args.clients, args.mib))
    print(
        f"TFTP server CPU per block, {args.clients} lock-step clients, blksize {BLKSIZE}, "
        f"{args.mib} MiB each, {args.rounds} rounds:"
    )
    for name, values in figures.items():
        shown = " ".join(f"{value:.2f}" for value in values)
        print(f"  {name}: median {statistics.median(values):.2f} us (runs: {shown})")
    if args.before:
        ratio = statistics.median(figures["pxe-pilot"]) / statistics.median(figures["before"])
        print(f"  pxe-pilot / before: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
