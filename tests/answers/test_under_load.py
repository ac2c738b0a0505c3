"""
What lets a rack of installers ask at once without changing what any of them is
served: a listing is kept only while it is exactly the directory's, and a file is
parsed once for the same bytes, however many ask for it, but at once again when the
bytes change, even rewritten in place with the same size and modification time.
"""

from __future__ import annotations

import os
import shutil
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import ensureDeferred

from pxepilot.answers.files import DirectoryAnswerFiles
from pxepilot.answers.recent import Recent
from pxepilot.answers.service import AnswerService, Changing, Served
from pxepilot.macs import MacAddress
from tests.conftest import MINIMAL_ANSWER, AnswersDir, clock_at_now, marker, result_of

MAC = MacAddress.parse("b0:7b:25:c1:0a:10")
OTHER = MacAddress.parse("b0:7b:25:c1:0a:11")


def later() -> float:
    """
    A wall clock an hour ahead: every directory of the test looks still.
    """
    return time.time() + 3600


def files(answers_dir: AnswersDir) -> DirectoryAnswerFiles:
    return DirectoryAnswerFiles(answers_dir.root, wall_clock=later)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """
    Every directory read from now on.
    """
    found: list[str] = []
    scandir = os.scandir

    def counting(path: Any) -> Any:
        found.append(str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counting)
    return found


def test_a_still_directory_is_not_read_again(answers_dir: AnswersDir, scans: list[str]) -> None:
    """
    While no directory changes, listing again reads none of them: a rack asking at once
    costs a stat of each directory per request, not a read of every host file.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    directory = files(answers_dir)
    first = directory.listing()
    read = len(scans)
    assert read > 0
    assert directory.listing() == first
    assert len(scans) == read


@pytest.mark.parametrize("folder", ["", "hosts", "serials", "models", "uuids"])
def test_a_file_added_or_removed_is_listed_at_once(answers_dir: AnswersDir, folder: str) -> None:
    """
    A file added to, or removed from, a directory whose listing was kept is seen by the
    next listing, in the answers directory and in each folder.
    """
    name = {
        "": "default.toml",
        "hosts": "hosts/b0-7b-25-c1-0a-10.toml",
        "serials": "serials/CZ2D1234.toml",
        "models": "models/ProLiant DL360 Gen10.toml",
        "uuids": "uuids/4c4c4544-0042-3010-8057-b4c04f564433.toml",
    }[folder]
    (answers_dir.root / folder).mkdir(exist_ok=True)
    directory = files(answers_dir)
    empty = directory.listing()
    path = answers_dir.write(name)
    added = directory.listing()
    assert added != empty
    path.unlink()
    assert directory.listing() == empty


@pytest.mark.parametrize("folder", ["serials", "models", "uuids", "hosts"])
def test_a_folder_made_later_is_listed_at_once(answers_dir: AnswersDir, folder: str) -> None:
    """
    A folder that did not exist when the listing was kept, made with a file in it, is
    seen by the next listing; and so is its removal.
    """
    shutil.rmtree(answers_dir.root / "hosts")
    directory = files(answers_dir)
    empty = directory.listing()
    name = {
        "hosts": "hosts/b0-7b-25-c1-0a-10.toml",
        "serials": "serials/CZ2D1234.toml",
        "models": "models/ProLiant DL360 Gen10.toml",
        "uuids": "uuids/4c4c4544-0042-3010-8057-b4c04f564433.toml",
    }[folder]
    answers_dir.write(name)
    assert directory.listing() != empty
    shutil.rmtree(answers_dir.root / folder)
    assert directory.listing() == empty


def test_times_set_back_do_not_hide_a_change(answers_dir: AnswersDir) -> None:
    """
    A directory whose modification time is set back after a change (as C{rsync -t}
    does) is still listed again: its change time cannot be set back.
    """
    hosts = answers_dir.root / "hosts"
    directory = files(answers_dir)
    before = os.stat(hosts)
    directory.listing()
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    os.utime(hosts, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert [f.mac for f in directory.listing().host_files] == [MAC]


def test_a_directory_changed_a_moment_ago_is_read_every_time(
    answers_dir: AnswersDir, scans: list[str]
) -> None:
    """
    A directory that changed less than a moment ago may change again within the same
    tick of the file system's clock, unseen in its times: it is read at every listing.
    """
    answers_dir.host("b0-7b-25-c1-0a-10.toml")
    directory = DirectoryAnswerFiles(answers_dir.root)
    directory.listing()
    read = len(scans)
    directory.listing()
    assert len(scans) == 2 * read


def test_a_link_is_followed_at_every_listing(answers_dir: AnswersDir, tmp_path: Path) -> None:
    """
    What a symbolic link points to can change without its directory changing: a listing
    holding a link is never kept, so a link whose file went away stops being listed.
    """
    shared = tmp_path / "shared.toml"
    shared.write_bytes(MINIMAL_ANSWER)
    (answers_dir.root / "hosts" / "b0-7b-25-c1-0a-10.toml").symlink_to(shared)
    directory = files(answers_dir)
    assert [f.mac for f in directory.listing().host_files] == [MAC]
    shared.unlink()
    assert directory.listing().host_files == ()


def served(service: AnswerService, mac: MacAddress = MAC) -> Served:
    found = result_of(ensureDeferred(service.resolve([mac])))
    assert isinstance(found, Served), found
    return found


def test_a_file_rewritten_with_the_same_size_and_time_is_served_changed(
    answers_dir: AnswersDir,
) -> None:
    """
    A file rewritten in place, same size, same modification time (within one second,
    or set back), is served as it is now: what is remembered is keyed by the bytes read.
    """
    first = marker("a")
    second = marker("b")
    assert len(first) == len(second)
    path = answers_dir.host("b0-7b-25-c1-0a-10.toml", first)
    service = AnswerService(files(answers_dir), clock_at_now())
    assert served(service).data == first
    stamp = os.stat(path)
    path.write_bytes(second)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    again = served(service)
    assert again.data == second
    assert again.parsed is not None
    assert again.parsed.document == tomllib.loads(second.decode())


def test_the_same_bytes_are_parsed_once(
    answers_dir: AnswersDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Many installers served the same file, or files with the same bytes, parse it once.
    """
    parses: list[str] = []
    loads = tomllib.loads

    def counting(text: str, **kwargs: Any) -> dict[str, Any]:
        parses.append(text)
        return loads(text, **kwargs)

    monkeypatch.setattr(tomllib, "loads", counting)
    answers_dir.write("default.toml")
    service = AnswerService(files(answers_dir), clock_at_now())
    for mac in (MAC, OTHER, MAC):
        assert served(service, mac).source == "default.toml"
    assert parses == [MINIMAL_ANSWER.decode()]


