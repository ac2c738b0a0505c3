"""
A bounded memory of recent results, for work that depends only on its key: the same
key always gives the same result, so remembering it changes nothing but the time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(Generic[K, V]):
    """
    The results of the latest keys, the least recently used forgotten first, within
    both a number of entries and a total size (the keys may be whole answer files, of
    up to a megabyte each).

    @ivar entries: The most results kept.
    @ivar size: The most the keys may weigh together, as C{weigh} measures them.
    """

    def __init__(self, entries: int, size: int, weigh: Callable[[K], int]) -> None:
        self.entries = entries
        self.size = size
        self._weigh = weigh
        self._found: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._weight = 0

    def __len__(self) -> int:
        return len(self._found)

    def get(self, key: K, make: Callable[[K], V]) -> V:
        """
        The result for C{key}: remembered, or made by C{make} and remembered unless it
        alone weighs more than all may.
        """
        known = self._found.get(key)
        if known is not None:
            self._found.move_to_end(key)
            return known[0]
        result = make(key)
        weight = self._weigh(key)
        if weight > self.size:
            return result
        self._found[key] = (result, weight)
        self._weight += weight
        while len(self._found) > self.entries or self._weight > self.size:
            _, (_, forgotten) = self._found.popitem(last=False)
            self._weight -= forgotten
        return result
