"""Sequence gaps within a trip: which sequence numbers were never seen before this one."""

from __future__ import annotations


def missing_sequences(last_seen: int | None, sequence: int, limit: int) -> list[int]:
    """Numbers strictly between the highest sequence seen and this one, at most `limit` of them.

    An unseen trip reports nothing: ingest cannot know where a trip it never saw began.
    A late or repeated sequence (at or below the highest seen) fills a gap, it opens none.
    """
    if last_seen is None or sequence <= last_seen + 1:
        return []
    return list(range(last_seen + 1, min(sequence, last_seen + 1 + limit)))
