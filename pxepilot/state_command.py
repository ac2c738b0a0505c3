"""
C{pxe-pilot state export|import}: the host ledger (every host's state and timeline) as
JSON lines, to move it between SQLite and PostgreSQL, so that one instance can grow to
several without losing any history.

    pxe-pilot state export --state /var/lib/pxe-pilot > hosts.jsonl
    pxe-pilot state import --database postgresql://pxe@db/pxe < hosts.jsonl

The first line names the format; each further line is one host and its timeline. An
import reads and checks every line before it writes anything, and then replaces the
hosts it holds (by MAC address), leaving the others as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from attrs import frozen

from pxepilot.hosts.model import Event, Host
from pxepilot.hosts.store import MAX_EVENTS_PER_HOST, IRestorableStore, StoreError

FORMAT = "pxe-pilot-hosts"
VERSION = 1
STATE_DATABASE = "pxe-pilot.sqlite3"


class BadExport(Exception):
    """
    Input that is not an export of pxe-pilot's hosts; the message names the line.
    """


@frozen
class HostRecord:
    """
    One host and its timeline, oldest event first.
    """

    host: Host
    events: tuple[Event, ...]

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host.as_json(), "events": [e.as_json() for e in self.events]}


def export_lines(store: IRestorableStore) -> Iterator[str]:
    """
    The lines of an export of C{store}: the header, then one line per host.
    """
    yield json.dumps({"format": FORMAT, "version": VERSION})
    for host in store.load():
        events = tuple(store.timeline(host.mac, MAX_EVENTS_PER_HOST + 1))
        yield json.dumps(HostRecord(host, events).as_json(), sort_keys=True)


def read_export(lines: Iterator[str]) -> list[HostRecord]:
    """
    Every host of an export, all of it read and checked.

    @raise BadExport: for input without the header, a line that is not JSON or not a
        host, or a MAC address twice; naming the line.
    """
    records: list[HostRecord] = []
    seen: set[str] = set()
    header = False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError as e:
            raise BadExport(f"line {number} is not JSON: {e}") from None
        if not header:
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise BadExport(f"line {number}: not an export of pxe-pilot's hosts")
            if data.get("version") != VERSION:
                raise BadExport(
                    f"line {number}: export version {data.get('version')!r}; this pxe-pilot "
                    f"reads version {VERSION}"
                )
            header = True
            continue
        try:
            host = Host.from_json(data["host"])
            events = tuple(Event.from_json(host.mac, event) for event in data["events"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadExport(f"line {number} is not a host and its timeline: {e!r}") from None
        if str(host.mac) in seen:
            raise BadExport(f"line {number}: {host.mac} is in the export twice")
        seen.add(str(host.mac))
        records.append(HostRecord(host, events))
    if not header:
        raise BadExport("the input is empty: no export of pxe-pilot's hosts")
    return records


def open_named_store(arguments: argparse.Namespace) -> IRestorableStore:
    """
    The store C{--database}, else the SQLite database in C{--state}.

    @raise StoreError: when it cannot be opened.
    """
    if arguments.database:
        from pxepilot.hosts.postgres import PostgresHostStore

        return PostgresHostStore(arguments.database)
    from pxepilot.hosts.store import SQLiteHostStore

    path = Path(arguments.state) / STATE_DATABASE
    if arguments.action == "export" and not path.exists():
        raise StoreError(f"{path} does not exist: no host database to export")
    return SQLiteHostStore(path)


def add_parser(commands: Any) -> None:
    """
    The C{state} subcommand and its options, on C{commands} (argparse's subparsers).
    """
    state = commands.add_parser(
        "state",
        help="export the host ledger as JSON lines, or import it (SQLite or PostgreSQL; "
        "no server needed)",
    )
    state.add_argument("action", choices=("export", "import"))
    state.add_argument(
        "--state",
        type=Path,
        default=os.environ.get("PXE_PILOT_STATE_DIR") or "state",
        metavar="DIR",
        help="the state directory of the SQLite host database (env PXE_PILOT_STATE_DIR) "
        "[default: ./state]",
    )
    state.add_argument(
        "--database",
        default=os.environ.get("PXE_PILOT_DATABASE_URL") or None,
        metavar="URL",
        help="a PostgreSQL host database instead (env PXE_PILOT_DATABASE_URL)",
    )
    state.add_argument(
        "--file",
        type=Path,
        metavar="FILE",
        help="write the export to, or read the import from, FILE [default: standard "
        "output or input]",
    )


def state(arguments: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    """
    Run C{pxe-pilot state}; its exit status. Errors are one line on standard error.
    """
    try:
        if arguments.action == "export":
            return _export(arguments, stdout)
        return _import(arguments, stdin, stdout)
    except (StoreError, BadExport, OSError) as e:
        print(f"pxe-pilot: error: {e}", file=sys.stderr)
        return 1


def _export(arguments: argparse.Namespace, stdout: TextIO) -> int:
    store = open_named_store(arguments)
    try:
        lines = list(export_lines(store))
    finally:
        store.close()
    text = "".join(f"{line}\n" for line in lines)
    if arguments.file is not None:
        arguments.file.write_text(text)
    else:
        stdout.write(text)
    return 0


def _import(arguments: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> int:
    if arguments.file is not None:
        with arguments.file.open() as source:
            records = read_export(iter(source))
    else:
        records = read_export(iter(stdin))
    store = open_named_store(arguments)
    try:
        for record in records:
            store.restore(record.host, record.events)
    finally:
        store.close()
    events = sum(len(record.events) for record in records)
    stdout.write(f"imported {len(records)} hosts and {events} events\n")
    return 0
