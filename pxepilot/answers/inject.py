"""
Adding pxe-pilot's own C{[post-installation-webhook]} to an answer that has none, so that
the installer reports back to pxe-pilot without the operator writing the section into
every file.

The answer is otherwise served as the operator wrote it, byte for byte: the section is
appended, never merged, and only when the result still passes the checker.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

import tomli_w

from pxepilot.answers.check import ParsedAnswer
from pxepilot.answers.lint import Finding, errors, lint_range
from pxepilot.answers.schema import SCHEMA, Key
from pxepilot.answers.versions import Gates, InstallerVersion, VersionRange

SECTION = "post-installation-webhook"


def webhook_section(
    answer: ParsedAnswer,
    versions: VersionRange,
    product: str | None,
    url: str,
    fingerprint: str | None,
    token: str | None,
) -> bytes | None:
    """
    The answer's bytes with a C{[post-installation-webhook]} section appended, telling
    the installer to report to C{url}; L{None} when nothing is to be added.

    Appending a table at the end of a TOML document is always valid when the document
    does not define that table (neither by its header nor implicitly, through a dotted
    key or a sub-table): a header ends whatever table or array of tables came before it,
    and nothing follows it but its own keys. The section's values are written by
    C{tomli_w}, so that no quote, backslash or newline in them can end the string. The
    result is still checked, and never served if the checker finds an error in it that
    the answer did not have.

    Each key is spelled as the oldest installer in C{versions} accepts it:
    C{cert_fingerprint} before 8.4, C{cert-fingerprint} from then on; C{auth-token} is
    written only when every installer in C{versions} knows it (9.2 on), since older
    installers reject the file for a key they do not know: the token is then left out.

    @param answer: The operator's answer file.
    @param versions: The installers that may read it.
    @param product: The product being installed, if known, for the checker.
    @param url: Where the installer is to send its report.
    @param fingerprint: The SHA-256 fingerprint of the certificate of C{url}, if the
        installer is to pin it.
    @param token: The host's token, for the installer to send back (from 9.2).
    @return: L{None} when the answer already has the section (in any spelling), when the
        oldest installer in C{versions} has no webhook, or when the result would not
        pass the checker.
    """
    if _has_webhook(answer.document) or versions.low < Gates.WEBHOOK:
        return None
    webhook = SCHEMA.child(SECTION)
    assert webhook is not None
    section = {"url": url}
    for name, value in [("cert-fingerprint", fingerprint), ("auth-token", token)]:
        spelled = _spelling(webhook, name, versions.low)
        if value is not None and spelled is not None:
            section[spelled] = value

    separator = "\n" if answer.text.endswith("\n") else "\n\n"
    added = separator + tomli_w.dumps({SECTION: section})
    text = answer.text + added
    try:
        document = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError, RecursionError):
        return None
    if document.get(SECTION) != section:
        return None
    result = ParsedAnswer(answer.data + added.encode("utf-8"), text, document)
    had = _problems(errors(lint_range(answer, versions, product)))
    if _problems(errors(lint_range(result, versions, product))) - had:
        return None
    return result.data


def _has_webhook(document: Mapping[str, Any]) -> bool:
    """
    Whether the document has a top-level key that is, or was meant to be, the webhook
    section: an operator's section, even misspelled, is theirs to fix, not to be doubled.
    """
    return any(key.strip().lower().replace("_", "-") == SECTION for key in document)


def _spelling(section: Key, name: str, version: InstallerVersion) -> str | None:
    """
    How installer C{version} spells key C{name} of C{section}: its canonical spelling,
    which later installers accept too; L{None} if it does not know the key.
    """
    key = section.child(name)
    assert key is not None, name
    spellings = key.spellings(version)
    return next((s for s, status in spellings.items() if status == "canonical"), None)


def _problems(findings: Iterable[Finding]) -> set[tuple[str, str, int | None]]:
    """
    What each finding says is wrong, and where; appending moves no line of the answer.
    """
    return {(f.key, f.message, f.line) for f in findings}
