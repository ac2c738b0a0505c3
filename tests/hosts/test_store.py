"""
The SQLite host store: what is saved comes back, in order and within the retention
limit, across reopening, schema migrations and a C{kill -9} of the process writing it.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs
import pytest

from pxepilot.hosts import store as store_module
from pxepilot.hosts.model import Event, EventKind, Host, HostState, Installation, advance
from pxepilot.hosts.store import MIGRATIONS, IHostStore, SQLiteHostStore, StoreError
from pxepilot.macs import MacAddress

A, B = (MacAddress.parse(f"b0:7b:25:c1:0a:1{i}") for i in range(2))
V1 = MIGRATIONS[0]


def add_note_column(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE hosts ADD COLUMN note TEXT")


def add_labels_table(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE labels (mac TEXT NOT NULL, label TEXT NOT NULL)")


def event(mac: MacAddress, at: float, kind: EventKind = EventKind.TFTP, **detail: Any) -> Event:
    return Event(mac=mac, at=at, kind=kind, summary=f"{kind.value} at {at}", detail=detail)


def save_all(store: IHostStore, history: Sequence[Event]) -> dict[MacAddress, Host]:
    """
    Save events as the ledger does (each with the host after it); the hosts at the end.
    """
    hosts: dict[MacAddress, Host] = {}
    for each in history:
        hosts[each.mac] = advance(hosts.get(each.mac), each)
        store.save(each, hosts[each.mac])
    return hosts


def columns(path: Path, table: str) -> list[str]:
    db = sqlite3.connect(str(path))
    try:
        return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def integrity(path: Path) -> list[tuple[str]]:
    db = sqlite3.connect(str(path))
    try:
        return db.execute("PRAGMA integrity_check").fetchall()
    finally:
        db.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def open_files_under(directory: Path) -> list[str]:
    """
    The files under C{directory} this process holds open.
    """
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(f"{directory}{os.sep}"):
            found.append(target)
    return found


needs_proc = pytest.mark.skipif(
    not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd to see open files"
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pxe-pilot.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteHostStore]:
    opened = SQLiteHostStore(path)
    yield opened
    opened.close()


def test_provides_the_interface(store: SQLiteHostStore) -> None:
    assert IHostStore.providedBy(store)


def test_a_new_store_is_empty_wal_and_synchronous(path: Path, store: SQLiteHostStore) -> None:
    """
    A new database has no hosts, is at the latest schema version and is kept in WAL mode,
    which is a property of the file that other connections see.
    """
    assert path.is_file()
    assert store.load() == []
    assert store.timeline(A, 10) == []
    assert store.version == len(MIGRATIONS)
    other = sqlite3.connect(str(path))
    try:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        other.close()


def test_save_and_load(store: SQLiteHostStore) -> None:
    """
    Every saved host loads as it was last saved.
    """
    hosts = save_all(
        store,
        [
            event(B, 1.0),
            event(A, 2.0, EventKind.ANSWER_SERVED, file="default.toml", serial="7XK2LM3"),
            event(B, 3.0, EventKind.SCRIPT),
        ],
    )
    assert store.load() == [hosts[A], hosts[B]]
    assert hosts[A].state is HostState.INSTALLING and hosts[A].serial == "7XK2LM3"


def test_timeline_order_and_limit(store: SQLiteHostStore) -> None:
    """
    A timeline is in the order events were saved (whatever their times say), oldest
    first, and a limit keeps the latest ones.
    """
    history = [event(A, at) for at in (5.0, 3.0, 9.0, 1.0, 7.0)]
    save_all(store, [*history, event(B, 2.0)])
    assert store.timeline(A, 100) == history
    assert store.timeline(A, 2) == history[-2:]
    assert store.timeline(A, 0) == []
    assert store.timeline(B, 100) == [event(B, 2.0)]
    assert store.timeline(MacAddress.parse("02:00:00:00:00:01"), 100) == []


def test_hosts_survive_reopening(path: Path) -> None:
    """
    What one store saved, the next one opened on the same file loads.
    """
    first = SQLiteHostStore(path)
    history = [event(A, 1.0), event(A, 2.0, EventKind.INSTALLED), event(B, 3.0)]
    hosts = save_all(first, history)
    first.close()
    second = SQLiteHostStore(path)
    try:
        assert second.load() == [hosts[A], hosts[B]]
        assert second.timeline(A, 10) == history[:2]
        assert second.load()[0].installed_at == 2.0
    finally:
        second.close()


def test_retention_drops_the_oldest(
    store: SQLiteHostStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Beyond the limit a host's oldest events go; other hosts keep theirs, and the host
    itself is kept.
    """
    monkeypatch.setattr(store_module, "MAX_EVENTS_PER_HOST", 3)
    history = [event(A, float(at)) for at in range(1, 7)]
    hosts = save_all(store, [event(B, 0.5), event(B, 0.6), *history])
    assert store.timeline(A, 100) == history[-3:]
    assert store.timeline(B, 100) == [event(B, 0.5), event(B, 0.6)]
    assert store.load() == [hosts[A], hosts[B]]


