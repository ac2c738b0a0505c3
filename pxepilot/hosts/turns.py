"""
The host ledger's calls of its store: one worker thread, and the calls waiting for their
turn on it, saves next to each other made durable together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from itertools import groupby
from typing import Any, TypeVar

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from pxepilot.hosts.model import Event, Host
from pxepilot.hosts.store import IHostStore, StoreUnavailable

T = TypeVar("T")


@frozen
class _StoreCall:
    """
    A call of the store waiting for its turn on the worker thread.

    @ivar save: The event and the host after it, for a save; saves next to each other
        in the queue are written together.
    @ivar call: Any other call (a removal, a timeline read), run alone.
    @ivar done: Fires with the call's result once it ran, or fails with its error.
    """

    save: tuple[Event, Host] | None
    call: Callable[[], Any]
    done: Deferred[Any]


Outcome = tuple[bool, Any]


def _outcome(call: Callable[[], Any]) -> Outcome:
    try:
        return True, call()
    except Exception as e:
        return False, e


def run_in_turn(store: IHostStore, calls: Sequence[_StoreCall]) -> list[Outcome]:
    """
    Run C{calls} in order, on the worker thread: each run of saves next to each other as
    one L{IHostStore.save_many}, which makes them durable with one write to the disk;
    each other call alone. Each call's outcome: C{(True, result)} or C{(False, error)}.

    A call's failure is its caller's alone: saves that cannot be made together are made
    one by one, so that only the events that cannot be saved fail.
    """
    outcomes: list[Outcome] = []
    for saving, run in groupby(calls, key=lambda call: call.save is not None):
        together = list(run)
        if not saving:
            outcomes += [_outcome(call.call) for call in together]
            continue
        saves = [call.save for call in together if call.save is not None]
        at_once = _outcome(partial(store.save_many, saves))
        if at_once[0] or len(together) == 1:
            outcomes += [at_once] * len(together)
        else:
            outcomes += [_outcome(call.call) for call in together]
    return outcomes


def _unreachable(error: object) -> bool:
    value = error.value if isinstance(error, Failure) else error
    return isinstance(value, StoreUnavailable)


def unreachable(error: object) -> bool:
    """
    Whether C{error} (an exception or a failure) says the store cannot be reached now.
    """
    value = error.value if isinstance(error, Failure) else error
    return isinstance(value, StoreUnavailable)
