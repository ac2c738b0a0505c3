"""
The answers directory as L{DirectoryAnswerFiles} sees it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from pxepilot.answers.files import (
    MAX_ANSWER_BYTES,
    AnswerFileTooLarge,
    AnswersUnavailable,
    DirectoryAnswerFiles,
    HostFile,
    IAnswerFiles,
)
from pxepilot.macs import MacAddress
from tests.conftest import MINIMAL_ANSWER, AnswersDir

MAC = MacAddress.parse("b0:7b:25:c1:0a:10")


def test_provides_interface(answers_dir: AnswersDir) -> None:
    """
    L{DirectoryAnswerFiles} provides L{IAnswerFiles}.
    """
    assert verifyObject(IAnswerFiles, DirectoryAnswerFiles(answers_dir.root))


def test_listing_accepts_every_spelling(answers_dir: AnswersDir) -> None:
    """
    Host files may be named in any MAC spelling; each is listed with its address.
    """
    for name in [
        "b0-7b-25-c1-0a-10.toml",
        "B0:7B:25:C1:0A:11.toml",
        "b07b.25c1.0a12.toml",
        "B07B25C10A13.toml",
    ]:
        answers_dir.host(name)
    listing = DirectoryAnswerFiles(answers_dir.root).listing()
    assert sorted(str(f.mac) for f in listing.host_files) == [
        "b0:7b:25:c1:0a:10",
        "b0:7b:25:c1:0a:11",
        "b0:7b:25:c1:0a:12",
        "b0:7b:25:c1:0a:13",
    ]
    assert not listing.default_present
    assert listing.unrecognised == ()


def test_listing_ignores_and_reports(answers_dir: AnswersDir) -> None:
    """
    Hidden files, other extensions and directories are ignored; C{.toml} files whose
    name is not a MAC are reported as unrecognised.
    """
    answers_dir.write("default.toml")
    answers_dir.host(".b0-7b-25-c1-0a-10.toml")
    answers_dir.host("b0-7b-25-c1-0a-10.toml.tmp")
    answers_dir.host("b0-7b-25-c1-0a-10.toml~")
    answers_dir.host("server1.toml")
    (answers_dir.root / "hosts" / "b0-7b-25-c1-0a-11.toml").mkdir()
    listing = DirectoryAnswerFiles(answers_dir.root).listing()
    assert listing.default_present
    assert listing.host_files == ()
    assert listing.unrecognised == ("hosts/server1.toml",)


def test_symlinks(answers_dir: AnswersDir) -> None:
    """
    A host file may be a link to a shared answer; a dangling link is not a file.
    """
    shared = answers_dir.write("shared/rack1.toml")
    (answers_dir.root / "hosts" / "b0-7b-25-c1-0a-10.toml").symlink_to(shared)
    (answers_dir.root / "hosts" / "b0-7b-25-c1-0a-11.toml").symlink_to("/nonexistent")
    files = DirectoryAnswerFiles(answers_dir.root)
    assert [f.name for f in files.listing().host_files] == ["hosts/b0-7b-25-c1-0a-10.toml"]
    assert files.read("hosts/b0-7b-25-c1-0a-10.toml").data == MINIMAL_ANSWER


def test_conflicts_prefer_the_canonical_name(answers_dir: AnswersDir) -> None:
    """
    Several files for one MAC: the canonical name comes first, then name order.
    """
    for name in ["B0-7B-25-C1-0A-10.toml", "b07b25c10a10.toml", "b0-7b-25-c1-0a-10.toml"]:
        answers_dir.host(name)
    listing = DirectoryAnswerFiles(answers_dir.root).listing()
    assert [f.name for f in listing.files_for(MAC)] == [
        "hosts/b0-7b-25-c1-0a-10.toml",
        "hosts/B0-7B-25-C1-0A-10.toml",
        "hosts/b07b25c10a10.toml",
    ]
    assert list(listing.conflicts()) == [MAC]
    assert HostFile(MAC, "hosts/b0-7b-25-c1-0a-10.toml").canonical
    assert not HostFile(MAC, "hosts/b07b25c10a10.toml").canonical


def test_missing_hosts_directory(answers_dir: AnswersDir) -> None:
    """
    An answers directory without C{hosts/} has no host files, and that is fine.
    """
    (answers_dir.root / "hosts").rmdir()
    answers_dir.write("default.toml")
    listing = DirectoryAnswerFiles(answers_dir.root).listing()
    assert listing.default_present
    assert listing.host_files == ()


def test_missing_answers_directory(tmp_path: Path) -> None:
    """
    A missing answers directory makes the answers unavailable.
    """
    with pytest.raises(AnswersUnavailable, match="missing"):
        DirectoryAnswerFiles(tmp_path / "gone").listing()


def test_unreadable_answers_directory(
    answers_dir: AnswersDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    An answers directory that cannot be listed makes the answers unavailable, with the
    reason but without the path.
    """

    def refuse(path: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(os, "scandir", refuse)
    with pytest.raises(AnswersUnavailable) as raised:
        DirectoryAnswerFiles(answers_dir.root).listing()
    assert str(raised.value) == "answers directory cannot be read: Permission denied"


def test_answers_path_is_a_file(tmp_path: Path) -> None:
    """
    A file where the answers directory should be makes the answers unavailable.
    """
    (tmp_path / "answers").write_text("")
    with pytest.raises(AnswersUnavailable):
        DirectoryAnswerFiles(tmp_path / "answers").listing()


def test_read_returns_bytes_and_mtime(answers_dir: AnswersDir) -> None:
    """
    A read returns the exact bytes and the modification time.
    """
    path = answers_dir.write("default.toml", b"[global]\r\nx = 1\r\n")
    contents = DirectoryAnswerFiles(answers_dir.root).read("default.toml")
    assert contents.data == b"[global]\r\nx = 1\r\n"
    assert contents.mtime == pytest.approx(path.stat().st_mtime)


def test_read_refuses_huge_files(answers_dir: AnswersDir) -> None:
    """
    A file larger than any answer is never read into memory.
    """
    answers_dir.write("default.toml", b"#" * (MAX_ANSWER_BYTES + 1))
    with pytest.raises(AnswerFileTooLarge):
        DirectoryAnswerFiles(answers_dir.root).read("default.toml")


def test_fifo_does_not_hang(answers_dir: AnswersDir) -> None:
    """
    A FIFO in place of an answer file is neither listed nor able to block a read.
    """
    os.mkfifo(answers_dir.root / "default.toml")
    files = DirectoryAnswerFiles(answers_dir.root)
    assert not files.listing().default_present
    with pytest.raises(AnswersUnavailable, match="not a regular file"):
        files.read("default.toml")


def test_read_of_removed_file(answers_dir: AnswersDir) -> None:
    """
    A file removed after the listing raises L{FileNotFoundError}.
    """
    with pytest.raises(FileNotFoundError):
        DirectoryAnswerFiles(answers_dir.root).read("default.toml")
