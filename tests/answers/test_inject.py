"""
Adding pxe-pilot's C{[post-installation-webhook]} to an operator's answer: spelled for
the installers that will read it, with values that stay values, the operator's bytes
kept exactly, and never when the file has the section, the installer cannot take it, or
the result would not pass the checker.
"""

from __future__ import annotations

import tomllib
from typing import Any

import pytest
import tomli_w
from hypothesis import given, settings
from hypothesis import strategies as st

from pxepilot.answers.check import ParsedAnswer, read_answer
from pxepilot.answers.inject import webhook_section
from pxepilot.answers.lint import errors, lint_range
from pxepilot.answers.versions import Gates, InstallerVersion, VersionRange
from tests.answers.strategies import answer_documents, base_answer

V = InstallerVersion.parse

URL = "https://pxe.example.com:8443/webhook"
FINGERPRINT = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD"
TOKEN = "mV3q_hx0bW9ZkXc1T2y8rA4nLpQe7sJdUfGiHoKj-Ao"

ONLY_8_3 = VersionRange.exactly(V("8.3"))
FROM_8_4_TO_9_1 = VersionRange(V("8.4"), V("9.1.99"))
FROM_8_3_TO_9_1 = VersionRange(V("8.3"), V("9.1.99"))
ONLY_9_2 = VersionRange.exactly(V("9.2"))

# As an operator writes it: comments, blank lines, aligned values, a dotted key last.
OPERATOR = b"""\
# pve01, rack 4
[global]
keyboard  = "en-us"
country   = "us"
fqdn      = "pve01.example.com"
mailto    = "ops@example.com"
timezone  = "UTC"
root-password = "changeme123"   # rotated after install

[network]
source = "from-dhcp"

[disk-setup]
filesystem = "zfs"
disk-list = ["sda", "sdb"]
zfs.raid = "raid1"
"""


def parse(data: bytes) -> ParsedAnswer:
    answer = read_answer(data)
    assert isinstance(answer, ParsedAnswer), answer
    return answer


def answer_for(version: InstallerVersion) -> bytes:
    """
    An answer installer C{version} accepts, with no webhook.
    """
    return tomli_w.dumps(base_answer(version)).encode()


def inject(
    data: bytes,
    versions: VersionRange = ONLY_9_2,
    url: str = URL,
    fingerprint: str | None = FINGERPRINT,
    token: str | None = TOKEN,
) -> bytes | None:
    return webhook_section(parse(data), versions, "pve", url, fingerprint, token)


def added(data: bytes, result: bytes | None) -> dict[str, Any]:
    """
    The webhook section of C{result}, having checked that C{result} is C{data} followed
    by it and nothing else: the bytes before it identical, every other key as it was.
    """
    assert result is not None
    assert result.startswith(data)
    document = tomllib.loads(result.decode())
    section = document.pop("post-installation-webhook")
    assert document == tomllib.loads(data.decode())
    assert isinstance(section, dict)
    return section


@pytest.mark.parametrize(
    ("versions", "made_for", "expected"),
    [
        pytest.param(
            ONLY_8_3,
            V("8.3"),
            {"url": URL, "cert_fingerprint": FINGERPRINT},
            id="8.3-snake-case-no-token",
        ),
        pytest.param(
            FROM_8_3_TO_9_1,
            V("8.3"),
            {"url": URL, "cert_fingerprint": FINGERPRINT},
            id="8.3-to-9.1-as-8.3-spells-it",
        ),
        pytest.param(
            FROM_8_4_TO_9_1,
            V("8.4"),
            {"url": URL, "cert-fingerprint": FINGERPRINT},
            id="8.4-to-9.1-kebab-case-no-token",
        ),
        pytest.param(
            ONLY_9_2,
            V("9.2"),
            {"url": URL, "cert-fingerprint": FINGERPRINT, "auth-token": TOKEN},
            id="9.2-with-token",
        ),
    ],
)
def test_spelled_for_the_oldest_installer(
    versions: VersionRange, made_for: InstallerVersion, expected: dict[str, str]
) -> None:
    """
    The section is spelled as the oldest installer in the range takes it: the
    fingerprint's key in snake_case before 8.4, and the token only when every installer
    in the range knows C{auth-token}; it reads back with exactly the values given, and
    the file passes the checker for those installers.
    """
    data = answer_for(made_for)
    assert errors(lint_range(data, versions, "pve")) == []
    result = inject(data, versions)
    assert added(data, result) == expected
    assert result is not None
    assert errors(lint_range(result, versions, "pve")) == []


