"""
C{pxe-pilot state export|import}: the host ledger moves from SQLite to PostgreSQL and
back unchanged; input that is not an export is refused with the line that is wrong,
before anything is written.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pxepilot import application
from pxepilot.cli import parser
from pxepilot.hosts.model import Event, EventKind, Host, advance
from pxepilot.hosts.postgres import PostgresHostStore
from pxepilot.hosts.store import SQLiteHostStore
from pxepilot.macs import MacAddress
from pxepilot.state_command import STATE_DATABASE, state

A, B = (MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(2))
PXE_PILOT = Path(sys.executable).parent / "pxe-pilot"


def run(*argv: str, stdin: str = "") -> tuple[int, str]:
    out = io.StringIO()
    code = state(parser().parse_args(["state", *argv]), io.StringIO(stdin), out)
    return code, out.getvalue()


def fill(store: SQLiteHostStore | PostgresHostStore) -> dict[MacAddress, Host]:
    hosts: dict[MacAddress, Host] = {}
    history = [
        Event(A, 1.0, EventKind.SCRIPT, "menu", {"script": "menu.ipxe"}),
        Event(A, 2.0, EventKind.ANSWER_SERVED, "answer", {"file": "hosts/a.toml", "uuid": "U"}),
        Event(B, 3.0, EventKind.TFTP, "ipxe.efi", {"file": "ipxe.efi", "bytes": 1024}),
        Event(A, 4.0, EventKind.INSTALLED, "installed", {"installation": {"fqdn": "a.test"}}),
    ]
    for event in history:
        hosts[event.mac] = advance(hosts.get(event.mac), event)
        store.save(event, hosts[event.mac])
    return hosts


@pytest.mark.e2e
def test_sqlite_to_postgresql_and_back(tmp_path: Path, postgres_url: str) -> None:
    """
    An export of SQLite imported into PostgreSQL exports the same lines; imported into
    a new SQLite database from there, the same again: hosts and timelines unchanged.
    """
    sqlite = SQLiteHostStore(tmp_path / "one" / STATE_DATABASE)
    hosts = fill(sqlite)
    sqlite.close()
    code, exported = run("export", "--state", str(tmp_path / "one"))
    assert code == 0
    lines = exported.splitlines()
    assert json.loads(lines[0]) == {"format": "pxe-pilot-hosts", "version": 1}
    assert len(lines) == 3

    code, said = run("import", "--database", postgres_url, stdin=exported)
    assert (code, said) == (0, "imported 2 hosts and 4 events\n")
    postgres = PostgresHostStore(postgres_url)
    assert {host.mac: host for host in postgres.load()} == hosts
    assert [event.kind for event in postgres.timeline(A, 10)] == [
        EventKind.SCRIPT,
        EventKind.ANSWER_SERVED,
        EventKind.INSTALLED,
    ]
    postgres.close()
    assert run("export", "--database", postgres_url) == (0, exported)

    (tmp_path / "exported.jsonl").write_text(exported)
    assert (
        run(
            "import", "--state", str(tmp_path / "two"), "--file", str(tmp_path / "exported.jsonl")
        )[0]
        == 0
    )
    assert run("export", "--state", str(tmp_path / "two")) == (0, exported)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the input is empty"),
        ('{"hosts": []}\n', "line 1: not an export of pxe-pilot's hosts"),
        ('{"format": "pxe-pilot-hosts", "version": 2}\n', "export version 2"),
        ('{"format": "pxe-pilot-hosts", "version": 1}\n{"host": \n', "line 2 is not JSON"),
        (
            '{"format": "pxe-pilot-hosts", "version": 1}\n'
            '{"host": {"mac": "nope"}, "events": []}\n',
            "line 2 is not a host",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """
    Input that is not an export ends with one line naming what is wrong, and the
    database it was to go into is not touched (not even made).
    """
    assert run("import", "--state", str(tmp_path), stdin=text) == (1, "")
    assert message in capsys.readouterr().err
    assert not (tmp_path / STATE_DATABASE).exists()


def test_a_host_twice_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """
    An export that holds one MAC address twice is refused, and the hosts the database
    held are unchanged.
    """
    sqlite = SQLiteHostStore(tmp_path / STATE_DATABASE)
    hosts = fill(sqlite)
    sqlite.close()
    _, exported = run("export", "--state", str(tmp_path))
    line = exported.splitlines()[1]
    doubled = exported + line.replace('"a.test"', '"b.test"') + "\n"
    assert run("import", "--state", str(tmp_path), stdin=doubled) == (1, "")
    assert "is in the export twice" in capsys.readouterr().err
    sqlite = SQLiteHostStore(tmp_path / STATE_DATABASE)
    assert {host.mac: host for host in sqlite.load()} == hosts
    sqlite.close()


def test_the_command_line(tmp_path: Path) -> None:
    """
    C{pxe-pilot state export} runs from the command line; a missing database is one
    line and exit status 1.
    """
    sqlite = SQLiteHostStore(tmp_path / STATE_DATABASE)
    fill(sqlite)
    sqlite.close()
    done = subprocess.run(
        [str(PXE_PILOT), "state", "export", "--state", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    missing = subprocess.run(
        [str(PXE_PILOT), "state", "export", "--state", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1
    assert STATE_DATABASE == application.STATE_DATABASE
    assert missing.stderr.startswith("pxe-pilot: error: ") and "does not exist" in missing.stderr