def test_remove_forgets_host_and_timeline(path: Path, store: SQLiteHostStore) -> None:
    """
    A removed host is gone with its timeline, for good; the others stay.
    """
    hosts = save_all(store, [event(A, 1.0), event(A, 2.0), event(B, 3.0)])
    store.remove(A)
    store.remove(MacAddress.parse("02:00:00:00:00:01"))
    assert store.load() == [hosts[B]]
    assert store.timeline(A, 100) == []
    store.close()
    reopened = SQLiteHostStore(path)
    try:
        assert reopened.load() == [hosts[B]]
        assert reopened.timeline(A, 100) == []
        save_all(reopened, [event(A, 9.0)])
        assert reopened.timeline(A, 100) == [event(A, 9.0)]
    finally:
        reopened.close()


def test_a_failed_save_saves_nothing(store: SQLiteHostStore) -> None:
    """
    The event and the host are saved together or not at all, and the store stays
    usable after a save that failed.
    """
    hosts = save_all(store, [event(A, 1.0)])
    second = event(A, 2.0)
    # Its record cannot be written as JSON, so the save fails after the event's insert.
    unsavable = attrs.evolve(
        advance(hosts[A], second), installation=Installation(disks=({"size": object()},))
    )
    with pytest.raises(TypeError):
        store.save(second, unsavable)
    assert store.timeline(A, 100) == [event(A, 1.0)]
    assert store.load() == [hosts[A]]
    third = event(A, 3.0)
    after = advance(hosts[A], third)
    store.save(third, after)
    assert store.timeline(A, 100) == [event(A, 1.0), third]
    assert store.load() == [after]


def test_saves_made_together_are_kept_in_order(store: SQLiteHostStore, path: Path) -> None:
    """
    L{SQLiteHostStore.save_many} keeps each event on its host's timeline in the order
    given, and each host as after its last event, as one save after another would.
    """
    history = [event(A, 1.0), event(B, 2.0), event(A, 3.0, EventKind.SCRIPT)]
    hosts: dict[MacAddress, Host] = {}
    saves = []
    for each in history:
        hosts[each.mac] = advance(hosts.get(each.mac), each)
        saves.append((each, hosts[each.mac]))
    store.save_many(saves)
    assert store.timeline(A, 100) == [history[0], history[2]]
    assert store.timeline(B, 100) == [history[1]]
    reopened = SQLiteHostStore(path)
    try:
        assert sorted(reopened.load(), key=lambda h: str(h.mac)) == [hosts[A], hosts[B]]
    finally:
        reopened.close()


def test_saves_made_together_are_all_or_none(store: SQLiteHostStore) -> None:
    """
    When one of the saves made together fails, none of them is kept, and the store
    stays usable.
    """
    hosts = save_all(store, [event(A, 1.0)])
    second, third = event(B, 2.0), event(A, 3.0)
    unsavable = attrs.evolve(
        advance(hosts[A], third), installation=Installation(disks=({"size": object()},))
    )
    with pytest.raises(TypeError):
        store.save_many([(second, advance(None, second)), (third, unsavable)])
    assert store.timeline(B, 100) == []
    assert store.timeline(A, 100) == [event(A, 1.0)]
    assert store.load() == [hosts[A]]
    store.save_many([])
    assert store.load() == [hosts[A]]


def test_migration_to_a_new_version_keeps_the_data(path: Path) -> None:
    """
    A database made at version 1 and opened by a pxe-pilot that knows version 2 is
    migrated once, and keeps its hosts and timelines.
    """
    calls: list[int] = []

    def v2(db: sqlite3.Connection) -> None:
        calls.append(2)
        add_note_column(db)

    old = SQLiteHostStore(path, [V1])
    assert old.version == 1
    history = [event(A, 1.0), event(A, 2.0, EventKind.ANSWER_SERVED, file="default.toml")]
    hosts = save_all(old, history)
    old.close()

    for _ in range(2):
        new = SQLiteHostStore(path, [V1, v2])
        try:
            assert new.version == 2
            assert new.load() == [hosts[A]]
            assert new.timeline(A, 10) == history
        finally:
            new.close()
    assert calls == [2]
    assert "note" in columns(path, "hosts")


