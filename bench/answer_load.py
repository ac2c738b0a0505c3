"""
POST /answer under load: many installers at once, each posting a realistic request
(the fixtures of two installer versions, with MACs of its own) over a new HTTP
connection, or with --keep-alive over one connection each, again and again for a few
seconds; and in alternate rounds the same load against nginx serving a static file of
the answer's size, the fastest a reply of that size can come over a new connection, and
with --before against pxe-pilot from another source tree (an earlier commit unpacked
with git archive), to compare a change in one run. With --host-files every client has a
host file of its own, as a rack does; otherwise all are served default.toml. Prints
requests per second, latency percentiles, errors, the ratios, and who kept the cores
busy, the load generator included.

    .venv/bin/python bench/answer_load.py [--clients 200] [--seconds 10] [--rounds 2]
        [--processes 2] [--pin CPUS] [--log-level info] [--keep-alive] [--host-files]
        [--before DIR] [--no-nginx]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import VENV_BIN, WORK, Server, free_port, percentile  # noqa: E402
from bench.https_bench import Cores, listen_drops, nginx_user  # noqa: E402

# The example answers use the keys of installer 8.4 and later, which 8.2 would reject.
FIXTURES = [
    ROOT / "tests" / "fixtures" / name
    for name in ("installer-post-8.3-to-9.1.json", "installer-post-9.2.json")
]
READY_FILE = "ready"
DOWNLOAD_FILE = "initrd"
# Long enough that a request stuck behind a full listen queue (SYN retried after 1, 3,
# 7 s) is counted as slow rather than as an error.
REQUEST_TIMEOUT = 30.0
# A run's first requests all connect in the same millisecond; its rate is counted from
# then, and the workers need this long to start.
START_DELAY = 1.5


def installer_body(index: int) -> bytes:
    """
    Installer C{index}'s request: a fixture in turn, its MACs made unique (locally
    administered), so that every client is a machine of its own, as in a rack.
    """
    request = json.loads(FIXTURES[index % len(FIXTURES)].read_bytes())
    for port, interface in enumerate(request["network_interfaces"]):
        interface["mac"] = f"02:50:{index >> 8:02x}:{index & 0xFF:02x}:00:{port:02x}"
    return json.dumps(request, separators=(",", ":")).encode()


def http_request(path: str, port: int, body: bytes, keep_alive: bool = False) -> bytes:
    # An installer makes one request and goes away: with Connection: close both servers
    # close at once, rather than keep an idle connection open for a next request.
    connection = "" if keep_alive else "Connection: close\r\n"
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{connection}\r\n"
    ).encode() + body


def host_file_name(index: int) -> str:
    """
    The host file of installer C{index}, named by its first MAC (see L{installer_body}).
    """
    return f"02-50-{index >> 8:02x}-{index & 0xFF:02x}-00-00.toml"


# -- the load generator, run as separate processes (--worker)


def source_address(client: int) -> str:
    """
    The loopback address client number C{client} connects from: each its own, as each
    installer in a rack has its own, so pxe-pilot's per-address connection limit sees
    200 machines, not one.
    """
    return f"127.0.{1 + client // 250}.{1 + client % 250}"


async def exchange(
    port: int, request: bytes, expect: bytes, source: str, kept: list[socket.socket]
) -> str | None:
    """
    One request, read to the end of the body: over the connection in C{kept} if there
    is one (then kept for the next), else over a new connection from C{source}. None if
    it was a 200 holding C{expect}, else what went wrong.
    """
    loop = asyncio.get_running_loop()
    keep_alive = b"Connection: close" not in request
    if kept:
        sock = kept.pop()
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((source, 0))
            await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
    done = False
    try:
        await loop.sock_sendall(sock, request)
        data = b""
        length = -1
        chunked = False
        body = b""
        while True:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            data += chunk
            head, separator, body = data.partition(b"\r\n\r\n")
            if separator and length < 0 and not chunked:
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                    if name.strip().lower() == b"transfer-encoding":
                        chunked = value.strip().lower() == b"chunked"
            # Over a kept connection, Twisted sends a body it was not told the length of
            # in chunks, the last of them empty.
            if (length >= 0 and len(body) >= length) or (chunked and body.endswith(b"0\r\n\r\n")):
                done = True
                break
    finally:
        if keep_alive and done:
            kept.append(sock)
        else:
            sock.close()
    status = data.split(b" ", 2)[1] if data.count(b" ") >= 2 else b"none"
    if status != b"200":
        return f"status {status.decode(errors='replace')}"
    if expect not in body or (length >= 0 and len(body) != length):
        return "unexpected body"
    return None


async def client(
    port: int,
    request: bytes,
    expect: bytes,
    source: str,
    deadline: float,
    results: dict[str, Any],
) -> None:
    kept: list[socket.socket] = []
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            problem = await asyncio.wait_for(
                exchange(port, request, expect, source, kept), REQUEST_TIMEOUT
            )
        except TimeoutError:
            problem = "timeout"
        except OSError as e:
            problem = type(e).__name__
        end = time.monotonic()
        if problem is None:
            results["latencies"].append(end - start)
            results["ends"].append(end)
        else:
            results["errors"][problem] += 1
    for sock in kept:
        sock.close()


async def load(spec: dict[str, Any]) -> dict[str, Any]:
    results: dict[str, Any] = {"latencies": [], "ends": [], "errors": Counter()}
    await asyncio.sleep(max(0.0, spec["start"] - time.monotonic()))
    cpu = time.process_time()
    deadline = spec["start"] + spec["seconds"]
    expect = base64.b64decode(spec["expect"])
    await asyncio.gather(
        *(
            client(
                spec["port"],
                base64.b64decode(request),
                expect,
                source_address(spec["first_client"] + index),
                deadline,
                results,
            )
            for index, request in enumerate(spec["requests"])
        )
    )
    results["cpu"] = time.process_time() - cpu
    results["wall"] = time.monotonic() - spec["start"]
    return results


def worker() -> int:
    spec = json.load(sys.stdin)
    json.dump(asyncio.run(load(spec)), sys.stdout)
    return 0


# -- the servers and the run


def answers_directory(work: Path, clients: int, host_files: bool) -> Path:
    """
    The example answers; with C{host_files}, plus a host file for every client (the
    example default, so that every answer is the same size whoever serves it).
    """
    answers = work / "answers"
    shutil.copytree(ROOT / "examples" / "answers", answers)
    if host_files:
        default = (answers / "default.toml").read_bytes()
        for index in range(clients):
            (answers / "hosts" / host_file_name(index)).write_bytes(default)
    return answers


def start_pxe_pilot(
    work: Path, answers: Path, log_level: str, name: str = "pxe-pilot", source: Path = ROOT
) -> Server:
    """
    pxe-pilot from C{source} (this tree, or another one such as an earlier commit's,
    run with this virtualenv), with a state directory of its own.
    """
    port = free_port()
    if source != ROOT:
        # twistd finds the plugin, and Python the package, in the first tree on the path.
        os.environ["PYTHONPATH"] = str(source)
    try:
        return _start_pxe_pilot(work, answers, log_level, name, port)
    finally:
        os.environ.pop("PYTHONPATH", None)


def _start_pxe_pilot(work: Path, answers: Path, log_level: str, name: str, port: int) -> Server:
    return Server(
        name,
        [
            str(VENV_BIN / "twistd"),
            "--nodaemon",
            "--pidfile=",
            "pxe-pilot",
            "--interface",
            "127.0.0.1",
            "--port",
            str(port),
            "--https-port",
            "0",
            "--state",
            str(work / f"state-{name}"),
            "--answers",
            str(answers),
            "--assets",
            str(work / "assets"),
            "--log-level",
            log_level,
        ],
        f"http://127.0.0.1:{port}/assets/{READY_FILE}",
        work,
    )


def start_nginx(work: Path, answer: bytes) -> Server:
    """
    nginx answering POST /answer with a file holding C{answer}: its static module refuses
    POST (405), so that refusal is turned into the file, which also discards the body.
    """
    port = free_port()
    root = work / "nginx-root"
    root.mkdir()
    (root / "answer").write_bytes(answer)
    temporary = work / "nginx-tmp"
    temporary.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(
        nginx_user() + f"worker_processes auto; daemon off; pid {work}/nginx.pid;\n"
        f"error_log {work}/nginx-error.log warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{ access_log off; sendfile on; tcp_nopush on; default_type text/plain;\n"
        f"  client_body_temp_path {temporary}/body; proxy_temp_path {temporary}/proxy;\n"
        f"  fastcgi_temp_path {temporary}/fastcgi; uwsgi_temp_path {temporary}/uwsgi;\n"
        f"  scgi_temp_path {temporary}/scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; root {root};\n"
        f"    location = /answer {{ error_page 405 =200 $uri; }} }} }}\n"
    )
    return Server(
        "nginx",
        ["nginx", "-e", f"{work}/nginx-error.log", "-c", str(conf)],
        f"http://127.0.0.1:{port}/answer",
        work,
    )


def port_of(server: Server) -> int:
    return int(server.url.split(":")[2].split("/")[0])


def post(port: int, body: bytes) -> bytes:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/answer",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        answer: bytes = response.read()
        return answer


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


class Load:
    """
    The load against one server, in rounds: what the workers found, and the cores busy
    meanwhile.
    """

    def __init__(
        self,
        server: Server,
        bodies: list[bytes],
        expect: bytes,
        processes: int,
        pin: str | None,
        keep_alive: bool,
        downloads: int = 0,
        download_url: str | None = None,
    ) -> None:
        self.server = server
        self.downloads = downloads if download_url is not None else 0
        self.download_url = download_url
        self.downloaded = 0
        self.port = port_of(server)
        self.requests = [
            base64.b64encode(http_request("/answer", self.port, body, keep_alive)).decode()
            for body in bodies
        ]
        self.expect = base64.b64encode(expect).decode()
        self.processes = processes
        self.taskset = ["taskset", "-c", pin] if pin else []
        self.latencies: list[float] = []
        self.in_window = 0
        self.seconds = 0.0
        self.drops = 0
        self.errors: Counter[str] = Counter()
        self.worker_busy: list[float] = []
        self.cores: list[Cores] = []

    def round(self, seconds: float) -> None:
        start = time.monotonic() + START_DELAY
        workers = [
            subprocess.Popen(
                [*self.taskset, sys.executable, __file__, "--worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(self.processes)
        ]
        for index, process in enumerate(workers):
            spec = {
                "port": self.port,
                "requests": self.requests[index :: self.processes],
                "first_client": index * len(self.requests),
                "expect": self.expect,
                "start": start,
                "seconds": seconds,
            }
            assert process.stdin is not None
            process.stdin.write(json.dumps(spec))
            process.stdin.close()
        downloading = [
            subprocess.Popen(
                # Again and again, as machines after machines fetch their boot files.
                ["sh", "-c", 'while curl -sf -o /dev/null "$0"; do echo; done', url],
                stdout=subprocess.PIPE,
                start_new_session=True,
            )
            for url in [self.download_url or ""] * self.downloads
        ]
        time.sleep(max(0.0, start - time.monotonic()))
        drops = listen_drops()
        cores = Cores(self.server)
        outputs = []
        for process in workers:
            assert process.stdout is not None
            outputs.append(process.stdout.read())
            process.wait()
        self.cores.append(cores.stop())
        for download in downloading:
            os.killpg(download.pid, signal.SIGTERM)
            assert download.stdout is not None
            self.downloaded += download.stdout.read().count(b"\n")
            download.wait()
        self.drops += listen_drops() - drops
        self.seconds += seconds
        for result in map(json.loads, outputs):
            self.latencies.extend(x * 1000 for x in result["latencies"])
            self.in_window += sum(1 for end in result["ends"] if end <= start + seconds)
            self.errors.update(result["errors"])
            self.worker_busy.append(result["cpu"] / result["wall"])

    def rate(self) -> float:
        return self.in_window / self.seconds

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) if self.latencies else float("inf")

    def describe(self) -> str:
        errors = ", ".join(f"{n} {kind}" for kind, n in self.errors.most_common()) or "none"
        elapsed = sum(c.elapsed for c in self.cores)
        server, ours, others = (
            sum(getattr(c, name) for c in self.cores) / elapsed
            for name in ("server", "benchmark", "others")
        )
        if self.downloads:
            during = f"during {self.downloads} downloads at once ({self.downloaded} done), "
        else:
            during = ""
        lines = [
            f"{during}{len(self.latencies)} answered, {self.rate():.0f} requests/s, "
            f"p50 {self.percentile(0.5):.1f} ms, p95 {self.percentile(0.95):.1f} ms, "
            f"p99 {self.percentile(0.99):.1f} ms, max {max(self.latencies, default=0):.1f} ms; "
            f"errors: {errors}",
            f"cores busy: server {server:.2f}, benchmark {ours:.2f}, other processes "
            f"{others:.2f}; server CPU per request "
            f"{1000 * server * elapsed / max(1, len(self.latencies)):.2f} ms; connections "
            f"dropped by a full listen queue: {self.drops}",
            f"load generator, {self.processes} event loops a round: "
            + ", ".join(f"{x:.2f}" for x in self.worker_busy)
            + " of a core each",
        ]
        # One event loop cannot go past one core: near it, requests wait in the
        # generator, and the figures describe it rather than the server.
        if max(self.worker_busy) > 0.85:
            lines.append("the load generator was the bottleneck: the rate is understated")
        saturated = sum(1 for c in self.cores if c.saturated())
        if saturated:
            lines.append(
                f"no core to spare in {saturated} of {len(self.cores)} rounds: the rate is "
                "bounded by the machine, not by the server alone"
            )
        return "\n  ".join(lines)


def main() -> int:
    options = argparse.ArgumentParser()
    options.add_argument("--clients", type=int, default=200)
    options.add_argument("--seconds", type=float, default=10.0, help="per server")
    options.add_argument("--rounds", type=int, default=2)
    options.add_argument(
        "--processes", type=int, default=2, help="load generator processes, one event loop each"
    )
    options.add_argument("--pin", help="CPUs for the load generator (taskset -c), e.g. 1")
    options.add_argument("--log-level", default="info", help="pxe-pilot's (its default: info)")
    options.add_argument(
        "--keep-alive", action="store_true", help="one connection per client, kept"
    )
    options.add_argument("--host-files", action="store_true", help="a host file for every client")
    options.add_argument(
        "--before",
        type=Path,
        help="another pxe-pilot source tree to compare with, e.g. "
        "mkdir /tmp/before && git archive HEAD | tar -x -C /tmp/before",
    )
    options.add_argument("--no-nginx", action="store_true", help="leave nginx out")
    options.add_argument(
        "--downloads",
        type=int,
        default=0,
        help="curl clients downloading an asset from pxe-pilot meanwhile, again and again",
    )
    options.add_argument("--download-mb", type=int, default=1024, help="the asset's size")
    options.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = options.parse_args()
    if args.worker:
        return worker()
    nginx_wanted = not args.no_nginx
    if nginx_wanted and shutil.which("nginx") is None:
        print("nginx is needed (apt-get install nginx-light), or --no-nginx")
        return 1
    if not (VENV_BIN / "twistd").exists():
        print("run scripts/test once to create .venv")
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="answers-", dir=WORK))
    (work / "assets").mkdir()
    (work / "assets" / READY_FILE).write_text("ready\n")
    if args.downloads:
        with open(work / "assets" / DOWNLOAD_FILE, "wb") as asset:
            for _ in range(args.download_mb):
                asset.write(os.urandom(1 << 20))
    answers = answers_directory(work, args.clients, args.host_files)
    bodies = [installer_body(index) for index in range(args.clients)]
    servers: list[Server] = []
    loads: dict[str, Load] = {}
    try:
        pilot = start_pxe_pilot(work, answers, args.log_level)
        servers.append(pilot)
        answers_served = {post(port_of(pilot), body) for body in bodies[: len(FIXTURES)]}
        answer = max(answers_served, key=len)
        if b"[global]" not in answer:
            raise RuntimeError(f"pxe-pilot's answer is not an answer file: {answer[:80]!r}")
        if args.before is not None:
            before = start_pxe_pilot(work, answers, args.log_level, "before", args.before)
            servers.append(before)
            if post(port_of(before), bodies[0]) not in answers_served:
                raise RuntimeError("the pxe-pilot before answers otherwise")
        if nginx_wanted:
            nginx = start_nginx(work, answer)
            servers.append(nginx)
            if post(port_of(nginx), bodies[0]) != answer:
                raise RuntimeError("nginx does not answer POST /answer with the file")
        for server in servers:
            pilot_asset = f"http://127.0.0.1:{port_of(server)}/assets/{DOWNLOAD_FILE}"
            loads[server.name] = Load(
                server,
                bodies,
                b"[global]",
                args.processes,
                args.pin,
                args.keep_alive,
                args.downloads,
                None if server.name == "nginx" else pilot_asset,
            )
        # Alternated, so that a change in the machine's other load favours none.
        for _ in range(args.rounds):
            for load in loads.values():
                load.round(args.seconds / args.rounds)
    finally:
        for server in servers:
            server.stop()
    shutil.rmtree(work, ignore_errors=True)

    ours = loads["pxe-pilot"]
    others = [name for name in loads if name != "pxe-pilot"]
    connection = (
        "one kept connection per client" if args.keep_alive else ("a new connection per request")
    )
    files = "a host file each" if args.host_files else "default.toml for all"
    print(
        f"\nPOST /answer, {args.clients} clients, {connection}, {files}, "
        f"{args.seconds:g} s each in {args.rounds} rounds; answer {len(answer)} bytes, "
        f"pxe-pilot at --log-level {args.log_level}"
        + (
            f", during {args.downloads} downloads of {args.download_mb} MiB"
            if args.downloads
            else ""
        )
        + ":\n"
    )
    print(
        "| figure | pxe-pilot | "
        + " | ".join(others)
        + " | "
        + " | ".join(f"pxe-pilot x {name}" for name in others)
        + " |"
    )
    print("|---" * (2 + 2 * len(others)) + "|")
    theirs = [loads[name] for name in others]
    print(
        f"| requests/s | {ours.rate():.0f} | "
        + " | ".join(f"{load.rate():.0f}" for load in theirs)
        + " | "
        + " | ".join(ratio(ours.rate(), load.rate()) for load in theirs)
        + " |"
    )
    for label, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        a = ours.percentile(fraction)
        print(
            f"| {label} ms | {a:.1f} | "
            + " | ".join(f"{load.percentile(fraction):.1f}" for load in theirs)
            + " | "
            + " | ".join(ratio(a, load.percentile(fraction)) for load in theirs)
            + " |"
        )
    print(
        f"| errors | {sum(ours.errors.values())} | "
        + " | ".join(str(sum(load.errors.values())) for load in theirs)
        + " |"
        + " |" * len(theirs)
    )
    for name, load in loads.items():
        print(f"\n{name}: {load.describe()}")
    return 0 if not ours.errors else 1


if __name__ == "__main__":
    sys.exit(main())
