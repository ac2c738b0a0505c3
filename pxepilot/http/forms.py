"""
The tokens of the status page's forms, which let a browser without JavaScript re-arm or
forget a host with its Basic credentials, and let no other site's page do it.

A browser adds the Basic credentials it keeps to every request to pxe-pilot, a form
posted from another site's page included; such a page cannot add a header of its own
(the C{X-PXE-Pilot-Request} the page's script sends), but neither can a plain HTML form.
What a plain form can carry is a field: the confirmation page puts a token in it that
only pxe-pilot can make, and that another site's page cannot read (the browser keeps
pxe-pilot's pages from it).

A token is an HMAC, under a secret that lives in the process's memory, of the action,
the host's MAC address, when it was issued and the credential the confirmation page was
asked with. So a token is good for one action on one host, for L{LIFETIME} seconds,
with the credential it was issued to: changing the admin token, or restarting
pxe-pilot, voids every form shown before, and a person then reloads the page.

The token is read from the form's body only (L{form_token}), and a form that did its
work sends the browser on to a page (L{see_other}) rather than answering with JSON.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from urllib.parse import parse_qs

from attrs import field, frozen
from twisted.web.iweb import IRequest

from pxepilot.http.responses import header
from pxepilot.macs import MacAddress

# Long enough to read a confirmation page and decide; short enough that a token copied
# from a screen or a proxy's log is soon worth nothing.
LIFETIME = 3600.0

# Clocks of one process do not go back much; a token from slightly ahead is still fine.
_SKEW = 60.0

# The form field that carries the token.
FIELD = b"token"

# A confirmation page's form: its type, and more than its one field would ever take.
_FORM_TYPE = "application/x-www-form-urlencoded"
_MOST_FORM_BYTES = 1024

# Binds the HMAC to this use.
_PURPOSE = b"pxe-pilot form\0"


def _new_secret() -> bytes:
    return secrets.token_bytes(32)


@frozen
class FormTokens:
    """
    Makes and checks the tokens of the operator's forms.

    @ivar secret: The HMAC key; made at random for each process, kept out of the
        C{repr}.
    @ivar lifetime: Seconds a token stays good after it was issued.
    """

    secret: bytes = field(factory=_new_secret, repr=False)
    lifetime: float = LIFETIME

    def issue(self, action: str, mac: MacAddress, credential: str | None, now: float) -> str:
        """
        A token for C{action} on C{mac}, asked for with C{credential} (the admin token
        the request presented, if any) at C{now}.
        """
        issued = str(int(now))
        return f"{issued}.{self._digest(action, mac, credential, issued)}"

    def valid(
        self, token: str | None, action: str, mac: MacAddress, credential: str | None, now: float
    ) -> bool:
        """
        Whether C{token} was issued by L{issue} for C{action} on C{mac} with
        C{credential}, no more than L{lifetime} seconds before C{now}.
        """
        if not token:
            return False
        issued, dot, digest = token.strip().partition(".")
        if not dot or not (issued.isascii() and issued.isdigit()) or len(issued) > 12:
            return False
        if not -_SKEW <= now - int(issued) <= self.lifetime:
            return False
        expected = self._digest(action, mac, credential, issued)
        return hmac.compare_digest(
            digest.encode("utf-8", "surrogatepass"), expected.encode("ascii")
        )

    def _digest(self, action: str, mac: MacAddress, credential: str | None, issued: str) -> str:
        # The credential enters hashed, so its length and content shape nothing else.
        hashed = hashlib.sha256((credential or "").encode("utf-8", "surrogatepass")).digest()
        message = b"\0".join(
            [
                _PURPOSE,
                action.encode("ascii"),
                mac.canonical.encode("ascii"),
                issued.encode("ascii"),
                hashed,
            ]
        )
        digest = hmac.digest(self.secret, message, "sha256")
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def form_token(request: IRequest) -> str | None:
    """
    The form token a request's body carries: only a confirmation page's form sends one.
    Read from the body alone (pxe-pilot's site parses no forms), never from the query: a
    token in a URL would end up in logs and histories.
    """
    media = (header(request, b"content-type") or "").split(";")[0].strip().lower()
    content = request.content
    if request.method != b"POST" or media != _FORM_TYPE or content is None:
        return None
    content.seek(0)
    body = content.read(_MOST_FORM_BYTES + 1)
    content.seek(0)
    if len(body) > _MOST_FORM_BYTES:
        return None
    try:
        fields = parse_qs(body, max_num_fields=8)
    except ValueError:
        return None
    values = fields.get(FIELD)
    return values[0].decode("latin-1") if values else None


def see_other(request: IRequest, location: str) -> bytes:
    """
    Send a browser that posted a form on to C{location} (relative to the form's route,
    so that pxe-pilot may be served below a proxy's path), to be fetched with GET.
    """
    request.setResponseCode(303)
    request.setHeader(b"location", location.encode("ascii"))
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    request.setHeader(b"cache-control", b"no-store")
    return f"See {location}\n".encode("ascii")