def test_a_newer_database_is_refused_untouched(path: Path) -> None:
    """
    A database from a newer pxe-pilot is refused with both versions named, and left as
    it was for the pxe-pilot that made it.
    """
    newer = SQLiteHostStore(path, [V1, add_note_column, add_labels_table])
    hosts = save_all(newer, [event(A, 1.0)])
    newer.close()
    before = digest(path)

    with pytest.raises(StoreError) as raised:
        SQLiteHostStore(path, [V1])
    message = str(raised.value)
    assert str(path) in message
    assert re.search(r"\b3\b", message) and re.search(r"\b1\b", message), message

    assert digest(path) == before
    again = SQLiteHostStore(path, [V1, add_note_column, add_labels_table])
    try:
        assert again.version == 3
        assert again.load() == [hosts[A]]
    finally:
        again.close()


@needs_proc
@pytest.mark.parametrize(
    "error", [RuntimeError("a bug in the migration"), sqlite3.OperationalError("disk I/O error")]
)
def test_a_failing_migration_keeps_the_version(path: Path, error: Exception) -> None:
    """
    A migration that fails leaves the database at the version before it, with none of
    its changes, its data kept, and no file held open; a database error is a
    L{StoreError}.
    """
    old = SQLiteHostStore(path, [V1])
    hosts = save_all(old, [event(A, 1.0)])
    old.close()

    def broken(db: sqlite3.Connection) -> None:
        add_labels_table(db)
        add_note_column(db)
        raise error

    expected = StoreError if isinstance(error, sqlite3.Error) else type(error)
    with pytest.raises(expected, match=re.escape(str(error))):
        SQLiteHostStore(path, [V1, broken])
    assert open_files_under(path.parent) == []

    kept = SQLiteHostStore(path, [V1])
    try:
        assert kept.version == 1
        assert kept.load() == [hosts[A]]
    finally:
        kept.close()
    assert "note" not in columns(path, "hosts")
    assert columns(path, "labels") == []


@needs_proc
def test_a_file_that_is_not_sqlite_is_refused_untouched(path: Path) -> None:
    """
    A file that is not a SQLite database is refused, named, byte for byte as it was, with
    nothing created beside it and nothing left open.
    """
    path.parent.mkdir(parents=True)
    data = bytes(range(256)) * 64
    path.write_bytes(data)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        SQLiteHostStore(path)
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert open_files_under(path.parent) == []


def test_a_state_directory_that_cannot_be_made(tmp_path: Path) -> None:
    """
    A state path under a regular file (its directory cannot exist) is a L{StoreError}
    naming it.
    """
    blocker = tmp_path / "state"
    blocker.write_text("not a directory")
    path = blocker / "pxe-pilot.sqlite3"
    with pytest.raises(StoreError, match=re.escape(str(path))):
        SQLiteHostStore(path)
    assert blocker.read_text() == "not a directory"


def test_a_directory_in_place_of_the_database(path: Path) -> None:
    """
    A directory where the database file should be is a L{StoreError}, not a crash.
    """
    path.mkdir(parents=True)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        SQLiteHostStore(path)


def test_used_from_another_thread(store: SQLiteHostStore) -> None:
    """
    The store works from a thread other than the one that opened it, as it is used from
    the ledger's worker thread.
    """
    results: list[object] = []

    def work() -> None:
        try:
            save_all(store, [event(A, 1.0)])
            results.append(store.timeline(A, 10))
        except Exception as e:
            results.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert results == [[event(A, 1.0)]]


# A process that saves events one at a time, forever, and prints how many it has saved
# after each save returns.
WRITER = """
import sys
from pathlib import Path

from pxepilot.hosts import store as store_module
from pxepilot.hosts.model import Event, EventKind, advance
from pxepilot.macs import MacAddress

store_module.MAX_EVENTS_PER_HOST = 10**9
store = store_module.SQLiteHostStore(Path(sys.argv[1]))
mac = MacAddress.parse(sys.argv[2])
run = sys.argv[3]
host = {h.mac: h for h in store.load()}.get(mac)
count = 0
while True:
    count += 1
    event = Event(
        mac=mac, at=float(count), kind=EventKind.TFTP, summary=run, detail={"run": run, "n": count}
    )
    host = advance(host, event)
    store.save(event, host)
    print(count, flush=True)
"""


