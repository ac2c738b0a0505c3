"""
The host store under load: installation reports (C{POST /webhook}) and answer requests
(C{POST /answer}), each waiting until its event is durable, from many clients at once,
against C{twistd pxe-pilot} on SQLite and then on PostgreSQL (a server started in a
temporary directory, as the tests do), in the same run; and how long a report made
through one instance takes to be seen by a second one on the same database.

Prints requests per second, latency percentiles and the PostgreSQL/SQLite ratios.

    .venv/bin/python bench/state_load.py [--clients 16] [--seconds 5] [--propagations 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.hosts.postgres_fixture import running_server  # noqa: E402
from tests.twistd_process import TwistdProcess  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
ANSWER = b'[global]\nkeyboard = "en-us"\ncountry = "us"\nfqdn = "pve.example.com"\n'
ANSWER += b'mailto = "ops@example.com"\ntimezone = "UTC"\nroot-password = "changeme123"\n'
ANSWER += b'[network]\nsource = "from-dhcp"\n[disk-setup]\nfilesystem = "ext4"\n'
ANSWER += b'disk-list = ["sda"]\n'


def mac(index: int, client: int) -> str:
    return (
        f"02:51:{client:02x}:{index >> 16 & 0xFF:02x}:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}"
    )


def webhook_body(address: str) -> bytes:
    report = json.loads((FIXTURES / "post-install-webhook-9.1.json").read_bytes())
    report["network-interfaces"] = [{"mac": address, "is-management": True}]
    report["dmi"]["system"] = {"serial": f"S-{address}", "uuid": None}
    return json.dumps(report).encode()


def answer_body(address: str) -> bytes:
    request = json.loads((FIXTURES / "installer-post-9.2.json").read_bytes())
    for interface in request["network_interfaces"]:
        interface["mac"] = address
    request["dmi"]["system"]["serial"] = f"S-{address}"
    request["dmi"]["system"]["uuid"] = None
    return json.dumps(request).encode()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def load(
    port: int, path: str, body: Callable[[str], bytes], clients: int, seconds: float, first: int
) -> tuple[float, list[float], int]:
    """
    C{clients} threads posting C{path} on keep-alive connections for C{seconds}, each
    as machines of its own (numbered from C{first}: an installed machine would be
    refused an answer); the rate of 200s, every latency, and the number of other
    answers.
    """
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(number: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        index = 0
        mine: list[float] = []
        while time.monotonic() < stop:
            index += 1
            data = body(mac(index, first + number))
            start = time.monotonic()
            connection.request("POST", path, data, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                mine.append(time.monotonic() - start)
            else:
                with lock:
                    errors[0] += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - began), latencies, errors[0]


@contextmanager
def instance(directory: Path, name: str, database: str | None) -> Iterator[int]:
    (directory / "answers").mkdir(exist_ok=True)
    (directory / "answers" / "default.toml").write_bytes(ANSWER)
    (directory / "assets").mkdir(exist_ok=True)
    env = {
        "PXE_PILOT_ANSWERS_DIR": str(directory / "answers"),
        "PXE_PILOT_ASSETS_DIR": str(directory / "assets"),
        "PXE_PILOT_ANSWER_CHECK": "warn",
    }
    if database is not None:
        env["PXE_PILOT_DATABASE_URL"] = database
    process = TwistdProcess(
        ["--interface", "127.0.0.1", "--port", "0", "--state", str(directory / name)], env=env
    )
    try:
        yield process.http_port()
    finally:
        process.stop()


def propagation(first: int, second: int, count: int) -> list[float]:
    """
    Seconds from a report's 200 through C{first} until C{second} says the host is
    installed, for C{count} hosts one after another.
    """
    a = http.client.HTTPConnection("127.0.0.1", first, timeout=30)
    b = http.client.HTTPConnection("127.0.0.1", second, timeout=30)
    seen = []
    for index in range(count):
        address = mac(index, 0xEE)
        a.request("POST", "/webhook", webhook_body(address), {"Content-Type": "application/json"})
        response = a.getresponse()
        response.read()
        assert response.status == 200, response.status
        start = time.monotonic()
        while True:
            b.request("GET", f"/hosts/{address}/status")
            response = b.getresponse()
            body = response.read()
            if response.status == 200 and json.loads(body).get("state") == "installed":
                break
            time.sleep(0.001)
        seen.append(time.monotonic() - start)
    return seen


def report(name: str, rate: float, latencies: list[float], errors: int) -> None:
    print(
        f"  {name:<22} {rate:8.0f} req/s   p50 {percentile(latencies, 0.5) * 1000:6.1f} ms"
        f"   p99 {percentile(latencies, 0.99) * 1000:6.1f} ms   errors {errors}"
    )


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    options.add_argument("--clients", type=int, default=16)
    options.add_argument("--seconds", type=float, default=5.0)
    options.add_argument("--propagations", type=int, default=200)
    arguments = options.parse_args()
    results: dict[tuple[str, str], tuple[float, list[float], int]] = {}
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="state-load-")))
        server = stack.enter_context(running_server())
        for store in ("sqlite", "postgresql"):
            database = server.create_database() if store == "postgresql" else None
            with instance(work, f"{store}-a", database) as port:
                routes = (("/webhook", webhook_body, 0), ("/answer", answer_body, 0x70))
                for route, body, first in routes:
                    results[(store, route)] = load(
                        port, route, body, arguments.clients, arguments.seconds, first
                    )
        database = server.create_database()
        with instance(work, "a", database) as first, instance(work, "b", database) as second:
            seen = propagation(first, second, arguments.propagations)

    print(f"{arguments.clients} clients, {arguments.seconds:g} s per run")
    for route in ("/webhook", "/answer"):
        print(f"POST {route}")
        for store in ("sqlite", "postgresql"):
            report(store, *results[(store, route)])
        sqlite_p99 = percentile(results[("sqlite", route)][1], 0.99)
        postgres_p99 = percentile(results[("postgresql", route)][1], 0.99)
        sqlite_rate, postgres_rate = (
            results[("sqlite", route)][0],
            results[("postgresql", route)][0],
        )
        print(
            f"  postgresql/sqlite: throughput {postgres_rate / sqlite_rate:.2f}x, "
            f"p99 {postgres_p99 / sqlite_p99:.2f}x"
        )
    print(
        f"a report through one instance seen by another: p50 "
        f"{percentile(seen, 0.5) * 1000:.1f} ms, p99 {percentile(seen, 0.99) * 1000:.1f} ms, "
        f"max {max(seen) * 1000:.1f} ms ({len(seen)} reports)"
    )


if __name__ == "__main__":
    main()
