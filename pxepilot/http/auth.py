"""
Bearer tokens: for programs (C{Authorization: Bearer}), and for people in a browser
(HTTP Basic, any user name, the token as password), compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from twisted.web.iweb import IRequest


def presented_token(request: IRequest) -> str | None:
    """
    The token a request presents, if any.
    """
    header = request.getHeader(b"authorization")
    if header is None:
        return None
    scheme, _, credentials = header.decode("latin-1").strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        _user, colon, password = decoded.partition(":")
        return password if colon else None
    return None


def token_matches(request: IRequest, expected: str) -> bool:
    """
    Whether C{request} presents C{expected}; how much of it matched does not show in
    the time this takes.
    """
    given = presented_token(request)
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