class Writer:
    """
    The writer process; leaving the C{with} block kills it whatever happened.
    """

    def __init__(self, path: Path, mac: MacAddress, run: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(mac), run],
            stdout=subprocess.PIPE,
            text=True,
        )
        # A writer that stops printing must not hang the test.
        self._watchdog = threading.Timer(60, self.process.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._watchdog.cancel()
        self.process.kill()
        self.process.wait()
        self.stdout.close()

    @property
    def stdout(self) -> IO[str]:
        assert self.process.stdout is not None
        return self.process.stdout

    def wait_for(self, count: int) -> None:
        """
        Wait until the writer has reported C{count} saves.
        """
        for expected in range(1, count + 1):
            line = self.stdout.readline()
            assert line == f"{expected}\n", f"the writer said {line!r}"

    def kill(self) -> list[int]:
        """
        C{kill -9} the writer; every count it reported.
        """
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return [int(line) for line in self.stdout.read().split()]


def saved_runs(store: SQLiteHostStore, mac: MacAddress) -> dict[str, list[int]]:
    """
    The event numbers in C{mac}'s timeline, by writer run.
    """
    runs: dict[str, list[int]] = {}
    for each in store.timeline(mac, 10**9):
        runs.setdefault(each.detail["run"], []).append(each.detail["n"])
    return runs


def test_saved_events_survive_kill_9(path: Path) -> None:
    """
    Every event a writer reported saved is in the database after the writer is killed
    with SIGKILL, its host record matches its latest event, and the database is intact.
    """
    with Writer(path, A, "first") as writer:
        writer.wait_for(100)
        reported = list(range(1, 101)) + writer.kill()
    assert reported == list(range(1, len(reported) + 1))

    assert integrity(path) == [("ok",)]
    store = SQLiteHostStore(path)
    try:
        saved = saved_runs(store, A)["first"]
        # The saves it reported, and perhaps the one it made just before it was killed.
        assert saved[: len(reported)] == reported
        assert len(saved) - len(reported) in (0, 1)
        [host] = store.load()
        assert host.last_event == store.timeline(A, 1)[0]
        assert host.last_event.detail["n"] == saved[-1]
    finally:
        store.close()


def test_kill_9_at_any_moment_leaves_a_usable_database(path: Path) -> None:
    """
    Writers killed at arbitrary moments, while starting, creating the schema or in the
    middle of their stream of saves, each leave a database that opens, loads, passes
    SQLite's integrity check and holds whole saves only.
    """
    reported: dict[str, list[int]] = {}
    for run, count in enumerate([0, 1, 0, 2, 5, 1, 20]):
        name = f"run{run}"
        with Writer(path, A, name) as writer:
            writer.wait_for(count)
            reported[name] = list(range(1, count + 1)) + writer.kill()

        if not path.exists():
            continue
        assert integrity(path) == [("ok",)]
        store = SQLiteHostStore(path)
        try:
            runs = saved_runs(store, A)
            for each, numbers in runs.items():
                assert numbers == list(range(1, len(numbers) + 1)), each
                assert len(numbers) - len(reported[each]) in (0, 1), each
            hosts = store.load()
            if runs:
                [host] = hosts
                assert host.last_event == store.timeline(A, 1)[0]
                assert host.state is HostState.BOOTING
            else:
                assert hosts == []
        finally:
            store.close()


def test_opened_as_root_the_files_go_to_the_directory_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    twistd opens the store as root before it becomes the service's user: the database
    files are given to the state directory's owner, so that user can open them again
    after a restart. Not as root, nothing is changed.
    """
    state = tmp_path / "state"
    state.mkdir()
    owner = state.stat()
    changed: list[tuple[str, int, int]] = []
    monkeypatch.setattr(os, "chown", lambda p, u, g: changed.append((Path(p).name, u, g)))
    real_stat = Path.stat

    def stat(self: Path, **kwargs: Any) -> os.stat_result:
        result = real_stat(self, **kwargs)
        if self.parent == state:  # as if root had created them
            fields = list(result)
            fields[4] = owner.st_uid + 1
            return os.stat_result(fields)
        return result

    monkeypatch.setattr(Path, "stat", stat)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    SQLiteHostStore(state / "pxe-pilot.sqlite3").close()
    assert changed == []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    SQLiteHostStore(state / "pxe-pilot.sqlite3").close()
    names = {name for name, _, _ in changed}
    assert "pxe-pilot.sqlite3" in names
    assert all((u, g) == (owner.st_uid, owner.st_gid) for _, u, g in changed)
