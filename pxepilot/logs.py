"""
pxe-pilot's log events go through one level filter, set by C{--log-level}.

Events stay structured (C{twisted.logger} fields), so twistd's C{--logfile}, C{--logger}
and JSON observers receive them unchanged. The filter applies to pxe-pilot's own
namespaces only: an application that embeds pxe-pilot keeps its own logging.

What a request puts in a log line or an error message is bounded with L{shorten} and
L{clip}, however much the request sent.
"""

import functools
import string
from collections.abc import Sequence
from typing import Any

from twisted.logger import Logger, LogLevel, globalLogPublisher

# The level set for all of pxe-pilot: events below it are dropped before they are made.
_least = [LogLevel.info]

# One field of a format: (its key in C{log_flattened}, its name, its format spec, "r"
# for repr); see twisted.logger's KeyFlattener for the keys.
_Field = tuple[str, str, str, bool]


@functools.lru_cache(maxsize=512)
def _fields(format: str) -> tuple[_Field, ...] | None:
    """
    The fields of C{format} as C{log_flattened} keys them, or L{None} when a field is
    more than a plain name (an attribute, an index, a call), which is left to Twisted.
    """
    seen: dict[str, int] = {}
    fields = []
    try:
        parsed = list(string.Formatter().parse(format))
    except ValueError:
        return None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or conversion not in (None, "s", "r"):
            return None
        converted = "r" if conversion == "r" else "s"
        key = f"{name}!{converted}:{spec or ''}"
        seen[key] = count = seen.get(key, 0) + 1
        fields.append(
            (key if count == 1 else f"{key}/{count}", name, spec or "", converted == "r")
        )
    return tuple(fields)


def _flattened(format: str, event: dict[str, Any]) -> dict[str, str] | None:
    fields = _fields(format)
    if fields is None:
        return None
    flattened = {}
    try:
        for key, name, spec, as_repr in fields:
            value = event[name]
            flattened[key] = _format_value(repr(value) if as_repr else value, spec)
    except (KeyError, ValueError, TypeError):
        return None
    return flattened


def _format_value(value: object, spec: str) -> str:
    return str(value) if not spec else format(value, spec)


class _Logger(Logger):
    """
    A L{Logger} that drops events below pxe-pilot's level before making them, and
    formats the rest once, as it emits them.

    Each event is given its C{log_flattened} fields (as L{twisted.logger.flattenEvent}
    would make them, with the format spec applied), so that text observers join
    strings instead of running C{string.Formatter} on every line: at info level a
    busy server writes lines for every request, and Twisted's formatting cost more
    than many requests themselves.
    """

    def emit(self, level: LogLevel, format: str | None = None, **kwargs: Any) -> None:
        if level < _least[0]:
            return
        if format is not None and "log_flattened" not in kwargs:
            flattened = _flattened(format, kwargs)
            if flattened is not None:
                kwargs["log_flattened"] = flattened
        super().emit(level, format, **kwargs)


def logger(namespace: str) -> Logger:
    """
    A L{Logger} whose events pass pxe-pilot's level filter. Module loggers pass
    C{__name__}; as a class attribute it takes the class's name, like L{Logger} itself.
    """
    return _Logger(namespace=namespace, observer=globalLogPublisher)


def set_log_level(level: LogLevel) -> None:
    """
    Log pxe-pilot events of C{level} and above.
    """
    _least[0] = level


def shorten(items: Sequence[object], limit: int = 8, width: int = 80) -> str:
    """
    C{items} as a comma-separated list of bounded length, whatever their number: the
    first C{limit}, each clipped to C{width} characters, then how many more, as in
    C{"a, b, c, ... and 44,992 more"}.
    """
    shown = ", ".join(clip(str(item), width) for item in items[:limit])
    hidden = len(items) - limit
    return f"{shown}, ... and {hidden:,} more" if hidden > 0 else shown


def clip(text: str, width: int) -> str:
    """
    C{text}, cut to C{width} characters (the last three C{...}) when it is longer.
    """
    return text if len(text) <= width else f"{text[: max(width - 3, 0)]}..."
