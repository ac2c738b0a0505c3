"""
The HTTPS benchmark: pxe-pilot's HTTPS listener beside nginx presenting the same
certificate, over loopback in one run. Measures full TLS handshakes per second from a
few client threads, with each server's CPU time per handshake (which still compares the
two when the client and other processes leave no core to spare), and the latency of POST
/answer over HTTPS, a new TLS connection each time as the installer makes it, idle and
while many clients download a large asset over plain HTTP as iPXE does; the same over
plain HTTP tells what TLS adds. nginx has no /answer: its figure, for context, is the
time to first byte of a small file over a new TLS connection during its own download of
the same asset by as many clients.

    .venv/bin/python bench/https_bench.py [--size-mb 1024] [--clients 20] [--seconds 6]
"""

from __future__ import annotations

import argparse
import grp
import http.client
import os
import pwd
import resource
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.http_bench import (  # noqa: E402
    ANSWER_BODY,
    FILE_NAME,
    VENV_BIN,
    WORK,
    AnswerProbe,
    Server,
    download,
    free_port,
    make_file,
    percentile,
)

THREADS = 4
IDLE_REQUESTS = 200
SMALL_FILE = "small"


def client_context() -> ssl.SSLContext:
    """
    A client that accepts any certificate (the installer checks a fingerprint instead,
    which costs nothing measurable). Python resumes a session only when given one, so
    every handshake through it is a full one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


CONTEXT = client_context()


def handshake(port: int) -> tuple[bytes, str]:
    """
    One full handshake on a new connection, then close: the server's DER certificate
    and the protocol and cipher agreed.
    """
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        CONTEXT.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True) or b""
        cipher = tls.cipher()
        return der, f"{tls.version()} {cipher[0] if cipher else '?'}"


def two_ports() -> tuple[int, int]:
    first = free_port()
    while (second := free_port()) == first:
        pass
    return first, second


def wait_for_tls(server: Server, port: int) -> None:
    # At --log-level warn pxe-pilot does not log "HTTPS listening" (an info line): a
    # completed handshake is the proof.
    deadline = time.monotonic() + 20
    while True:
        try:
            handshake(port)
            return
        except OSError:
            if time.monotonic() > deadline or server.process.poll() is not None:
                raise RuntimeError(f"{server.name}: no TLS on {port}; see {server.log}") from None
            time.sleep(0.2)


def start_pxe_pilot(assets: Path, work: Path) -> tuple[Server, int, int]:
    """
    pxe-pilot with HTTP and HTTPS on loopback: the server and the two ports.
    """
    port, tls_port = two_ports()
    answers = work / "answers"
    shutil.copytree(ROOT / "examples" / "answers", answers)
    pilot = Server(
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
            "--https-port",
            str(tls_port),
            "--state",
            str(work / "state"),
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
    wait_for_tls(pilot, tls_port)
    return pilot, port, tls_port


def nginx_user() -> str:
    """
    The user directive that keeps nginx's workers as the current user: started as root,
    they would otherwise become nobody, who cannot read the private work directory.
    """
    if os.getuid() != 0:
        return ""
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    return f"user {user} {group};\n"


def start_nginx(assets: Path, work: Path, certificate: Path, key: Path) -> tuple[Server, int]:
    """
    nginx serving C{assets} over HTTP and over TLS with pxe-pilot's certificate and key,
    running as the current user with every file it writes under C{work}.
    """
    port, tls_port = two_ports()
    temporary = work / "nginx-tmp"
    temporary.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(
        nginx_user() + f"worker_processes auto; daemon off; pid {work}/nginx.pid;\n"
        f"error_log {work}/nginx-error.log warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{ access_log off; sendfile on; tcp_nopush on;\n"
        f"  client_body_temp_path {temporary}/body; proxy_temp_path {temporary}/proxy;\n"
        f"  fastcgi_temp_path {temporary}/fastcgi; uwsgi_temp_path {temporary}/uwsgi;\n"
        f"  scgi_temp_path {temporary}/scgi;\n"
        f"  server {{ listen 127.0.0.1:{port}; listen 127.0.0.1:{tls_port} ssl;\n"
        f"    ssl_certificate {certificate}; ssl_certificate_key {key};\n"
        f"    ssl_protocols TLSv1.2 TLSv1.3; root {assets}; }} }}\n"
    )
    nginx = Server(
        "nginx",
        ["nginx", "-e", f"{work}/nginx-error.log", "-c", str(conf)],
        f"http://127.0.0.1:{port}/bench/{FILE_NAME}",
        work,
    )
    wait_for_tls(nginx, tls_port)
    return nginx, tls_port


def machine_cpu_seconds() -> float:
    """
    CPU time all the machine's cores spent busy so far.
    """
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def listen_drops() -> int:
    """
    Connections the kernel has dropped so far because a listen queue was full (TcpExt
    ListenDrops, which counts the overflows too); the client retries after a second.
    """
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=True))["ListenDrops"])
    return 0


def cpu_seconds(pid: int) -> float:
    """
    User and system CPU time so far of a process (all its threads) and of its children
    (nginx's workers).
    """
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    ticks = 0
    for each in [pid, *map(int, children)]:
        # Fields after the command's closing parenthesis, from the third (state) on.
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class Cores:
    """
    The cores kept busy from L{start} to L{stop}: by a server; by this benchmark with
    the processes it has waited for (curl, the load generator); and by every other
    process on the machine, which should be near 0 for figures worth keeping. In
    CPU-seconds, and as fractions of a core in L{__str__}.
    """

    def __init__(self, server: Server) -> None:
        self.pid = server.process.pid
        self.elapsed = self.server = self.benchmark = self.others = 0.0
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = time.process_time() + children.ru_utime + children.ru_stime
        return time.monotonic(), machine_cpu_seconds(), cpu_seconds(self.pid), ours

    def stop(self) -> Cores:
        self.elapsed, machine, self.server, self.benchmark = (
            b - a for a, b in zip(self._start, self._sample(), strict=True)
        )
        self.others = max(0.0, machine - self.server - self.benchmark)
        return self

    def saturated(self) -> bool:
        """
        Whether the machine had no core to spare: then a rate is the machine's, and only
        the CPU each server spent per request compares them.
        """
        busy = self.server + self.benchmark + self.others
        return busy >= 0.9 * (os.cpu_count() or 1) * self.elapsed

    def __str__(self) -> str:
        return (
            f"cores busy: server {self.server / self.elapsed:.2f}, "
            f"benchmark {self.benchmark / self.elapsed:.2f}, "
            f"other processes {self.others / self.elapsed:.2f}"
        )


class Handshakes:
    """
    Full handshakes against one server from L{THREADS} threads, summed over rounds.
    """

    def __init__(self, server: Server, port: int) -> None:
        self.server = server
        self.port = port
        self.done = self.failed = 0
        self.rounds: list[Cores] = []

    def round(self, seconds: float) -> None:
        done = [0] * THREADS
        failed = [0] * THREADS
        deadline = time.monotonic() + seconds

        def run(index: int) -> None:
            while time.monotonic() < deadline:
                try:
                    handshake(self.port)
                    done[index] += 1
                except OSError:
                    failed[index] += 1

        threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
        cores = Cores(self.server)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.rounds.append(cores.stop())
        self.done += sum(done)
        self.failed += sum(failed)

    def per_second(self) -> float:
        return self.done / sum(c.elapsed for c in self.rounds)

    def server_ms(self) -> float:
        """
        The server's CPU time per handshake, in ms: what the rate would be bounded by on
        cores of its own.
        """
        return 1000 * sum(c.server for c in self.rounds) / max(1, self.done)

    def client_ms(self) -> float:
        return 1000 * sum(c.benchmark for c in self.rounds) / max(1, self.done)

    def describe(self) -> str:
        elapsed = sum(c.elapsed for c in self.rounds)
        server, ours, others = (
            sum(getattr(c, name) for c in self.rounds) / elapsed
            for name in ("server", "benchmark", "others")
        )
        saturated = sum(1 for c in self.rounds if c.saturated())
        return (
            f"{self.done} in {elapsed:.1f} s, {self.failed} failures; cores busy: server "
            f"{server:.2f}, benchmark {ours:.2f}, other processes {others:.2f}; client CPU "
            f"{self.client_ms():.2f} ms per handshake; no core to spare in {saturated} of "
            f"{len(self.rounds)} rounds"
        )


def storm(server: Server, probe: AnswerProbe, clients: int, size: int) -> tuple[float, Cores, int]:
    """
    C{probe} running while C{clients} download the large file from C{server}: their
    aggregate MB/s, the cores busy meanwhile, and the connections a full listen queue
    dropped (each costs its client a second).
    """
    drops = listen_drops()
    cores = Cores(server)
    with probe:
        rate = download(server.url, clients, size)
    return rate, cores.stop(), listen_drops() - drops


class TLSProbe(AnswerProbe):
    """
    AnswerProbe's loop over TLS: a new connection, so a full handshake, for every
    request, as the installer makes its one POST /answer. Records the time to the whole
    response, or to its first byte (the status line and headers) with C{first_byte}.
    """

    def __init__(
        self, port: int, path: str, body: bytes | None, expect: bytes, first_byte: bool
    ) -> None:
        super().__init__(port)
        self.path = path
        self.body = body
        self.expect = expect
        self.first_byte = first_byte

    def once(self) -> None:
        start = time.perf_counter()
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=30, context=CONTEXT
        )
        try:
            if self.body is None:
                connection.request("GET", self.path)
            else:
                headers = {"Content-Type": "application/json"}
                connection.request("POST", self.path, body=self.body, headers=headers)
            response = connection.getresponse()
            headers_at = time.perf_counter()
            body = response.read()
            if response.status != 200 or self.expect not in body:
                self.failures.append(f"{response.status} {body[:80]!r}")
                return
        except OSError as e:
            self.failures.append(str(e))
            return
        finally:
            connection.close()
        self.latencies.append((headers_at if self.first_byte else time.perf_counter()) - start)


def answer_probe(port: int) -> TLSProbe:
    return TLSProbe(port, "/answer", ANSWER_BODY, b"[global]", first_byte=False)


def small_file_probe(port: int) -> TLSProbe:
    return TLSProbe(port, f"/bench/{SMALL_FILE}", None, b"small", first_byte=True)


def figures(probe: AnswerProbe) -> str:
    ms = [x * 1000 for x in probe.latencies] or [float("inf")]
    return (
        f"{len(probe.latencies)} requests, p50 {percentile(ms, 0.5):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms, "
        f"failures {len(probe.failures)}"
    )


def libraries() -> str:
    """
    The TLS libraries on each side: pxe-pilot's pyOpenSSL uses the OpenSSL of the
    cryptography wheel, nginx and this client the system's, and their versions differ
    in speed.
    """
    from OpenSSL import SSL

    nginx = subprocess.run(["nginx", "-V"], capture_output=True, text=True, check=False)
    running = nginx.stderr.split("running with ", 1)[-1].split(")", 1)[0]
    built = nginx.stderr.split("built with ", 1)[-1].split("\n", 1)[0]
    return (
        f"pxe-pilot {SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()}; "
        f"nginx {running if 'running with' in nginx.stderr else built}; "
        f"client (Python ssl) {ssl.OPENSSL_VERSION}"
    )


def main() -> int:
    options = argparse.ArgumentParser()
    options.add_argument("--size-mb", type=int, default=1024)
    options.add_argument("--clients", type=int, default=20)
    options.add_argument(
        "--seconds", type=float, default=6.0, help="of handshakes per server, in 3 rounds"
    )
    args = options.parse_args()
    for tool in ["nginx", "curl"]:
        if shutil.which(tool) is None:
            print(f"{tool} is needed: apt-get install nginx-light curl")
            return 1
    if not (VENV_BIN / "twistd").exists():
        print("run scripts/test once to create .venv")
        return 1
    path, _ = make_file(args.size_mb)
    size = path.stat().st_size
    (path.parent / SMALL_FILE).write_bytes(b"small\n" * 170)
    assets = path.parent.parent
    work = Path(tempfile.mkdtemp(prefix="https-", dir=WORK))
    servers: list[Server] = []
    try:
        pilot, pilot_port, pilot_tls = start_pxe_pilot(assets, work)
        servers.append(pilot)
        tls = work / "state" / "tls"
        nginx, nginx_tls = start_nginx(assets, work, tls / "server.crt", tls / "server.key")
        servers.append(nginx)
        (pilot_der, agreed), (nginx_der, nginx_agreed) = handshake(pilot_tls), handshake(nginx_tls)
        if pilot_der != nginx_der:
            raise RuntimeError("nginx presents another certificate than pxe-pilot")
        if agreed != nginx_agreed:
            raise RuntimeError(f"pxe-pilot agreed on {agreed}, nginx on {nginx_agreed}")

        handshakes = {
            "pxe-pilot": Handshakes(pilot, pilot_tls),
            "nginx": Handshakes(nginx, nginx_tls),
        }
        # Alternated, so that a change in the machine's other load favours neither.
        for _ in range(3):
            for each in handshakes.values():
                each.round(args.seconds / 3)
        # Idle, then during a download; over HTTPS, then over plain HTTP to tell what TLS
        # adds; nginx's small file for context.
        probes = {
            "POST /answer over HTTPS": (pilot, answer_probe, pilot_tls),
            "POST /answer over HTTP": (pilot, AnswerProbe, pilot_port),
            f"nginx, first byte of /bench/{SMALL_FILE} over TLS": (
                nginx,
                small_file_probe,
                nginx_tls,
            ),
        }
        idle: dict[str, AnswerProbe] = {}
        busy: dict[str, tuple[AnswerProbe, float, Cores, int]] = {}
        for label, (server, make, port) in probes.items():
            idle[label] = make(port)
            for _ in range(IDLE_REQUESTS):
                idle[label].once()
            probe = make(port)
            busy[label] = (probe, *storm(server, probe, args.clients, size))
    finally:
        for server in servers:
            server.stop()
    shutil.rmtree(work, ignore_errors=True)

    https, _, small = probes
    ours, theirs = handshakes["pxe-pilot"], handshakes["nginx"]
    rows = (
        (
            f"full TLS handshakes/s ({THREADS} client threads)",
            f"{ours.per_second():.0f}",
            f"{theirs.per_second():.0f}",
            ours.per_second() / theirs.per_second(),
        ),
        (
            "server CPU per handshake, ms",
            f"{ours.server_ms():.2f}",
            f"{theirs.server_ms():.2f}",
            ours.server_ms() / theirs.server_ms(),
        ),
        (
            f"{args.clients} clients over HTTP, MB/s",
            f"{busy[https][1]:.0f}",
            f"{busy[small][1]:.0f}",
            busy[https][1] / busy[small][1],
        ),
    )
    print(
        f"\n{agreed}, the same certificate, over loopback; {libraries()}:\n"
        "\n| test | pxe-pilot | nginx | pxe-pilot x nginx |\n|---|---|---|---|"
    )
    for label, a, b, ratio in rows:
        print(f"| {label} | {a} | {b} | {ratio:.2f} |")
    print()
    for name, each in handshakes.items():
        print(f"handshakes, {name}: {each.describe()}")
    for label in probes:
        probe, _, cores, drops = busy[label]
        print(f"\n{label}, idle: {figures(idle[label])}")
        print(f"{label}, during {args.clients} downloads of {size >> 20} MiB: {figures(probe)}")
        print(f"  {cores}; connections dropped by a full listen queue: {drops}")
    failures = (
        ours.failed
        + theirs.failed
        + sum(len(probe.failures) for probe in [*idle.values(), *(b[0] for b in busy.values())])
    )
    latencies = busy[https][0].latencies
    targets = {
        f"POST /answer over HTTPS p99 < 50 ms during {args.clients} downloads": bool(latencies)
        and percentile(latencies, 0.99) < 0.05,
        "no request failed": failures == 0,
    }
    print()
    for target, met in targets.items():
        print(f"{'met   ' if met else 'MISSED'} {target}")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
