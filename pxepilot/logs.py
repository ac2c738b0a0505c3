"""
pxe-pilot's log events go through one level filter, set by C{--log-level}.

Events stay structured (C{twisted.logger} fields), so twistd's C{--logfile}, C{--logger}
and JSON observers receive them unchanged. The filter applies to pxe-pilot's own
namespaces only: an application that embeds pxe-pilot keeps its own logging.

What a request puts in a log line or an error message is bounded with L{shorten} and
L{clip}, however much the request sent.
"""

from collections.abc import Sequence

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
)

_level_filter = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)
_observer = FilteringLogObserver(globalLogPublisher, [_level_filter])


def logger(namespace: str) -> Logger:
    """
    A L{Logger} whose events pass pxe-pilot's level filter. Module loggers pass
    C{__name__}; as a class attribute it takes the class's name, like L{Logger} itself.
    """
    return Logger(namespace=namespace, observer=_observer)


def set_log_level(level: LogLevel) -> None:
    """
    Log pxe-pilot events of C{level} and above.
    """
    # The empty namespace sets the level for every namespace without one of its own.
    _level_filter.setLogLevelForNamespace("", level)


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
