"""Health of a stream worker judged from outside faust: a worker that crashed or stopped progressing is stopped.

Two failures leave a faust worker alive and useless, holding its partitions (so no other worker
takes them) with its offsets unmoved:

- one of its faust services crashed (the producer after the broker refused a record, the consumer,
  a table, a timer): faust's own shutdown can then hang behind an agent that waits for that
  producer, while its web server still answers;
- it stopped fetching: faust-streaming/aiokafka can come out of a rebalance (seen after a `kill -9`
  and a restart with a backlog) owning every partition and never fetching some of them again
  (faust-streaming/faust#629): the group is stable, lag grows, nothing is logged.

`StreamWatch` looks from two threads of its own, so neither a crashed faust service nor a blocked
event loop stops it:

- every `CRASH_CHECK_S` (0.5 s) it asks whether the app crashed, and then stops the worker without
  acknowledging (exit 75, `redelivery.py`);
- every `CHECK_INTERVAL_S` (5 s) it reads, with a plain confluent-kafka client, the group's committed
  offset and the end of each partition the worker holds of the topics its agents read (those made
  with `catalog_topic`). A partition with records past its committed offset whose committed offset
  has not moved is stalled: after `NOT_READY_AFTER_S` (30 s) `readiness()` says so (`/readyz`
  answers 503), after `STALL_TIMEOUT_S` (45 s) the worker stops (exit 75) and the supervisor restarts
  it, which redelivers from the committed offsets. A worker that stops progressing therefore answers
  503 within 35 s and exits within 50 s of its last commit.

Offsets move after every processed batch (`broker_commit_interval` 1 s), so a healthy worker with a
backlog never trips it, and an idle worker has no lag. While the app rebalances or recovers its
tables its offsets are not judged and the clocks start again afterwards (`/readyz` is 503 then anyway); the
same while the broker does not answer (a restarted broker is not a stalled worker).

A table recovery can hang too (faust-streaming reads changelog partitions after a broker restart and, now and
then, never receives the rest of one: faust-streaming/faust#21, #74, #651; seen here after a broker SIGKILL;
or it stays in recovery with nothing left to read, its highwaters or seeks never answered): while the app
recovers, the watch follows what faust has read of each active changelog partition and what it counts as left,
and a recovery in which neither moved for `RECOVERY_STALL_TIMEOUT_S` (30 s) while the broker answers stops the
worker the same way. A healthy recovery with nothing left to read ends within seconds. A
restarted worker recovers from the start; a slow recovery that reads is never stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, TopicPartition

from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.redelivery import stop_without_acknowledging

if TYPE_CHECKING:  # faust only for its types: readiness checks use this module in services without faust
    import faust

logger = logging.getLogger(__name__)

STALL_TIMEOUT_S = 45.0
RECOVERY_STALL_TIMEOUT_S = 30.0
NOT_READY_AFTER_S = 30.0
CHECK_INTERVAL_S = 5.0
CRASH_CHECK_S = 0.5

Partition = tuple[str, int]
# (committed offset, end offset) of a partition.
Position = tuple[int, int]


@dataclass
class StallDetector:
    """Per partition: the committed offset last seen and since when it has not moved while lagging."""

    timeout_s: float
    last: dict[Partition, tuple[int, float]] = field(default_factory=dict)

    def observe(self, positions: dict[Partition, Position], now: float) -> dict[Partition, float]:
        """For each lagging partition, how long its committed offset has not moved; forgets partitions not given."""
        for partition in self.last.keys() - positions.keys():
            del self.last[partition]
        waiting: dict[Partition, float] = {}
        for partition, (committed, end) in positions.items():
            previous = self.last.get(partition)
            if previous is None or previous[0] != committed or committed >= end:
                self.last[partition] = (committed, now)
                previous = self.last[partition]
            if committed < end:
                waiting[partition] = now - previous[1]
        return waiting

    def stalled(self, positions: dict[Partition, Position], now: float) -> list[Partition]:
        """Partitions lagging with an unmoved committed offset for `timeout_s`."""
        return [partition for partition, for_s in self.observe(positions, now).items() if for_s >= self.timeout_s]

    def reset(self) -> None:
        self.last.clear()


def read_positions(client: Consumer, partitions: Iterable[Partition]) -> dict[Partition, Position]:
    """The group's committed offset (the partition's start when none) and the end of each partition."""
    wanted = [TopicPartition(topic, number) for topic, number in sorted(partitions)]
    if not wanted:
        return {}
    positions: dict[Partition, Position] = {}
    for committed in client.committed(wanted, timeout=10):
        low, high = client.get_watermark_offsets(TopicPartition(committed.topic, committed.partition), timeout=10)
        positions[(committed.topic, committed.partition)] = (committed.offset if committed.offset >= 0 else low, high)
    return positions


def consumer_view(app: Any, partition: Partition) -> str:
    """What faust and aiokafka say of one partition (for the log of a stall): best effort, never raises."""
    try:
        from faust.types import TP

        tp = TP(*partition)
        consumer = app.consumer
        facts = [
            f"assigned {tp in consumer.assignment()}",
            f"active {tp in (consumer._active_partitions or set())}",
            f"paused {tp in consumer._paused_partitions}",
            f"flow {'on' if consumer.flow_active else 'off'}",
        ]
        client = consumer._thread._consumer
        if client is not None:
            assignment = client._subscription.subscription.assignment if client._subscription.subscription else None
            state = assignment.state_value(tp) if assignment is not None else None
            if state is None:
                facts.append("aiokafka: not assigned")
            else:
                facts.append(
                    f"aiokafka: {state._status.name.lower()}, paused {state.paused}, position {state._position}"
                )
            facts.append(f"fetch buffered {tp in client._fetcher._records}")
        return ", ".join(facts)
    except Exception as error:  # a diagnosis must not stop the stop
        return f"consumer state unknown ({type(error).__name__})"


def recovery_progress(app: Any) -> tuple[int, int] | None:
    """What a recovering faust app has read of its active changelog partitions (the sum of its offsets) and how
    many records it still has to read; None when the app has no such recovery to follow."""
    try:
        recovery = app.tables.recovery
        read = int(sum(offset for offset in recovery.active_offsets.values() if offset is not None))
        remaining = int(recovery.active_remaining_total())
    except Exception:  # not faust's Recovery (a test double, another version): nothing to follow
        return None
    return read, remaining


class StreamWatch:
    """Watches one faust app from threads of its own; stops the worker (exit 75) when it crashed or stalled.

    `create_app` makes one per app: `catalog_topic` registers the topics to judge, faust's rebalance
    signals say which partitions the worker holds, the threads start with the worker and stop with
    its graceful shutdown. `timeout_s=None` never stops a stalled worker (it still reports it).
    """

    def __init__(
        self,
        app: faust.App,
        *,
        bootstrap: KafkaConnection | str,
        service: str,
        timeout_s: float | None = STALL_TIMEOUT_S,
        not_ready_after_s: float = NOT_READY_AFTER_S,
        recovery_timeout_s: float | None = RECOVERY_STALL_TIMEOUT_S,
        interval_s: float = CHECK_INTERVAL_S,
        crash_check_s: float = CRASH_CHECK_S,
        stop: Callable[[str, str, str], object] = stop_without_acknowledging,
        clock: Callable[[], float] = time.monotonic,
        read: Callable[[set[Partition]], dict[Partition, Position]] | None = None,
    ) -> None:
        """`stop`, `clock` and `read` (the positions of partitions) are the process's own unless a test gives its."""
        self.app = app
        self.connection = as_connection(bootstrap)
        self.service = service
        self.timeout_s = timeout_s
        self.not_ready_after_s = not_ready_after_s
        self.interval_s = interval_s
        self.crash_check_s = crash_check_s
        self.topics: set[str] = set()
        self._stop = stop
        self._clock = clock
        self._read = read or self._read_from_broker
        self._detector = StallDetector(timeout_s if timeout_s is not None else float("inf"))
        self.recovery_timeout_s = recovery_timeout_s
        # The table recovery followed (`_check_recovery`): what it had read, and since when that has not changed.
        self._recovery_read: tuple[int, int, int] | None = None
        self._recovery_still_since: float | None = None
        # Partitions the worker holds (None until its first assignment); replaced whole, never mutated.
        self._held: frozenset[Partition] | None = None
        # The last judgement: how long each lagging partition has not moved, and the positions read.
        self._waiting: dict[Partition, float] = {}
        self._positions: dict[Partition, Position] = {}
        self._client: Consumer | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- fed by the app

    def read_topic(self, name: str) -> None:
        self.topics.add(name)

    def assigned(self, partitions: Iterable[Any]) -> None:
        """The worker's whole assignment after a rebalance (faust TPs or (topic, partition) pairs)."""
        self._held = frozenset((tp[0], tp[1]) for tp in partitions)

    def revoked(self, partitions: Iterable[Any]) -> None:
        held = self._held or frozenset()
        self._held = held - {(tp[0], tp[1]) for tp in partitions}

    # --- the threads

    def start(self) -> None:
        if self._threads:
            return
        self._stopping.clear()
        self._threads = [
            threading.Thread(target=self._watch_crashes, name=f"{self.service}-crash-watch", daemon=True),
            threading.Thread(target=self._watch_progress, name=f"{self.service}-progress-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop watching (a graceful shutdown is neither a crash nor a stall)."""
        self._stopping.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=15)
        self._threads = []
        if self._client is not None:
            self._client.close()
            self._client = None

    def _watch_crashes(self) -> None:
        while not self._stopping.wait(self.crash_check_s):
            self.check_crash()

    def _watch_progress(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self.check_progress()

    # --- judgements (the threads call these; tests call them directly)

    def check_crash(self) -> None:
        if self.app.crashed and not self._stopping.is_set():
            reason = getattr(self.app, "crash_reason", None)
            self._stop(self.service, f"a faust service of the worker crashed: {reason!r}"[:500], "")

    def check_progress(self) -> None:
        held = self._held
        # faust keeps `rebalancing` set until its table recovery ends, so a recovery is judged whatever it says.
        if held is not None and self.app.in_recovery:
            self._detector.reset()
            self._waiting = {}
            self._check_recovery(held)
            return
        self._recovery_read = self._recovery_still_since = None
        if held is None or self.app.rebalancing or self.app.in_recovery:
            self._detector.reset()
            self._waiting = {}
            return
        judged = {partition for partition in held if partition[0] in self.topics}
        try:
            positions = self._read(judged)
        except Exception as error:
            # The broker is away: nothing to judge, and no progress can be made. The clocks start again
            # once it answers, so an outage is not counted as a stall (the worker needs a rejoin first).
            logger.warning("stream watch could not read offsets", extra={"error": str(error)[:300]})
            self._detector.reset()
            self._waiting = {}
            return
        self._positions = positions
        self._waiting = self._detector.observe(positions, self._clock())
        stuck = self._stalled(self.timeout_s) if self.timeout_s is not None else []
        if stuck and not self._stopping.is_set():
            logger.error(
                "stream worker stalled",
                extra={"partition": f"{stuck[0][0]}[{stuck[0][1]}]", "consumer": consumer_view(self.app, stuck[0])},
            )
            self._stop(self.service, self._describe(stuck), stuck[0][0])

    def _check_recovery(self, held: frozenset[Partition]) -> None:
        """Stop a worker whose table recovery moved neither what it read nor what it counts as left for
        `recovery_timeout_s` while the broker answers (an outage is no hang: the clock starts again once it
        answers). With records left it is a read that never comes; with none left, a recovery that never ends."""
        read = recovery_progress(self.app)
        if read is None:  # not a faust recovery we can follow
            self._recovery_read = self._recovery_still_since = None
            return
        # A new rebalance (faust counts them) starts a new recovery, and the clock again.
        progress = (int(getattr(self.app, "rebalancing_count", 0)), *read)
        try:
            self._read(set(held))  # does the broker answer?
        except Exception:
            self._recovery_still_since = None
            return
        now = self._clock()
        if progress != self._recovery_read or self._recovery_still_since is None:
            self._recovery_read, self._recovery_still_since = progress, now
            return
        still = now - self._recovery_still_since
        if self.recovery_timeout_s is not None and still >= self.recovery_timeout_s and not self._stopping.is_set():
            remaining = progress[2]
            if remaining > 0:
                reason = (
                    f"table recovery read nothing for {still:.0f} s with {remaining} changelog records still to read"
                )
            else:
                reason = f"table recovery did not end in {still:.0f} s with no changelog record left to read"
            logger.error("stream worker's table recovery stalled", extra={"remaining": remaining})
            self._stop(self.service, reason, "")

    def _read_from_broker(self, partitions: set[Partition]) -> dict[Partition, Position]:
        if self._client is None:
            self._client = Consumer(
                self.connection.confluent_config({"group.id": self.app.conf.id, "enable.auto.commit": False})
            )
        return read_positions(self._client, partitions)

    def _stalled(self, for_s: float) -> list[Partition]:
        return sorted(partition for partition, waited in self._waiting.items() if waited >= for_s)

    def _describe(self, stuck: list[Partition]) -> str:
        topic, number = stuck[0]
        committed, end = self._positions.get(stuck[0], (-1, -1))
        waited = max(self._waiting.get(partition, 0.0) for partition in stuck)
        return (
            f"no progress for {waited:.0f} s on {len(stuck)} partition(s) with records waiting "
            f"({topic}[{number}]: committed {committed}, end {end})"
        )

    def readiness(self) -> str | None:
        """None while the worker is healthy; else why it is not (crashed, or stalled for `not_ready_after_s`)."""
        if self.app.crashed:
            return f"crashed: {getattr(self.app, 'crash_reason', None)!r}"[:300]
        stuck = self._stalled(self.not_ready_after_s)
        return self._describe(stuck) if stuck else None
