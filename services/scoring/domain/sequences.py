"""A trip's upload sequence numbers as ranges: what it costs grows with the gaps, never with the numbers.

A set of sequences is a sorted list of disjoint, non-adjacent inclusive ranges `[first, last]`
(JSON-safe, as the trip state stores it): uploads 0..9 and 12 are `[[0, 9], [12, 12]]`. A device
that jumps from sequence 3 to 2**64 - 1 adds one range, not 2**64 missing numbers; everything here
is O(number of ranges) or O(log ranges), whatever the numbers are.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable

Ranges = list[list[int]]
Gap = tuple[int, int]


def _index_at_or_before(ranges: Ranges, number: int) -> int:
    """Index of the last range starting at or before `number` (-1 when none does)."""
    return bisect_right(ranges, number, key=lambda pair: pair[0]) - 1


def contains(ranges: Ranges, number: int) -> bool:
    index = _index_at_or_before(ranges, number)
    return index >= 0 and number <= ranges[index][1]


def opens_range(ranges: Ranges, number: int) -> bool:
    """Whether adding `number` would need a range of its own (it is neither in nor next to one)."""
    index = _index_at_or_before(ranges, number)
    if index >= 0 and number <= ranges[index][1] + 1:
        return False
    return not (index + 1 < len(ranges) and ranges[index + 1][0] == number + 1)


def add(ranges: Ranges, number: int) -> bool:
    """Add `number` in place, merging neighbours; False when it was already there."""
    index = _index_at_or_before(ranges, number)
    if index >= 0 and number <= ranges[index][1]:
        return False
    joins_left = index >= 0 and ranges[index][1] + 1 == number
    joins_right = index + 1 < len(ranges) and ranges[index + 1][0] == number + 1
    if joins_left and joins_right:
        ranges[index][1] = ranges[index + 1][1]
        del ranges[index + 1]
    elif joins_left:
        ranges[index][1] = number
    elif joins_right:
        ranges[index + 1][0] = number
    else:
        ranges.insert(index + 1, [number, number])
    return True


def highest(ranges: Ranges) -> int:
    """The highest number in the set, -1 for an empty set."""
    return ranges[-1][1] if ranges else -1


def gaps(ranges: Ranges, through: int) -> list[Gap]:
    """The numbers 0..through that are not in the set, as inclusive ranges."""
    missing: list[Gap] = []
    expected = 0
    for first, last in ranges:
        if first > through:
            break
        if first > expected:
            missing.append((expected, first - 1))
        expected = last + 1
    if expected <= through:
        missing.append((expected, through))
    return missing


def count(missing: Iterable[Gap]) -> int:
    return sum(last - first + 1 for first, last in missing)


def first_numbers(missing: Iterable[Gap], limit: int) -> list[int]:
    """At most `limit` numbers of the gaps, lowest first."""
    numbers: list[int] = []
    for first, last in missing:
        numbers.extend(range(first, min(last, first + limit - len(numbers) - 1) + 1))
        if len(numbers) >= limit:
            break
    return numbers


def from_numbers(numbers: Iterable[int]) -> Ranges:
    """The ranges of a collection of numbers (reading states written as lists of numbers)."""
    ranges: Ranges = []
    for number in sorted(set(numbers)):
        if ranges and ranges[-1][1] + 1 == number:
            ranges[-1][1] = number
        else:
            ranges.append([number, number])
    return ranges


def without(numbers: Iterable[int], through: int) -> Ranges:
    """0..through except `numbers` (reading states that stored a highest sequence and the absent ones)."""
    ranges: Ranges = []
    expected = 0
    for absent in sorted({number for number in numbers if 0 <= number <= through}):
        if absent > expected:
            ranges.append([expected, absent - 1])
        expected = absent + 1
    if expected <= through:
        ranges.append([expected, through])
    return ranges
