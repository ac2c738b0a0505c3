"""
The connection-exhaustion benchmark: pxe-pilot under a slowloris attack from many
loopback addresses, with a normal client's GET /health and POST /answer measured
before, during and after.

The attacker keeps up to C{--per-address} connections open from each of
C{--addresses} addresses (127.0.10.1 and up), each with half a request head, adding a
header line every 5 s, and once a second (C{--reconnect-seconds}) opens a new one for
each the server closed. pxe-pilot runs
with a soft descriptor limit of C{--server-nofile}, so that the attack reaches it.
Prints how many connections the server held, how it closed the others (per-address
limit, head deadline, made room for new ones), the normal client's latency and
failures, and how long the server took to accept again afterwards.

    .venv/bin/python bench/http_slowloris.py [--addresses 40] [--per-address 80]
        [--server-nofile 2048] [--attack-seconds 45] [--reconnect-seconds 1]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import http.client
import os
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import ANSWER_BODY, VENV_BIN, WORK, free_port, percentile  # noqa: E402

# Slowloris's own pace: a header line every few seconds, well inside any idle timeout.
TRICKLE_SECONDS = 5.0
HALF_HEAD = b"GET / HTTP/1.1\r\nHost: pxe\r\nUser-Agent: slowloris\r\n"
# The normal client: one request every 50 ms, alternately GET /health and POST /answer.
PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 10.0


class Pilot:
    """
    C{twistd pxe-pilot} with its soft descriptor limit set to C{nofile}.
    """

    def __init__(self, work: Path, nofile: int) -> None:
        self.port = free_port()
        answers = work / "answers"
        shutil.copytree(ROOT / "examples" / "answers", answers)
        (work / "assets").mkdir()
        self.log = work / "pxe-pilot.log"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft = min(nofile, hard)

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

        command = [str(VENV_BIN / "twistd"), "--nodaemon", "--pidfile=", "pxe-pilot"]
        command += ["--interface", "127.0.0.1", "--port", str(self.port), "--https-port", "0"]
        command += ["--answers", str(answers), "--assets", str(work / "assets")]
        command += ["--state", str(work / "state"), "--log-level", "info"]
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                command, stdout=output, stderr=subprocess.STDOUT, preexec_fn=limit
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(self.url("/health"), timeout=2) as response:  # noqa: S310
                    response.read()
                    return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"pxe-pilot did not start; see {self.log}") from None
                time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class Probe:
    """
    The normal client, in a thread: a new connection per request, as iPXE and the
    installer make them.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: dict[str, list[float]] = {"GET /health": [], "POST /answer": []}
        self.failures: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def once(self, kind: str) -> bool:
        started = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PROBE_TIMEOUT)
        try:
            if kind == "GET /health":
                connection.request("GET", "/health")
            else:
                connection.request(
                    "POST", "/answer", ANSWER_BODY, {"Content-Type": "application/json"}
                )
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                self.failures[f"{kind}: {response.status}"] += 1
                return False
        except OSError as e:
            self.failures[f"{kind}: {type(e).__name__}"] += 1
            return False
        finally:
            connection.close()
        self.latencies[kind].append(time.perf_counter() - started)
        return True

    def _run(self) -> None:
        kinds = list(self.latencies)
        n = 0
        while not self._stop.is_set():
            self.once(kinds[n % 2])
            n += 1
            self._stop.wait(PROBE_INTERVAL)


