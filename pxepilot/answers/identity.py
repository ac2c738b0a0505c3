"""
A machine's DMI identity as answer file names: its system UUID, serial number and model.

These values come from the installer's request, which anyone on the network can send,
and from firmware that often leaves them at a vendor's placeholder. A placeholder is
shared by every board of that vendor, so it never names a machine: it never matches a
file, and a file named after one is reported. Request values that could not be a file
name (a separator, a leading dot, too long) never match either; only names found by
listing the directory are ever opened.
"""

from __future__ import annotations

import enum
import re

from attrs import frozen

# Longer than any serial number or product name firmware reports (SMBIOS strings are
# short; the request reader keeps at most 128 characters).
MAX_IDENTITY_LENGTH = 64

SERIALS_DIR = "serials"
UUIDS_DIR = "uuids"
MODELS_DIR = "models"


class Rule(enum.Enum):
    """
    Which rule chose a machine's answer file, in the order they are tried.
    """

    MAC = "mac"
    UUID = "uuid"
    SERIAL = "serial"
    MODEL = "model"
    DEFAULT = "default"


# Placeholders firmware and board vendors leave in the DMI fields, compared after
# L{_plain}: case, spaces and punctuation do not matter.
_PLACEHOLDERS = (
    "to be filled by o.e.m.",
    "to be filled by oem",
    "default string",
    "system serial number",
    "system product name",
    "chassis serial number",
    "base board serial number",
    "not specified",
    "not applicable",
    "not available",
    "none",
    "n/a",
    "na",
    "null",
    "unknown",
    "default",
    "oem",
    "o.e.m.",
    "serial",
    "system name",
    "product name",
    "invalid",
    "empty",
    "0123456789",
    "123456789",
    "1234567890",
    "01234567890",
    "12345678",
    "0000000000",
    # A UUID common to many boards whose firmware never set one.
    "03000200-0400-0500-0006-000700080009",
)


def _plain(text: str) -> str:
    return re.sub(r"[\s._/-]+", "", text.casefold())


_PLAIN_PLACEHOLDERS = frozenset(_plain(text) for text in _PLACEHOLDERS)


def useless(text: str | None) -> bool:
    """
    Whether a DMI value names no machine: empty, a vendor's placeholder, or one
    character repeated (C{00000000}, C{FFFFFFFF-FFFF-...}, C{XXXXXXXX}, blanks).
    """
    if text is None or not text.strip():
        return True
    letters = _plain(text)
    return letters in _PLAIN_PLACEHOLDERS or len(set(letters)) <= 1


def _safe(text: str) -> bool:
    """
    The same rules as a MAC address in a file name: printable, no separator, not a
    hidden or parent name, bounded.
    """
    return (
        0 < len(text) <= MAX_IDENTITY_LENGTH
        and text.isprintable()
        and "/" not in text
        and "\\" not in text
        and "\x00" not in text
        and not text.startswith(".")
    )


_UUID = re.compile(r"[0-9a-f]{32}")


def uuid_key(text: str | None) -> str | None:
    """
    A system UUID as its canonical file stem (lower case, with dashes), or L{None} when
    it is not a UUID or is a placeholder.
    """
    if text is None or useless(text):
        return None
    digits = text.strip().lower().replace("-", "")
    if not _UUID.fullmatch(digits) or useless(digits):
        return None
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def serial_key(text: str | None) -> str | None:
    """
    A serial number as its file stem (compared without regard to case), or L{None}
    when it is a placeholder or could not be a file name.
    """
    if text is None:
        return None
    text = text.strip()
    if useless(text) or not _safe(text):
        return None
    return text.casefold()


def model_key(text: str | None) -> str | None:
    """
    A system product name as its file stem: lower case, every run of other characters
    as one C{-} (C{PowerEdge R650} is C{poweredge-r650}); L{None} for a placeholder.
    """
    if text is None or useless(text) or len(text) > MAX_IDENTITY_LENGTH * 2:
        return None
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or None


@frozen
class Identity:
    """
    What names a machine besides its MAC addresses, as file stems (L{None} for a value
    that was not sent or names no machine).
    """

    uuid: str | None = None
    serial: str | None = None
    model: str | None = None

    @classmethod
    def of(cls, uuid: str | None, serial: str | None, model: str | None) -> Identity:
        return cls(uuid_key(uuid), serial_key(serial), model_key(model))


# The folder of each rule's files, and how a file's stem is read back to its key.
FOLDERS = {Rule.UUID: UUIDS_DIR, Rule.SERIAL: SERIALS_DIR, Rule.MODEL: MODELS_DIR}


def key_of_name(rule: Rule, stem: str) -> str | None:
    """
    The key a file stem in C{rule}'s folder stands for; L{None} for a name that can
    never match (a placeholder, or not a UUID in C{uuids/}).
    """
    if rule is Rule.UUID:
        return uuid_key(stem)
    if rule is Rule.SERIAL:
        return serial_key(stem)
    # A model file must be named by its slug: any other spelling is a conflict waiting
    # to happen, so it is read as the slug it would be.
    return model_key(stem)