def test_without_fingerprint_or_token() -> None:
    """
    No fingerprint, no token: the section holds the URL alone (the installer then
    trusts the system's certificate authorities).
    """
    result = inject(OPERATOR, ONLY_9_2, fingerprint=None, token=None)
    assert added(OPERATOR, result) == {"url": URL}


@pytest.mark.parametrize(
    "versions",
    [
        VersionRange.exactly(V("8.2")),
        VersionRange(V("8.2"), V("9.2.99")),
        VersionRange(V("8.2.7"), V("8.2.99")),
    ],
    ids=str,
)
def test_not_before_the_webhook(versions: VersionRange) -> None:
    """
    When the oldest installer that may read the file predates the webhook, nothing is
    added: it would reject the section.
    """
    assert versions.low < Gates.WEBHOOK
    assert inject(answer_for(V("8.2")), versions) is None


@pytest.mark.parametrize(
    "section",
    [
        '[post-installation-webhook]\nurl = "https://hooks.example.com/"\n'
        'cert-fingerprint = "AA:BB"\nauth-token = "theirs"\n',
        '[post-installation-webhook]\nurl = "https://hooks.example.com/"\n'
        'cert_fingerprint = "AA:BB"\nauth_token = "theirs"\n',
        '[  post-installation-webhook    ]\nurl = "https://hooks.example.com/"\n',
        '[ "post-installation-webhook" ]\nurl = "https://hooks.example.com/"\n',
        "[post-installation-webhook]\n# to be filled in\n",
        '[post_installation_webhook]\nurl = "https://hooks.example.com/"\n',
    ],
    ids=["kebab", "snake", "spaced-header", "quoted-header", "empty", "misspelled-table"],
)
def test_a_file_with_the_section_is_left_alone(section: str) -> None:
    """
    A file that has the section, however its header and keys are spelled, is the
    operator's: nothing is added beside it.
    """
    data = OPERATOR + b"\n" + section.encode()
    assert inject(data) is None


def test_a_section_given_by_dotted_keys_is_left_alone() -> None:
    """
    The section given without a header, by dotted keys at the top, is found too.
    """
    data = b'post-installation-webhook.url = "https://hooks.example.com/"\n' + OPERATOR
    assert "post-installation-webhook" in tomllib.loads(data.decode())
    assert inject(data) is None


@pytest.mark.parametrize(
    ("url", "token"),
    [
        pytest.param(URL + '?a="b"', 'to"ken', id="quotes"),
        pytest.param(URL + "\\x\\", "\\", id="backslashes"),
        pytest.param(URL, 'x"\nurl = "https://evil.example/"\n', id="newline-and-key"),
        pytest.param(URL + "/[section]", "]\n[section]\nkey = 1\n[", id="headers"),
        pytest.param(URL + "/]]", "tok\ten\r\u00e9\u2028\x7f", id="control-and-unicode"),
        pytest.param(URL + "/#x", "#comment", id="comment-signs"),
    ],
)
def test_hostile_values_stay_values(url: str, token: str) -> None:
    """
    Quotes, backslashes, newlines, brackets and headers in the URL or the token end up
    as the values they were, and the file holds no other key than before.
    """
    section = added(OPERATOR, inject(OPERATOR, ONLY_9_2, url=url, token=token))
    assert section == {"url": url, "cert-fingerprint": FINGERPRINT, "auth-token": token}


