"""
Per-host webhook tokens: derived from the secret and the MAC address, kept in one file
made once, and whether a report carries the token it must.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest

from pxepilot.hosts.tokens import (
    SECRET_BYTES,
    HostTokens,
    load_or_create_secret,
    webhook_verdict,
)
from pxepilot.macs import MacAddress

SECRET = bytes(range(32))
A = MacAddress.parse("b0:7b:25:c1:0a:10")
B = MacAddress.parse("b0:7b:25:c1:0a:11")
C = MacAddress.parse("52:54:00:12:34:56")
TOKENS = HostTokens(SECRET)
REQUIRED = "operator-chosen-token"


def test_the_token_is_the_documented_hmac() -> None:
    """
    A host's token is URL-safe base64, without padding, of HMAC-SHA256 under the secret
    of C{pxe-pilot webhook } and the MAC address in its canonical spelling.
    """
    digest = hmac.new(SECRET, b"pxe-pilot webhook b0-7b-25-c1-0a-10", hashlib.sha256).digest()
    expected = base64.urlsafe_b64encode(digest).decode().rstrip("=")
    assert TOKENS.for_host(A) == expected
    assert len(expected) == 43
    assert "=" not in expected


def test_stable_per_mac_and_secret() -> None:
    """
    The same secret and MAC address give the same token, however the address was
    spelled; another address or another secret gives another.
    """
    assert HostTokens(SECRET).for_host(MacAddress.parse("B0-7B-25-C1-0A-10")) == (
        TOKENS.for_host(A)
    )
    tokens = {TOKENS.for_host(mac) for mac in (A, B, C)}
    assert len(tokens) == 3
    assert HostTokens(bytes(32)).for_host(A) != TOKENS.for_host(A)


def test_the_secret_is_not_shown() -> None:
    """
    The secret stays out of the C{repr}, which ends up in logs and tracebacks.
    """
    assert repr(SECRET) not in repr(TOKENS)
    assert SECRET.hex() not in repr(TOKENS)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        TOKENS.for_host(B),
        TOKENS.for_host(A)[:-1],
        TOKENS.for_host(A) + "=",
        TOKENS.for_host(A).upper(),
        HostTokens(bytes(32)).for_host(A),
        "t\u00f6ken\u2028",
        "\ud800",
    ],
    ids=[
        "empty",
        "garbage",
        "other-host",
        "cut-short",
        "padded",
        "other-case",
        "other-secret",
        "non-ascii",
        "lone-surrogate",
    ],
)
def test_matches_refuses(token: str) -> None:
    """
    Anything but the host's own token is refused, including what cannot be encoded
    plainly as text, without raising.
    """
    assert TOKENS.matches(A, TOKENS.for_host(A))
    assert not TOKENS.matches(A, token)


def test_secret_created_once_private(tmp_path: Path) -> None:
    """
    The first call makes C{webhook.key}: 32 random bytes, readable by the owner alone,
    and no temporary file left behind; later calls read the same secret back.
    """
    secret = load_or_create_secret(tmp_path)
    path = tmp_path / "webhook.key"
    assert len(secret) == SECRET_BYTES
    assert path.read_bytes() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["webhook.key"]
    assert load_or_create_secret(tmp_path) == secret
    other = tmp_path / "other"
    other.mkdir()
    assert load_or_create_secret(other) != secret


def test_secret_created_private_whatever_the_umask(tmp_path: Path) -> None:
    """
    A permissive umask does not widen the file's mode.
    """
    previous = os.umask(0)
    try:
        load_or_create_secret(tmp_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "webhook.key").stat().st_mode) == 0o600


def test_an_existing_secret_is_reused(tmp_path: Path) -> None:
    """
    A secret already in the state directory (say, restored from a backup) is the one
    used, so that the tokens of answers already served still match.
    """
    (tmp_path / "webhook.key").write_bytes(SECRET)
    assert load_or_create_secret(tmp_path) == SECRET


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_a_secret_of_the_wrong_size_is_refused(tmp_path: Path, size: int) -> None:
    """
    A C{webhook.key} of the wrong size is an error naming the file, and the file is
    left as it was rather than replaced.
    """
    path = tmp_path / "webhook.key"
    path.write_bytes(b"x" * size)
    with pytest.raises(ValueError, match=f"{path}.* {size} bytes"):
        load_or_create_secret(tmp_path)
    assert path.read_bytes() == b"x" * size


def test_no_state_directory(tmp_path: Path) -> None:
    """
    A state directory that does not exist is an error, not a secret kept nowhere.
    """
    with pytest.raises(FileNotFoundError):
        load_or_create_secret(tmp_path / "missing")


@pytest.mark.parametrize(
    ("token", "macs", "required", "issued", "accepted"),
    [
        pytest.param(REQUIRED, [A, B], REQUIRED, (), True, id="required-right"),
        pytest.param("wrong", [A, B], REQUIRED, (), False, id="required-wrong"),
        pytest.param(REQUIRED[:-1], [A], REQUIRED, (), False, id="required-cut-short"),
        pytest.param(None, [A, B], REQUIRED, (), False, id="required-missing"),
        pytest.param("", [A], REQUIRED, (), False, id="required-empty"),
        pytest.param(TOKENS.for_host(B), [A, B], REQUIRED, (), True, id="required-host-token"),
        pytest.param(
            TOKENS.for_host(B), [A, B], REQUIRED, (A,), True, id="required-host-token-issued"
        ),
        pytest.param(
            TOKENS.for_host(C), [A, B], REQUIRED, (), False, id="required-other-hosts-token"
        ),
        pytest.param("t\u00f6ken", [A], REQUIRED, (), False, id="required-non-ascii"),
        pytest.param(TOKENS.for_host(A), [A, B], None, (A,), True, id="issued-own-token"),
        pytest.param(
            TOKENS.for_host(B), [A, B], None, (B,), True, id="issued-to-second-nic-own-token"
        ),
        pytest.param(TOKENS.for_host(C), [A, B], None, (A,), False, id="issued-other-hosts-token"),
        pytest.param(
            TOKENS.for_host(B), [A, B], None, (A,), False, id="issued-unissued-nics-token"
        ),
        pytest.param("garbage", [A], None, (A,), False, id="issued-wrong-token"),
        pytest.param(None, [A, B], None, (A,), False, id="issued-no-token"),
        pytest.param(None, [A], None, (), True, id="not-issued-no-token"),
        pytest.param("anything", [A], None, (C,), True, id="not-issued-any-token"),
    ],
)
def test_webhook_verdict(
    token: str | None,
    macs: list[MacAddress],
    required: str | None,
    issued: tuple[MacAddress, ...],
    accepted: bool,
) -> None:
    """
    With C{--webhook-token}, a report must carry it or the token of one of its own MAC
    addresses. Without, a report for an address that was issued a token must carry that
    token; any other report is accepted as it always was. A refusal is one line and
    never repeats a token.
    """
    reason = webhook_verdict(token, macs, required, TOKENS, lambda mac: mac in issued)
    assert (reason is None) == accepted
    if reason is not None:
        assert "\n" not in reason
        assert reason.strip()
        secrets = {REQUIRED, TOKENS.for_host(A), TOKENS.for_host(B), TOKENS.for_host(C)}
        for secret in secrets | ({token} if token else set()):
            assert secret not in reason


def test_issued_tokens_cannot_be_checked_without_host_tokens() -> None:
    """
    A token issued, but no host tokens to check it against: the report is refused
    rather than let through unchecked.
    """
    assert webhook_verdict(TOKENS.for_host(A), [A], None, None, lambda mac: True) is not None
    assert webhook_verdict(None, [A], None, None, lambda mac: False) is None
    assert webhook_verdict(REQUIRED, [A], REQUIRED, None, lambda mac: True) is None


def test_the_reason_names_the_host() -> None:
    """
    A refusal names the MAC address that was issued a token, so the operator knows
    which machine's report was turned away.
    """
    reason = webhook_verdict(None, [A, B], None, TOKENS, lambda mac: mac == B)
    assert reason is not None
    assert str(B) in reason
    assert str(A) not in reason
