"""The monitor's hot loop, compiled: each live value's slot in a window's flattened counts, and the counting.

Every prediction adds its 26 feature values to a window's histograms, so a window of a million rows bins and
counts 26 million values. As numpy operations each step (scale, shift, clip, truncate, look up an edge,
compare, add, count) is a pass over the rows; compiled, each value costs its few arithmetic steps in registers
in one pass, and the counts are added as the slots are found (`bin_rows`), without a slots array in between.

The rule is `ColumnBinning`'s (services/monitor/domain/profiles.py), per value of column j:

- not finite (NaN, +-inf): the slot `unused`;
- a feature whose live edges are not equal-width enough (`FeatureGrid.irregular`; `searched[j]` its feature,
  else -1): the column a binary search finds on its row of the grid's `table` (`numpy.searchsorted`'s right
  side);
- else: position = value x scales[j] - shifts[j], in the values' precision (float32 rows with float32
  constants, rounded after each step as numpy rounds), clamped to [lowest[j], highest[j]] and truncated, is the
  slot below the value's nearest live edge; one more when the value is at or above that edge (`edges[slot]`, in
  the values' precision: float32 edges rounded up, so the comparison stays exact). A column of none of the
  grid's features has scale 0 and both bounds `unused`: never counted.

Compiled on first use, once per kind of rows (float32 or float64, read-only or not), and cached next to this
module, or where numba's cache goes when that folder is read-only (docs/monitor.md); without a writable cache
it compiles in every process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit

logger = logging.getLogger(__name__)


def _compiled(function: Callable[..., Any]) -> Any:
    """`function` compiled to run without the GIL (the monitor's other Python threads, its window writes and its
    /metrics server, run meanwhile), its machine code cached on disk when numba finds a writable place for it,
    else compiled in each process."""
    try:
        return njit(cache=True, nogil=True)(function)
    except RuntimeError as error:  # no cache locator: neither the package's folder nor numba's cache is writable
        logger.warning("binning kernel not cached (%s): compiled in each process", error)
        return njit(nogil=True)(function)


def _bin_rows(
    values: np.ndarray,
    rows: np.ndarray,
    searched: np.ndarray,
    scales: np.ndarray,
    shifts: np.ndarray,
    lowest: np.ndarray,
    highest: np.ndarray,
    edges: np.ndarray,
    table: np.ndarray,
    offsets: np.ndarray,
    unused: int,
    counts: np.ndarray,
    slots: np.ndarray,
) -> None:
    # One loop for counting and for slots (a helper called per value, even inlined, would cost more than the
    # binning: numba counts the references of every array it hands over).
    counting = counts.size > 0
    columns = table.shape[1]
    for row in rows:
        for column in range(values.shape[1]):
            value = values[row, column]
            # Computed for every value, checked last: the common case (finite, arithmetic) runs without a branch
            # it could mispredict. A NaN position takes the lowest: the truncation never sees one.
            position = value * scales[column] - shifts[column]
            if not position >= lowest[column]:
                position = lowest[column]
            elif position > highest[column]:
                position = highest[column]
            slot = int(position)
            if value >= edges[slot]:
                slot += 1
            feature = searched[column]
            if feature >= 0:  # the column c of `table` whose [table[c], table[c + 1]) holds the value
                low, high = 0, columns
                while low < high:
                    middle = (low + high) >> 1
                    if value < table[feature, middle]:
                        high = middle
                    else:
                        low = middle + 1
                slot = offsets[feature] + min(max(low - 1, 0), columns - 2)
            if value - value != 0:  # NaN or +-inf (a NaN differs from everything)
                slot = unused
            if counting:
                counts[slot] += 1
            else:
                slots[row, column] = slot


# bin_rows(values, rows, *constants, counts, slots): adds 1 to `counts[slot]` of every value of `values[rows]`
# when `counts` is not empty, else writes each one's slot to `slots` (values' shape).
bin_rows = _compiled(_bin_rows)


def warm_up() -> None:
    """Compile the kernel, or load it from the cache, for every kind of rows the monitor bins, before its first
    poll batch would: float32 and float64 rows, as unpacked from `packed_features` (read-only) and as arrays
    (writable), each with the constants of its precision (`ColumnBinning`). The first batch of a process would
    otherwise wait 0.3-0.9 s for it."""
    for precision in (np.float32, np.float64):
        constants = (
            np.full(1, -1, dtype=np.int64),  # searched
            *(np.zeros(1, dtype=precision) for _ in range(4)),  # scales, shifts, lowest, highest
            np.full(2, np.inf, dtype=precision),  # edges
            np.full((1, 2), np.inf),  # table
            np.zeros(1, dtype=np.int64),  # offsets
            1,  # unused
        )
        for writable in (True, False):
            values = np.zeros((1, 1), dtype=precision)
            values.flags.writeable = writable
            bin_rows(values, np.zeros(1, dtype=np.int64), *constants, np.zeros(2, dtype=np.int64), _NO_SLOTS)


_NO_SLOTS = np.zeros((0, 0), dtype=np.int64)
