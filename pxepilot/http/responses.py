"""
How pxe-pilot's routes answer: JSON, TOML and iPXE bodies with their headers, and
L{Refused}, which any route raises to answer with an error.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

from twisted.web.iweb import IRequest
from twisted.web.server import Request

from pxepilot.answers.service import Served

TOML_TYPE = b"application/toml; charset=utf-8"
JSON_TYPE = b"application/json"
SOURCE_HEADER = b"X-PXE-Pilot-Source"
# Which rule chose the file: mac, uuid, serial, model or default.
RULE_HEADER = b"X-PXE-Pilot-Rule"

# Twisted knows no reason phrase for these.
_REASONS = {422: b"Unprocessable Content", 413: b"Content Too Large"}


class Refused(Exception):
    """
    A request answered with an error: its status, its JSON body and any headers.
    The routes' error handler turns it into the response.
    """

    def __init__(
        self,
        code: int,
        body: Mapping[str, Any],
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        super().__init__(code, body.get("error"))
        self.code = code
        self.body = body
        self.headers = headers

    @classmethod
    def because(cls, code: int, error: str) -> Refused:
        return cls(code, {"error": error})


def json_body(request: IRequest, data: Any, code: int = 200) -> bytes:
    """
    Answer C{request} with C{data} as JSON.
    """
    request.setResponseCode(code, _REASONS.get(code))
    request.setHeader(b"content-type", JSON_TYPE)
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(data, indent=2).encode("utf-8") + b"\n"


def refusal_body(request: IRequest, refused: Refused) -> bytes:
    """
    Answer C{request} as L{Refused} says; a header named twice is sent twice.
    """
    headers = cast(Request, request).responseHeaders
    for name, value in refused.headers:
        headers.addRawHeader(name, value)
    return json_body(request, refused.body, refused.code)


def toml_body(request: IRequest, served: Served) -> bytes:
    """
    Answer C{request} with an answer file, byte for byte.
    """
    request.setHeader(b"content-type", TOML_TYPE)
    # Answer files hold root passwords: no cache may keep them.
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(SOURCE_HEADER, served.source.encode("utf-8"))
    request.setHeader(RULE_HEADER, served.rule.value.encode("ascii"))
    return served.data


def script_body(request: IRequest, script: str) -> bytes:
    """
    Answer C{request} with an iPXE script.
    """
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return script.encode("utf-8")


def query(request: IRequest, name: bytes, limit: int = 64) -> str | None:
    """
    The first value of a query parameter, cut to C{limit} characters.
    """
    args: dict[bytes, list[bytes]] = getattr(request, "args", {}) or {}
    values = args.get(name)
    if not values:
        return None
    return values[0].decode("latin-1")[:limit]


def header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None
