"""
The assets benchmark: one large file served over loopback by pxe-pilot, nginx and
Twisted's stock static.File in one run, to one curl client and to many in parallel,
with the latency of POST /answer measured against pxe-pilot while the many download.
Prints throughput, ratios to nginx, pxe-pilot's memory and the latency percentiles.

    .venv/bin/python bench/http_bench.py [--size-mb 1024] [--clients 20] [--reps 3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
WORK = Path(os.environ.get("BENCH_WORK", f"{tempfile.gettempdir()}/pxe-bench-{os.getuid()}"))
FILE_NAME = "initrd"
ANSWER_BODY = (ROOT / "tests" / "fixtures" / "installer-post-8.3-to-9.1.json").read_bytes()
# The installer posts once per boot; a probe every 20 ms is far more than a rack sends.
PROBE_INTERVAL = 0.02


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_file(size_mb: int) -> tuple[Path, str]:
    """
    A random file of the size asked, under <work>/http/assets/bench/, with its SHA-256
    (both kept between runs).
    """
    directory = WORK / "http" / "assets" / "bench"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FILE_NAME
    digest_file = directory.parent.parent / f"sha256-{size_mb}"
    if path.exists() and path.stat().st_size == size_mb << 20 and digest_file.exists():
        return path, digest_file.read_text()
    print(f"making a {size_mb} MiB random file in {directory}", file=sys.stderr)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for _ in range(size_mb):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    for old in directory.parent.parent.glob("sha256-*"):
        old.unlink()
    digest_file.write_text(digest.hexdigest())
    return path, digest.hexdigest()


class Server:
    """
    A server under test, started in the foreground, its output in a log file.
    """

    def __init__(self, name: str, command: list[str], url: str, work: Path) -> None:
        self.name = name
        self.url = url
        self.log = work / f"{name}.log"
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{name} exited; see {self.log}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:  # noqa: S310
                    response.read(1)
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not answer {url}; see {self.log}")

    def memory_kb(self, field: str) -> int:
        """
        VmRSS (now) or VmHWM (peak) of the server's main process, in KB.
        """
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_nginx(assets: Path, work: Path) -> Server:
    port = free_port()
    conf = work / "nginx.conf"
    (work / "nginx-tmp").mkdir(exist_ok=True)
    conf.write_text(
        f"worker_processes auto; daemon off; pid {work}/nginx.pid;\n"
        f"error_log {work}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; sendfile on; tcp_nopush on;\n"
        f"  client_body_temp_path {work}/nginx-tmp;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {assets}; }} }}\n"
    )
    return Server(
        "nginx",
        ["nginx", "-e", f"{work}/nginx-error.log", "-c", str(conf)],
        f"http://127.0.0.1:{port}/bench/{FILE_NAME}",
        work,
    )


def start_twisted_static(assets: Path, work: Path) -> Server:
    port = free_port()
    return Server(
        "static.File",
        [
            str(VENV_BIN / "twistd"),
            "--nodaemon",
            "--pidfile=",
            "--logfile=/dev/null",
            "web",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--path",
            str(assets),
        ],
        f"http://127.0.0.1:{port}/bench/{FILE_NAME}",
        work,
    )


def start_pxe_pilot(assets: Path, work: Path) -> Server:
    port = free_port()
    answers = work / "answers"
    shutil.rmtree(answers, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "answers", answers)
    return Server(
        "pxe-pilot",
        [
            str(VENV_BIN / "twistd"),
            "--nodaemon",
            "--pidfile=",
            "pxe-pilot",
            "--interface",
            "127.0.0.1",
            "--port",
            str(port),
            "--answers",
            str(answers),
            "--assets",
            str(assets),
            "--log-level",
            "warn",
        ],
        f"http://127.0.0.1:{port}/assets/bench/{FILE_NAME}",
        work,
    )


def curl(url: str) -> tuple[int, int]:
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
        capture_output=True,
        text=True,
        check=False,
    )
    code, size = (result.stdout or "0 0").split()
    return int(code), int(size)


def download(url: str, clients: int, size: int) -> float:
    """
    Aggregate MB/s of C{clients} simultaneous full downloads of C{url}.
    """
    start = time.monotonic()
    commands = [
        subprocess.Popen(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    outputs = [c.communicate()[0] for c in commands]
    seconds = time.monotonic() - start
    complete = sum(1 for o in outputs if o == f"200 {size}")
    if complete != clients:
        raise RuntimeError(f"{url}: {complete} of {clients} downloads complete: {outputs}")
    return clients * size / seconds / 1e6


def checksum(url: str) -> str:
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=300) as response:  # noqa: S310
        while chunk := response.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class AnswerProbe:
    """
    POST /answer from a thread, one new connection each time as the installer does,
    recording how long each full response takes.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> AnswerProbe:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def once(self) -> None:
        start = time.perf_counter()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(
                "POST",
                "/answer",
                body=ANSWER_BODY,
                headers={"Content-Type": "application/json"},
            )
            response = connection.getresponse()
            body = response.read()
            if response.status != 200 or b"[global]" not in body:
                self.failures.append(f"{response.status} {body[:80]!r}")
                return
        except OSError as e:
            self.failures.append(str(e))
            return
        finally:
            connection.close()
        self.latencies.append(time.perf_counter() - start)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(PROBE_INTERVAL)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    options = argparse.ArgumentParser()
    options.add_argument("--size-mb", type=int, default=1024)
    options.add_argument("--clients", type=int, default=20)
    options.add_argument("--reps", type=int, default=3)
    args = options.parse_args()
    for tool in ["nginx", "curl"]:
        if shutil.which(tool) is None:
            print(f"{tool} is needed: apt-get install nginx-light curl")
            return 1
    if not (VENV_BIN / "twistd").exists():
        print("run scripts/test once to create .venv")
        return 1
    path, digest = make_file(args.size_mb)
    size = path.stat().st_size
    assets = path.parent.parent
    work = Path(tempfile.mkdtemp(prefix="http-", dir=WORK))
    starters: list[Callable[[Path, Path], Server]] = [
        start_pxe_pilot,
        start_nginx,
        start_twisted_static,
    ]
    servers = [start(assets, work) for start in starters]
    pilot = servers[0]
    pilot_port = int(pilot.url.split(":")[2].split("/")[0])
    single: dict[str, list[float]] = {s.name: [] for s in servers}
    parallel: dict[str, list[float]] = {s.name: [] for s in servers}
    idle = AnswerProbe(pilot_port)
    storm = AnswerProbe(pilot_port)
    try:
        for server in servers:
            if checksum(server.url) != digest:
                raise RuntimeError(f"{server.name} served different bytes")
        for _ in range(200):
            idle.once()
        rss_idle = pilot.memory_kb("VmRSS")
        for rep in range(args.reps):
            # Rotated, so that a drift in the machine's speed favours no one; one client
            # takes under a second, so it runs three times as often.
            order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
            for _ in range(3):
                for server in order:
                    single[server.name].append(download(server.url, 1, size))
            for server in order:
                parallel[server.name].append(download(server.url, args.clients, size))
        with storm:
            storm_rate = download(pilot.url, args.clients, size)
        rss_peak = pilot.memory_kb("VmHWM")
        rss_end = pilot.memory_kb("VmRSS")
    finally:
        for server in servers:
            server.stop()
    shutil.rmtree(work, ignore_errors=True)

    names = [s.name for s in servers]
    print(
        f"\n{size >> 20} MiB file over loopback HTTP, MB/s, median of {3 * args.reps} "
        f"(1 client) and {args.reps} ({args.clients} clients):\n"
    )
    print(f"| test | {' | '.join(names)} | pxe-pilot x nginx |")
    print(f"|---|{'---|' * len(names)}---|")
    ratios = {}
    for label, rows in (("1 client", single), (f"{args.clients} clients", parallel)):
        medians = {name: statistics.median(rows[name]) for name in names}
        ratios[label] = medians["pxe-pilot"] / medians["nginx"]
        cells = " | ".join(f"{medians[name]:.0f}" for name in names)
        print(f"| {label} | {cells} | {ratios[label]:.2f} |")
    for label, rows in (("1 client", single), (f"{args.clients} clients", parallel)):
        for name in names:
            print(f"{label}, {name}: {' '.join(f'{rate:.0f}' for rate in rows[name])}")
    print(
        f"\npxe-pilot memory: {rss_idle / 1024:.0f} MB idle, peak {rss_peak / 1024:.0f} MB, "
        f"{rss_end / 1024:.0f} MB after the downloads"
    )
    quiet = [x * 1000 for x in idle.latencies]
    busy = [x * 1000 for x in storm.latencies]
    print(
        f"POST /answer, idle: {len(quiet)} requests, p50 {percentile(quiet, 0.5):.1f} ms, "
        f"p99 {percentile(quiet, 0.99):.1f} ms"
    )
    failures = idle.failures + storm.failures
    if busy:
        print(
            f"POST /answer during {args.clients} downloads ({storm_rate:.0f} MB/s): "
            f"{len(busy)} requests, "
            f"p50 {percentile(busy, 0.5):.1f} ms, p90 {percentile(busy, 0.9):.1f} ms, "
            f"p99 {percentile(busy, 0.99):.1f} ms, "
            f"max {max(busy):.1f} ms, failures {len(failures)}"
        )
    p99 = percentile(busy, 0.99) if busy else float("inf")
    growth = (rss_peak - rss_idle) / 1024
    targets = {
        "1 client >= 0.8 x nginx": ratios["1 client"] >= 0.8,
        f"{args.clients} clients >= 0.8 x nginx": ratios[f"{args.clients} clients"] >= 0.8,
        "memory flat (peak within 20 MB of idle)": growth < 20,
        "POST /answer p99 < 50 ms during the storm": p99 < 50 and not failures,
    }
    print()
    for target, met in targets.items():
        print(f"{'met   ' if met else 'MISSED'} {target}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
