"""A stratified sample that is the same however its rows arrive: the k rows of each stratum with the lowest hash.

A drift episode asks people to label a sample of the drifted window (`DRIFT_SAMPLE` label requests). The window
keeps, per stratum (the model's predicted class, so rare risky calls are in the sample beside the common normal
ones), the `per_stratum` rows whose key (the prediction's window id) hashes lowest: bottom-k sampling, uniform
within the stratum, O(k) memory, and independent of arrival order, so a window read again after a crash yields
the same sample and the same request ids.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")


def sample_rank(key: str) -> int:
    """The key's place in every sample: the first 8 bytes of its SHA-256, as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")


class StratifiedSample(Generic[Item]):
    def __init__(self, per_stratum: int) -> None:
        self.per_stratum = per_stratum
        # Per stratum: (rank, key) in ascending order and the items by key.
        self._ranks: dict[int, list[tuple[int, str]]] = {}
        self._items: dict[str, Item] = {}

    def offer(self, stratum: int, key: str, make: Callable[[], Item], rank: int | None = None) -> None:
        """Keep the row if it is among its stratum's lowest ranks (`make` builds the item only then; `rank`:
        `sample_rank(key)` when the caller has it already)."""
        if self.per_stratum <= 0 or key in self._items:
            return
        ranks = self._ranks.setdefault(stratum, [])
        entry = (sample_rank(key) if rank is None else rank, key)
        if len(ranks) >= self.per_stratum and entry >= ranks[-1]:
            return
        bisect.insort(ranks, entry)
        self._items[key] = make()
        if len(ranks) > self.per_stratum:
            _, dropped = ranks.pop()
            del self._items[dropped]

    def bound(self, stratum: int) -> int | None:
        """The highest rank that may still enter the stratum (None while it has room)."""
        ranks = self._ranks.get(stratum)
        if ranks is None or len(ranks) < self.per_stratum:
            return None
        return ranks[-1][0]

    def offer_ascending(
        self,
        stratum: int,
        ranks: Sequence[int],
        keys: Sequence[str],
        rows: Sequence[int],
        make: Callable[[int], Item],
    ) -> None:
        """`offer` each row (`make(row)` builds its item) in ascending rank order, stopping at the first that
        cannot enter: every later one ranks higher, so the sample is the one offering every row gives."""
        if self.per_stratum <= 0:
            return
        for rank, key, row in zip(ranks, keys, rows, strict=True):
            held = self._ranks.get(stratum)
            if held is not None and len(held) >= self.per_stratum and rank > held[-1][0]:
                return
            self.offer(stratum, key, functools.partial(make, row), rank=rank)

    def items(self) -> list[Item]:
        """The sample: strata in ascending order, each in rank order."""
        return [self._items[key] for stratum in sorted(self._ranks) for _, key in self._ranks[stratum]]

    def __len__(self) -> int:
        return len(self._items)
