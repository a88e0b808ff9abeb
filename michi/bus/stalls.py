"""A stream worker that holds its partitions but stopped fetching is restarted, not left idle.

faust-streaming/aiokafka can come out of a rebalance (seen after a `kill -9` and a restart with a
backlog) owning every partition, ready, and never fetching some of them again
(faust-streaming/faust#629): the group is stable, lag grows, nothing is logged. The watchdog looks
from outside faust: every `interval_s` it reads, with a plain confluent-kafka client, the group's
committed offset and the end of each partition of the topics the app's agents read (those made
with `catalog_topic`). A partition with records past its committed offset whose committed offset
has not moved for `timeout_s` means the worker is stuck: it stops without acknowledging (exit 75)
and the supervisor restarts it, which redelivers from the committed offsets.

Offsets move after every processed batch (`broker_commit_interval` 1 s), so a healthy worker with
a backlog never trips it; an idle worker has no lag.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import faust
from confluent_kafka import Consumer, TopicPartition

logger = logging.getLogger(__name__)

STALL_TIMEOUT_S = 45.0
CHECK_INTERVAL_S = 5.0

# The catalog topics each app's agents read (filled by `catalog_topic`).
_READ_TOPICS: weakref.WeakKeyDictionary[faust.App, set[str]] = weakref.WeakKeyDictionary()


def remember_read_topic(app: faust.App, name: str) -> None:
    _READ_TOPICS.setdefault(app, set()).add(name)


@dataclass
class StallDetector:
    """Per partition: the committed offset last seen and since when it has not moved while lagging."""

    timeout_s: float
    last: dict[tuple[str, int], tuple[int, float]] = field(default_factory=dict)

    def stalled(self, positions: dict[tuple[str, int], tuple[int, int]], now: float) -> list[tuple[str, int]]:
        """Partitions lagging with an unmoved committed offset for `timeout_s`; `positions` maps to (committed, end)."""
        stuck = []
        for partition, (committed, end) in positions.items():
            previous = self.last.get(partition)
            if previous is None or previous[0] != committed or committed >= end:
                self.last[partition] = (committed, now)
                continue
            if now - previous[1] >= self.timeout_s:
                stuck.append(partition)
        return stuck


def _positions(client: Consumer, topics: set[str]) -> dict[tuple[str, int], tuple[int, int]]:
    metadata = client.list_topics(timeout=10)
    partitions = [
        TopicPartition(name, number)
        for name in sorted(topics)
        if name in metadata.topics
        for number in metadata.topics[name].partitions
    ]
    if not partitions:
        return {}
    positions = {}
    for committed in client.committed(partitions, timeout=10):
        low, high = client.get_watermark_offsets(TopicPartition(committed.topic, committed.partition), timeout=10)
        position = committed.offset if committed.offset >= 0 else low
        positions[(committed.topic, committed.partition)] = (position, high)
    return positions


def install_stall_watchdog(
    app: faust.App,
    *,
    bootstrap: str,
    service: str,
    timeout_s: float = STALL_TIMEOUT_S,
    interval_s: float = CHECK_INTERVAL_S,
) -> None:
    """Restart (exit 75) a worker whose committed offsets stop moving while records wait."""
    detector = StallDetector(timeout_s)
    state: dict[str, Any] = {}

    @app.timer(interval=interval_s, name="stall-watchdog")
    async def watch_for_stalls() -> None:
        topics = _READ_TOPICS.get(app, set())
        if not topics:
            return
        if "client" not in state:
            state["client"] = Consumer(
                {"bootstrap.servers": bootstrap, "group.id": app.conf.id, "enable.auto.commit": False}
            )
        try:
            positions = await asyncio.to_thread(_positions, state["client"], topics)
        except Exception as error:  # the broker is away: nothing to judge, look again later
            logger.warning("stall watchdog could not read offsets", extra={"error": str(error)[:300]})
            return
        stuck = detector.stalled(positions, time.monotonic())
        if stuck:
            from michi.bus.streams import stop_without_acknowledging

            topic, partition = stuck[0]
            committed, end = positions[stuck[0]]
            stop_without_acknowledging(
                service,
                f"no progress for {timeout_s:.0f} s on {len(stuck)} partition(s) with records waiting "
                f"(partition {partition}: committed {committed}, end {end})",
                topic,
            )
