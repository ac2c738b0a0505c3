"""
pxe-pilot's log events go through one level filter, set by C{--log-level}.

Events stay structured (C{twisted.logger} fields), so twistd's C{--logfile}, C{--logger}
and JSON observers receive them unchanged. The filter applies to pxe-pilot's own
namespaces only: an application that embeds pxe-pilot keeps its own logging.
"""

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
