"""
The abuse benchmark: how long reading the worst bodies a client may send holds the
reactor. POST /answer and POST /webhook parse their body on the reactor thread, so the
CPU time of the parse is time no other request is served. Each body is as large as the
route accepts; each is read in a child process, given up after --timeout seconds.

    .venv/bin/python bench/abuse_parse.py [--reps 5] [--timeout 300] [--source DIR]

--source reads pxe-pilot from another tree (a `git archive` of an earlier commit, say),
to compare the same bodies before and after a change. Prints, per body: its size, the
outcome, the CPU time of the parse and that time per MiB of body.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def interfaces(limit: int, key: str, entry: Callable[[int], dict[str, Any]]) -> bytes:
    """
    A body whose list under C{key} holds as many C{entry(n)} as C{limit} bytes allow.
    """
    # One entry's size, to make the list in one go rather than grow it by trial.
    size = len(json.dumps(entry(0), separators=(",", ":"))) + 1
    count = (limit - 64) // size
    document = {key: [entry(n) for n in range(count)]}
    return json.dumps(document, separators=(",", ":")).encode()


def distinct_mac(n: int) -> dict[str, Any]:
    return {"mac": f"{0xB07B25000000 + n:012x}"}


def one_mac(n: int) -> dict[str, Any]:
    return {"mac": "b07b25c10a10"}


def nested(limit: int) -> bytes:
    depth = (limit - 2) // 2
    return b"[" * depth + b"]" * depth


def empty_objects(limit: int, key: str) -> bytes:
    # The most values per byte JSON has: a list of empty objects beside one interface.
    count = (limit - 64 - len(key)) // 3
    return (
        b'{"network_interfaces":[{"mac":"b07b25c10a10"}],"network-interfaces":'
        b'[{"mac":"b07b25c10a10"}],"' + key.encode() + b'":[' + b",".join([b"{}"] * count) + b"]}"
    )


def long_number(limit: int) -> bytes:
    return b'{"network_interfaces":[{"mac":"b07b25c10a10"}],"n":0.' + b"1" * (limit - 64) + b"}"


def big_server() -> bytes:
    sys.path.insert(0, str(ROOT))
    from tests.hosts.test_webhook import big_server_report

    return json.dumps(big_server_report(), indent=1).encode()


def cases() -> dict[str, tuple[str, Callable[[int], bytes]]]:
    """
    Each body by name: the route it is sent to, and how to make it up to a limit.
    """
    return {
        "answer: distinct MACs": (
            "answer",
            lambda n: interfaces(n, "network_interfaces", distinct_mac),
        ),
        "answer: one MAC repeated": (
            "answer",
            lambda n: interfaces(n, "network_interfaces", one_mac),
        ),
        "answer: empty objects": ("answer", lambda n: empty_objects(n, "dmi")),
        "answer: nested lists": ("answer", nested),
        "answer: a long number": ("answer", long_number),
        "webhook: distinct MACs": (
            "webhook",
            lambda n: interfaces(n, "network-interfaces", distinct_mac),
        ),
        "webhook: one MAC repeated": (
            "webhook",
            lambda n: interfaces(n, "network-interfaces", one_mac),
        ),
        "webhook: empty disks": ("webhook", lambda n: empty_objects(n, "disks")),
        "webhook: a big server's report": ("webhook", lambda n: big_server()),
    }


def measure(name: str, reps: int) -> dict[str, Any]:
    """
    In this process: the body C{name}, its outcome and the least CPU time of C{reps}
    parses of it.
    """
    from pxepilot.answers.request import MAX_REQUEST_BYTES, parse_installer_request
    from pxepilot.hosts.webhook import MAX_WEBHOOK_BYTES, parse_webhook

    route, make = cases()[name]
    limit, parse = (
        (MAX_REQUEST_BYTES, parse_installer_request)
        if route == "answer"
        else (MAX_WEBHOOK_BYTES, parse_webhook)
    )
    body: bytes = make(limit)
    best = float("inf")
    outcome = ""
    for _ in range(reps):
        started = time.process_time()
        try:
            parse(body)
        except Exception as e:
            outcome = f"refused: {str(e)[:60]}"
        else:
            outcome = "accepted"
        best = min(best, time.process_time() - started)
    return {"bytes": len(body), "outcome": outcome, "seconds": best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--reps", type=int, default=5, help="parses per body; the least is kept")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per body at most")
    parser.add_argument("--source", type=Path, default=ROOT, help="the tree to read pxepilot from")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.one:
        sys.path.insert(0, str(options.source.resolve()))
        print(json.dumps(measure(options.one, options.reps)))
        return

    print(f"pxepilot from {options.source}")
    print(f"{'body':32} {'size':>9} {'CPU ms':>9} {'ms/MiB':>8}  outcome")
    for name in cases():
        command = [sys.executable, __file__, "--one", name, "--reps", str(options.reps)]
        command += ["--source", str(options.source)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=options.timeout, check=True
            )
        except subprocess.TimeoutExpired:
            print(f"{name:32} {'':>9} {'> ' + str(int(options.timeout * 1000)):>9}")
            continue
        result = json.loads(done.stdout)
        milliseconds = result["seconds"] * 1000
        per_mib = milliseconds / (result["bytes"] / (1 << 20))
        print(
            f"{name:32} {result['bytes']:>9,} {milliseconds:>9.1f} {per_mib:>8.1f}  "
            f"{result['outcome']}"
        )


if __name__ == "__main__":
    main()
