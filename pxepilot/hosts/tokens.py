"""
Per-host webhook tokens, derived from one secret rather than stored, and whether an
installation report carries the token it must.

An answer that pxe-pilot gives a C{[post-installation-webhook]} section carries the
host's token as C{auth-token}; installers from 9.2 on send it back as the report's
C{token}. Each token is an HMAC of the host's MAC address under a secret kept in the
state directory, so it can be checked again after a restart without a table of issued
tokens, and one host's token says nothing about another's.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from attrs import field, frozen

from pxepilot.macs import MacAddress

SECRET_BYTES = 32
KEY_FILE = "webhook.key"

# Binds the HMAC to this use, should the secret ever key anything else.
_PURPOSE = b"pxe-pilot webhook "


@frozen
class HostTokens:
    """
    The webhook token of every host, derived from one secret.

    @ivar secret: The key of the HMAC; kept out of the C{repr}.
    """

    secret: bytes = field(repr=False)

    def for_host(self, mac: MacAddress) -> str:
        """
        The token of the host with C{mac}: URL-safe base64, without padding, of
        HMAC-SHA256 of the MAC address's canonical spelling.
        """
        digest = hmac.digest(self.secret, _PURPOSE + mac.canonical.encode("ascii"), "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def matches(self, mac: MacAddress, token: str) -> bool:
        """
        Whether C{token} is the token of the host with C{mac}, compared in constant time.
        """
        return _same(token, self.for_host(mac))


def _same(given: str, expected: str) -> bool:
    """
    Whether two strings are equal, in a time that does not depend on where they differ.
    """
    # compare_digest refuses str with non-ASCII characters; a report's token may have them.
    return hmac.compare_digest(
        given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def load_or_create_secret(state_dir: Path) -> bytes:
    """
    The webhook secret in C{state_dir}: read from C{webhook.key}, or made once and saved
    there (mode 0600) when there is none.

    The new file is written under a temporary name, synced, then linked to its name,
    which fails rather than replaces should another process have made one meanwhile: the
    secret read back is then the one every token is checked against.

    @raise ValueError: for a C{webhook.key} that is not C{SECRET_BYTES} long; it is
        left as it is, as replacing it would change every issued token.
    @raise OSError: when the file can be neither read nor made.
    """
    path = state_dir / KEY_FILE
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    temporary = state_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(8)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(secrets.token_bytes(SECRET_BYTES))
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
        _sync_directory(state_dir)
    finally:
        temporary.unlink(missing_ok=True)
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ValueError(
            f"{path} holds {len(secret)} bytes, not the {SECRET_BYTES} of a webhook secret;"
            " remove it to make a new one (the tokens of answers already served change)"
        )
    return secret


def _sync_directory(directory: Path) -> None:
    """
    Make a new name in C{directory} survive a crash.
    """
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def webhook_verdict(
    report_token: str | None,
    macs: Sequence[MacAddress],
    required_token: str | None,
    host_tokens: HostTokens | None,
    token_issued: Callable[[MacAddress], bool],
) -> str | None:
    """
    Whether an installation report is accepted: L{None} if so, else the one-line reason
    to refuse it (with 401). No token appears in the reason.

    With C{required_token} (C{--webhook-token}), every report must carry it, or the
    token of one of its own MAC addresses. Without it, a report naming a MAC address
    that was issued a token must carry that address's token: another host's, a wrong
    one or none is refused; other reports are accepted without a token.

    @param report_token: The report's C{token}, if it has one.
    @param macs: The report's MAC addresses.
    @param required_token: The token every report must carry, if one is set.
    @param host_tokens: The hosts' tokens, when pxe-pilot issues them.
    @param token_issued: Whether an answer with its token was served to a MAC address.
    """
    if required_token is not None:
        if report_token is None:
            return "the report carries no token"
        if _same(report_token, required_token) or _host_token(report_token, macs, host_tokens):
            return None
        return "the report's token is not the webhook token"
    issued = [mac for mac in macs if token_issued(mac)]
    if not issued:
        return None
    named = ", ".join(str(mac) for mac in issued)
    if report_token is None:
        return f"the report carries no token, though one was issued to {named}"
    if _host_token(report_token, issued, host_tokens):
        return None
    return f"the report's token is not the one issued to {named}"


def _host_token(token: str, macs: Sequence[MacAddress], host_tokens: HostTokens | None) -> bool:
    """
    Whether C{token} is the host token of one of C{macs}; every one is compared, so that
    the time taken does not say which.
    """
    if host_tokens is None:
        return False
    found = [host_tokens.matches(mac, token) for mac in macs]
    return any(found)