def test_a_file_being_written_is_still_not_served(answers_dir: AnswersDir) -> None:
    """
    A file changed a moment ago is not served, even when its bytes were parsed before.
    """
    path = answers_dir.host("b0-7b-25-c1-0a-10.toml", marker("a"))
    clock = clock_at_now()
    service = AnswerService(files(answers_dir), clock, max_wait=0)
    served(service)
    path.write_bytes(marker("a"))
    clock.advance(time.time() - clock.seconds())
    found = result_of(ensureDeferred(service.resolve([MAC])))
    assert isinstance(found, Changing)


@settings(derandomize=True, database=None, max_examples=60)
@given(
    keys=st.lists(st.binary(max_size=6), max_size=40),
    entries=st.integers(min_value=1, max_value=5),
    size=st.integers(min_value=0, max_value=12),
)
def test_recent_is_bounded_and_gives_what_making_gives(
    keys: list[bytes], entries: int, size: int
) -> None:
    """
    L{Recent} gives for every key what making it gives, and holds no more entries, nor
    more weight, than it may.
    """
    made: list[bytes] = []

    def make(key: bytes) -> bytes:
        made.append(key)
        return key[::-1]

    recent: Recent[bytes, bytes] = Recent(entries, size, len)
    for key in keys:
        assert recent.get(key, make) == key[::-1]
        assert len(recent) <= entries
        assert recent._weight <= size
    if keys and len(keys[-1]) <= size:
        count = len(made)
        recent.get(keys[-1], make)
        assert len(made) == count