class Attacker:
    """
    Slowloris from many addresses in one thread: the connections the server closed are
    opened again every C{reconnect} seconds (slowloris itself does every 15 s; 0 is a
    connection flood).
    """

    def __init__(
        self, port: int, addresses: list[str], per_address: int, reconnect: float
    ) -> None:
        self.port = port
        self.reconnect = reconnect
        self.addresses = addresses
        self.per_address = per_address
        self.closed: Counter[str] = Counter()
        self.held = 0
        self.peak_held = 0
        self.connecting = 0
        self._selector = selectors.DefaultSelector()
        self._sockets: dict[int, tuple[socket.socket, str, float, bytearray]] = {}
        self._live: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Attacker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock, _, _, _ in list(self._sockets.values()):
            sock.close()
        self._sockets.clear()

    def _open(self, source: str) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        try:
            sock.bind((source, 0))
            code = sock.connect_ex(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            self.closed["could not open"] += 1
            return
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.closed["connect refused"] += 1
            return
        self._sockets[sock.fileno()] = (sock, source, time.monotonic(), bytearray())
        self._live[source] += 1
        self.connecting += 1
        self._selector.register(sock, selectors.EVENT_WRITE)

    def _close(self, fd: int, reason: str) -> None:
        sock, source, _, _ = self._sockets.pop(fd)
        self._selector.unregister(sock)
        sock.close()
        self._live[source] -= 1
        self.closed[reason] += 1

    def _connected(self, fd: int) -> None:
        sock, _, _, _ = self._sockets[fd]
        self.connecting -= 1
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            self._close(fd, "connect failed")
            return
        try:
            sock.send(HALF_HEAD)
        except OSError:
            self._close(fd, "refused at once")
            return
        self.held += 1
        self._selector.modify(sock, selectors.EVENT_READ)

    def _readable(self, fd: int) -> None:
        sock, _, opened, received = self._sockets[fd]
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if data:
            received += data
            return
        self.held -= 1
        if received.startswith(b"HTTP/1.1 408"):
            reason = "closed by the head deadline (408)"
        elif time.monotonic() - opened < 1:
            reason = "refused at once"
        else:
            reason = "closed to make room"
        self._close(fd, reason)

    def _trickle(self) -> None:
        for sock, _, _, _ in list(self._sockets.values()):
            if self._selector.get_key(sock).events == selectors.EVENT_READ:
                with contextlib.suppress(OSError):
                    sock.send(b"X-Slow: 1\r\n")

    def _run(self) -> None:
        trickled = time.monotonic()
        reopened = 0.0
        while not self._stop.is_set():
            if time.monotonic() - reopened >= self.reconnect:
                reopened = time.monotonic()
                for source in self.addresses:
                    for _ in range(self.per_address - self._live[source]):
                        self._open(source)
            for key, events in self._selector.select(timeout=0.05):
                fd = key.fd
                if fd not in self._sockets:
                    continue
                if events & selectors.EVENT_WRITE:
                    self._connected(fd)
                elif events & selectors.EVENT_READ:
                    self._readable(fd)
            self.peak_held = max(self.peak_held, self.held)
            if time.monotonic() - trickled >= TRICKLE_SECONDS:
                trickled = time.monotonic()
                self._trickle()


def listen_overflows() -> int:
    """
    The kernel's count of connections dropped because a listen queue was full (for
    the whole machine: other listeners count too).
    """
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(table.get("ListenOverflows", 0))
    return 0


def report(name: str, probe: Probe) -> None:
    for kind, values in probe.latencies.items():
        ms = [v * 1000 for v in values]
        if not ms:
            print(f"  {name} {kind}: no successful request")
            continue
        print(
            f"  {name} {kind}: {len(ms)} ok, p50 {percentile(ms, 0.5):.1f} ms, "
            f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
        )
    failures = sum(probe.failures.values())
    print(f"  {name} failures: {failures} {dict(probe.failures) if failures else ''}")


def main() -> int:
    options = argparse.ArgumentParser()
    options.add_argument("--addresses", type=int, default=40)
    options.add_argument("--per-address", type=int, default=80)
    options.add_argument("--server-nofile", type=int, default=2048)
    options.add_argument("--attack-seconds", type=float, default=45)
    options.add_argument("--reconnect-seconds", type=float, default=1.0)
    options.add_argument("--quiet-seconds", type=float, default=5)
    args = options.parse_args()
    if not (VENV_BIN / "twistd").exists():
        print("run scripts/test once to create .venv")
        return 1
    wanted = args.addresses * args.per_address + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    addresses = [f"127.0.{10 + n // 250}.{n % 250 + 1}" for n in range(args.addresses)]
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="slowloris-", dir=WORK))
    pilot = Pilot(work, args.server_nofile)
    try:
        idle = Probe(pilot.port).start()
        time.sleep(args.quiet_seconds)
        idle.stop()

        cpu_before = pilot.cpu_seconds()
        overflows_before = listen_overflows()
        attacker = Attacker(
            pilot.port, addresses, args.per_address, args.reconnect_seconds
        ).start()
        busy = Probe(pilot.port).start()
        peak_descriptors = 0
        started = time.monotonic()
        while time.monotonic() - started < args.attack_seconds:
            time.sleep(0.5)
            peak_descriptors = max(peak_descriptors, pilot.descriptors())
        busy.stop()
        attacker.stop()
        cpu = pilot.cpu_seconds() - cpu_before
        overflows = listen_overflows() - overflows_before

        ended = time.monotonic()
        recovered = None
        after = Probe(pilot.port)
        while time.monotonic() - ended < 60:
            if after.once("GET /health"):
                recovered = time.monotonic() - ended
                break
            time.sleep(0.1)
        time.sleep(1)
        descriptors_after = pilot.descriptors()
        after.start()
        time.sleep(args.quiet_seconds)
        after.stop()
        alive = pilot.process.poll() is None
    finally:
        pilot.stop()
    log = pilot.log.read_text()
    shutil.rmtree(work, ignore_errors=True)

    attempts = sum(attacker.closed.values()) + attacker.held
    print(
        f"\nslowloris from {args.addresses} addresses x {args.per_address} connections "
        f"for {args.attack_seconds:.0f} s, reopening every {args.reconnect_seconds:g} s; "
        f"pxe-pilot soft descriptor limit {args.server_nofile}\n"
    )
    print(f"  connections opened by the attacker: {attempts}")
    print(f"  held at once by the attacker (peak): {attacker.peak_held}")
    print(f"  pxe-pilot descriptors in use (peak): {peak_descriptors}")
    for reason, count in attacker.closed.most_common():
        print(f"  {reason}: {count}")
    print(f"  pxe-pilot CPU during the attack: {cpu:.1f} s")
    print(f"  connections dropped by a full listen queue (machine-wide): {overflows}")
    print()
    report("before", idle)
    report("under attack", busy)
    report("after", after)
    print()
    print(
        f"  first GET /health after the attack: "
        f"{'none within 60 s' if recovered is None else f'{recovered * 1000:.0f} ms'}; "
        f"descriptors 1 s later: {descriptors_after}; process alive: {alive}"
    )
    stopped = log.count("not accepting connections")
    resumed = log.count("accepting connections again")
    capped = log.count("the most one address may")
    print(
        f"  log: {capped} per-address lines, {stopped} stopped accepting, "
        f"{resumed} accepting again, {log.count('EMFILE')} EMFILE, "
        f"{log.count('Traceback')} tracebacks"
    )
    served = all(busy.latencies.values()) and not busy.failures
    return 0 if served and recovered is not None and alive else 1


if __name__ == "__main__":
    sys.exit(main())