@pytest.mark.parametrize("url", [URL + "\n", "https://pxe example/", "ftp://pxe.example/"])
def test_nothing_the_checker_refuses(url: str) -> None:
    """
    A section the installer would reject (here a URL that is not one) is not added:
    pxe-pilot never serves a file it broke.
    """
    assert errors(lint_range(OPERATOR, ONLY_9_2, "pve")) == []
    assert inject(OPERATOR, ONLY_9_2, url=url) is None


def test_the_answer_s_own_errors_do_not_stop_it() -> None:
    """
    An answer the checker already faults (kebab-case keys for 8.3) still gets the
    section: it adds no error of its own.
    """
    assert errors(lint_range(OPERATOR, ONLY_8_3, "pve")) != []
    result = inject(OPERATOR, ONLY_8_3)
    assert added(OPERATOR, result) == {"url": URL, "cert_fingerprint": FINGERPRINT}


@pytest.mark.parametrize(
    "ending",
    [b"", b"# the end", b"[[x]]\ny = 1"],
    ids=["value", "comment", "array-of-tables"],
)
def test_a_file_without_a_final_newline(ending: bytes) -> None:
    """
    A file whose last line has no newline gets one before the section: a comment does
    not swallow the header, and the last key keeps its value.
    """
    data = OPERATOR.rstrip(b"\n") + (b"\n" + ending if ending else b"")
    assert not data.endswith(b"\n")
    result = inject(data)
    assert added(data, result)["url"] == URL
    assert result is not None
    assert result[len(data) :].startswith(b"\n\n[post-installation-webhook]\n")


def test_an_array_of_tables_last_is_kept() -> None:
    """
    A file whose last table is an array of tables keeps every element, with its keys:
    the section's header ends the array rather than adding to it.
    """
    data = OPERATOR + b'\n[[x]]\nname = "a"\n\n[[x]]\nname = "b"\nz.w = 1\n'
    result = inject(data)
    added(data, result)
    assert result is not None
    assert tomllib.loads(result.decode())["x"] == [{"name": "a"}, {"name": "b", "z": {"w": 1}}]


def test_bytes_before_the_section_are_the_operator_s() -> None:
    """
    The operator's bytes come first, exactly (comments, spacing, CRLF line ends and
    all), then a blank line and the section.
    """
    data = OPERATOR.replace(b"\n", b"\r\n")
    result = inject(data)
    assert result is not None
    assert result[: len(data)] == data
    assert result[len(data) :].startswith(b"\n[post-installation-webhook]\n")
    assert added(data, result)["auth-token"] == TOKEN


urls = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cs", "Zs", "Zl", "Zp", "Cc"]), max_size=20
).map(lambda text: "https://" + text)


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(
    answer_documents(),
    st.sampled_from([ONLY_8_3, FROM_8_3_TO_9_1, FROM_8_4_TO_9_1, ONLY_9_2]),
    urls,
    st.none() | st.text(max_size=20),
    st.none() | st.text(max_size=20),
)
def test_any_answer(
    drawn: tuple[InstallerVersion, dict[str, Any]],
    versions: VersionRange,
    url: str,
    fingerprint: str | None,
    token: str | None,
) -> None:
    """
    Whatever the answer and the values: either nothing is added, or the answer's bytes
    come first and unchanged, the section reads back with exactly the values given
    (those the oldest installer takes), and the checker finds no new error.
    """
    _, document = drawn
    data = tomli_w.dumps(document).encode()
    answer = read_answer(data)
    if not isinstance(answer, ParsedAnswer):
        return
    result = webhook_section(answer, versions, "pve", url, fingerprint, token)
    if "post-installation-webhook" in document:
        assert result is None
    if result is None:
        return
    section = added(data, result)
    assert section.pop("url") == url
    spelled = "cert_fingerprint" if versions.low < V("8.4") else "cert-fingerprint"
    assert section.pop(spelled, None) == fingerprint
    assert section.pop("auth-token", None) == (token if versions.low >= V("9.2") else None)
    assert section == {}

    def problems(data: bytes) -> set[tuple[str, str, int | None]]:
        return {(f.key, f.message, f.line) for f in errors(lint_range(data, versions, "pve"))}

    assert problems(result) <= problems(data)
