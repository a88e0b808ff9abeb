"""What scoring does with each batch of messages, and when a trip's deadline passes.

Every batch follows one order, which is what makes effects idempotent under
at-least-once delivery: (1) apply the messages to copies of the state, (2)
publish the outputs (stable event ids) and wait for the broker's acks, (3) write
the new state and wait for its changelog acks; only then does the stream ack the
batch's offsets. A crash before (3) replays the batch and republishes the same
event ids; a crash after (3) finds the state already updated and publishes
nothing again.

Labels, late detections and late segments can change a trip after it closed:
the trip state keeps what counts (detections and the newest label of each
window) and every change is a diff of what counts before and after one message,
so a redelivered or repeated verdict publishes nothing; a closed trip whose
score inputs changed is published again with the next revision. Revisions are
counted per message, not per batch, so a replay with other batch boundaries
reproduces the same revisions and ids.

What one trip holds is bounded (`domain/limits.py`): before a message is applied,
its trip's count bounds and byte budget are checked; a message that would cross
one goes to dead letters (reason `state-limit`) and closes the trip if it is open
(`closed-at-limit`), so no input can make a state the changelog refuses.

One lock serialises everything that touches the trip table (the detection,
segment and label agents and the deadline timer); another the driver table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import Message
from opentelemetry import trace

from michi.bus.catalog import DRIVER_SCORES, SCORED_EVENTS, TRIP_SCORES, TopicSpec
from michi.bus.producer import PendingDelivery, wait_for_deliveries
from michi.bus.streams import Inbound, consumer_span
from michi.contracts.v1 import inference_pb2, labels_pb2, scoring_pb2
from services.scoring import messages
from services.scoring.adapters.topics import LABELS_BY_TRIP, TRIP_SCORES_BY_DRIVER
from services.scoring.domain import driver as driver_domain
from services.scoring.domain import limits
from services.scoring.domain import trip as trip_domain
from services.scoring.domain.driver import DriverState, RollingWindow
from services.scoring.domain.limits import LimitReached, StateBudget
from services.scoring.domain.trip import (
    DetectionFacts,
    DetectionOutcome,
    LabelFacts,
    LabelOutcome,
    SegmentFacts,
    SegmentOutcome,
    TripInput,
    TripState,
)
from services.scoring.metrics import ScoringMetrics

SERVICE = "scoring"
# Dead-letter reasons of this service (besides the decoder's).
SCHEMA_VIOLATION = "schema-violation"
STATE_LIMIT = "state-limit"
# A trip belongs to the device that sent its first message: another device's input for it is refused.
TRIP_OF_ANOTHER_DEVICE = "trip-of-another-device"

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("michi.scoring")


class TripStore(Protocol):
    def get(self, trip_id: str) -> TripState | None: ...
    def put(self, state: TripState) -> int:
        """Write the state; return the bytes of its changelog record."""
        ...

    def delete(self, key: str, partition: int) -> None: ...
    def states(self) -> Iterator[TripState]: ...
    async def sync(self) -> None: ...
    def __len__(self) -> int: ...


class DriverStore(Protocol):
    def get(self, driver_id: str) -> DriverState | None: ...
    def put(self, state: DriverState, partition: int) -> int: ...
    async def sync(self) -> None: ...
    def __len__(self) -> int: ...


class Publisher(Protocol):
    def publish(self, spec: TopicSpec, key: str, message: Message) -> PendingDelivery: ...
    def dead_letter(self, inbound: Inbound, reason: str, detail: str) -> PendingDelivery: ...


@dataclass(frozen=True)
class ScoringConfig:
    trip_end_grace_s: float = 120.0
    trip_idle_timeout_s: float = 3600.0
    closed_trip_retention_s: float = 7 * 86_400.0
    driver_window: RollingWindow = field(default_factory=RollingWindow)


async def _all_partitions(partitions: set[int]) -> set[int]:
    return partitions


@contextmanager
def _span_of(inbound: Inbound | None) -> Iterator[None]:
    if inbound is None:
        yield
        return
    with consumer_span(inbound, SERVICE):
        yield


class ScoringHandlers:
    def __init__(
        self,
        *,
        trips: TripStore,
        drivers: DriverStore,
        publisher: Publisher,
        metrics: ScoringMetrics,
        config: ScoringConfig,
        clock: Callable[[], float] = time.time,
        owns_trip_partition: Callable[[int], bool] = lambda partition: True,
        caught_up: Callable[[set[int]], Awaitable[set[int]]] | None = None,
    ) -> None:
        self.trips = trips
        self.drivers = drivers
        self.publisher = publisher
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.owns_trip_partition = owns_trip_partition
        self.caught_up = caught_up or _all_partitions
        self.trip_lock = asyncio.Lock()
        self.driver_lock = asyncio.Lock()

    # --- trips: detections, segments, deadlines

    async def on_detections(self, batch: Sequence[Inbound]) -> None:
        await self._on_trip_inputs(batch)

    async def on_segments(self, batch: Sequence[Inbound]) -> None:
        await self._on_trip_inputs(batch)

    async def on_labels(self, batch: Sequence[Inbound]) -> None:
        """Labels re-keyed by trip (scoring's internal topic): verdicts that correct trips."""
        await self._on_trip_inputs(batch)

    async def _on_trip_inputs(self, batch: Sequence[Inbound]) -> None:
        async with self.trip_lock:
            now = self.clock()
            working: dict[str, TripState] = {}
            changed: set[str] = set()
            pending: list[PendingDelivery] = []
            counters: list[Callable[[], None]] = []
            budget = StateBudget()
            for inbound in batch:
                with _span_of(inbound):
                    trip_id = self._apply_trip_input(inbound, now, working, budget, pending, counters)
                if trip_id is not None:
                    changed.add(trip_id)
            await wait_for_deliveries(pending)
            for trip_id in changed:
                self._put_trip(working[trip_id])
            await self.trips.sync()
            for count in counters:
                count()

    def _put_trip(self, state: TripState) -> None:
        self.metrics.state_bytes.labels("trips").observe(self.trips.put(state))

    def _apply_trip_input(
        self,
        inbound: Inbound,
        now: float,
        working: dict[str, TripState],
        budget: StateBudget,
        pending: list[PendingDelivery],
        counters: list[Callable[[], None]],
    ) -> str | None:
        """Apply one message to the working state; return the trip id if its state changed."""
        message = inbound.message
        lineage = message.lineage  # type: ignore[attr-defined]
        trip_id = lineage.trip_id or inbound.key
        problem = messages.trip_input_problem(message, trip_id)
        if problem is not None:
            self.metrics.invalid_messages.labels(inbound.topic).inc()
            pending.append(self.publisher.dead_letter(inbound, SCHEMA_VIOLATION, problem))
            return None
        state = (
            working.get(trip_id) or self.trips.get(trip_id) or TripState(trip_id=trip_id, partition=inbound.partition)
        )
        working[trip_id] = state
        if state.device_id and lineage.device_id and lineage.device_id != state.device_id:
            # A device names the trip ids of its own uploads: one that names another device's trip
            # (by mistake or on purpose) must not change that trip's distance, events or score.
            self.metrics.invalid_messages.labels(inbound.topic).inc()
            pending.append(
                self.publisher.dead_letter(
                    inbound,
                    TRIP_OF_ANOTHER_DEVICE,
                    f"trip {trip_id} belongs to device {state.device_id}, not {lineage.device_id}",
                )
            )
            return None
        facts = messages.trip_input_facts(message)
        limit = self._limit_reached(state, facts, (lineage.driver_id, lineage.device_id), budget)
        if limit is not None:
            return self._refuse_at_limit(inbound, state, limit, now, pending, counters)
        state.driver_id = state.driver_id or lineage.driver_id
        state.device_id = state.device_id or lineage.device_id
        was_closed = state.closed
        before = trip_domain.counted_events(state)
        fingerprint = trip_domain.trip_fingerprint(state) if was_closed else None
        # What readers of scored events know once this message's own records are out.
        baseline = before
        if isinstance(facts, DetectionFacts):
            assert isinstance(message, inference_pb2.Detection)
            outcome, record = trip_domain.apply_detection(state, facts, now)
            if outcome is DetectionOutcome.DUPLICATE:
                counters.append(self.metrics.duplicates_ignored.labels("detection").inc)
                return None
            if was_closed:
                counters.append(self.metrics.late_inputs.labels("detection").inc)
            if outcome is DetectionOutcome.NOT_SCORED or record is None:
                counters.append(self.metrics.detections_not_scored.inc)
            else:
                pending.append(
                    self.publisher.publish(SCORED_EVENTS, state.driver_id, messages.scored_event(message, record))
                )
                counters.append(self.metrics.detections_scored.inc)
                baseline = {**before, record.scored_event_id: trip_domain.detected_event(record)}
            rescore_reason = trip_domain.REASON_LATE_DETECTION
        elif isinstance(facts, SegmentFacts):
            if trip_domain.apply_segment(state, facts, now) is SegmentOutcome.DUPLICATE:
                counters.append(self.metrics.duplicates_ignored.labels("segment").inc)
                return None
            if was_closed:
                counters.append(self.metrics.late_inputs.labels("segment").inc)
            rescore_reason = trip_domain.REASON_LATE_SEGMENT
        else:
            label = facts
            outcome_of_label = trip_domain.apply_label(state, label, now)
            if outcome_of_label is LabelOutcome.DUPLICATE:
                counters.append(self.metrics.duplicates_ignored.labels("label").inc)
                return None
            if outcome_of_label is LabelOutcome.STALE:
                counters.append(self.metrics.labels_applied.labels("stale").inc)
                return trip_id
            rescore_reason = ""
        changes = trip_domain.event_changes(state, baseline, trip_domain.counted_events(state))
        for change in changes:
            pending.append(
                self.publisher.publish(SCORED_EVENTS, state.driver_id, messages.changed_scored_event(state, change))
            )
        if isinstance(facts, LabelFacts):
            verdict = state.verdicts[facts.window_id]
            effect = (
                changes[0].kind.removeprefix("label-")
                if changes
                else "pending"
                if trip_domain.label_is_pending(state, verdict)
                else "no-change"
            )
            counters.append(self.metrics.labels_applied.labels(effect).inc)
            rescore_reason = changes[0].reason if changes else f"label:{facts.event_id}"
        if was_closed and trip_domain.trip_fingerprint(state) != fingerprint:
            pending.append(self._rescore(state, rescore_reason, counters))
        if not state.closed and trip_domain.completion(state).complete:
            pending.append(self._close(state, trip_domain.REASON_COMPLETE, now, counters))
        return trip_id

    @staticmethod
    def _limit_reached(
        state: TripState, facts: TripInput, ids: tuple[str, str], budget: StateBudget
    ) -> LimitReached | None:
        """Which bound the input would take the trip's state over, or None (a duplicate never does)."""
        if trip_domain.is_duplicate(state, facts):
            return None
        if isinstance(facts, DetectionFacts):
            return limits.detection_limit(state, facts) or budget.admit(
                state, limits.detection_growth(state, facts, *ids)
            )
        if isinstance(facts, SegmentFacts):
            return limits.segment_limit(state, facts) or budget.admit(state, limits.segment_growth(state, facts, *ids))
        return limits.label_limit(state, facts) or budget.admit(state, limits.label_growth(state, facts, *ids))

    def _refuse_at_limit(
        self,
        inbound: Inbound,
        state: TripState,
        limit: LimitReached,
        now: float,
        pending: list[PendingDelivery],
        counters: list[Callable[[], None]],
    ) -> str | None:
        """Dead-letter a message its trip cannot hold; an open trip closes with what it has."""
        pending.append(self.publisher.dead_letter(inbound, STATE_LIMIT, f"{limit.bound}: {limit.detail}"))
        counters.append(self.metrics.state_limits.labels(limit.bound).inc)
        if state.closed or not trip_domain.has_trip_data(state):
            return None
        pending.append(self._close(state, trip_domain.REASON_CLOSED_AT_LIMIT, now, counters))
        return state.trip_id

    def _rescore(self, state: TripState, reason: str, counters: list[Callable[[], None]]) -> PendingDelivery:
        summary = trip_domain.rescore_trip(state, reason)
        cause = "label" if reason.startswith("label") else reason
        counters.append(self.metrics.trips_rescored.labels(cause).inc)
        logger.info(
            "trip re-scored",
            extra={
                "trip_id": state.trip_id,
                "driver_id": state.driver_id,
                "revision": summary.revision,
                "reason": reason,
                "score": round(summary.score, 2),
            },
        )
        return self.publisher.publish(TRIP_SCORES, state.trip_id, messages.trip_score(state, summary))

    def _close(self, state: TripState, reason: str, now: float, counters: list[Callable[[], None]]) -> PendingDelivery:
        missing_detections = len(state.awaited_detections)
        summary = trip_domain.close_trip(state, reason, now)
        counters.append(self.metrics.trips_closed.labels(reason).inc)
        logger.info(
            "trip closed",
            extra={
                "trip_id": state.trip_id,
                "driver_id": state.driver_id,
                "reason": reason,
                "score": round(summary.score, 2),
                "uploads": summary.uploads,
                "missing_sequences": ",".join(map(str, summary.missing_sequences[:20])),
                "missing_sequence_count": summary.missing_count,
                "missing_detections": missing_detections,
            },
        )
        return self.publisher.publish(TRIP_SCORES, state.trip_id, messages.trip_score(state, summary))

    def _overdue(self, state: TripState, now: float) -> bool:
        return trip_domain.is_overdue(
            state, now, trip_end_grace_s=self.config.trip_end_grace_s, idle_timeout_s=self.config.trip_idle_timeout_s
        )

    async def close_overdue_trips(self) -> int:
        """Close incomplete trips whose deadline passed; forget closed trips past retention. Returns closures.

        Only on partitions this worker owns and has fully consumed: a trip that looks
        incomplete while our own backlog still holds its data is not lost.
        """
        now = self.clock()
        candidates = {
            state.partition
            for state in self.trips.states()
            if self.owns_trip_partition(state.partition) and self._overdue(state, now)
        }
        consumed = await self.caught_up(candidates) if candidates else set()
        async with self.trip_lock:
            now = self.clock()
            closed: list[TripState] = []
            forgotten: list[TripState] = []
            pending: list[PendingDelivery] = []
            counters: list[Callable[[], None]] = []
            held = {"open": 0, "closed": 0, "labels-only": 0}
            retention_s = self.config.closed_trip_retention_s
            with tracer.start_as_current_span("scoring close overdue trips"):
                for state in self.trips.states():
                    if not self.owns_trip_partition(state.partition):
                        continue
                    if trip_domain.is_expired(state, now, retention_s=retention_s):
                        forgotten.append(state)
                        if not state.closed:
                            self._expire_labels(state, counters)
                        continue
                    if state.closed:
                        held["closed"] += 1
                    elif not trip_domain.has_trip_data(state):
                        held["labels-only"] += 1
                    elif state.partition in consumed and self._overdue(state, now):
                        pending.append(self._close(state, trip_domain.REASON_CLOSED_INCOMPLETE, now, counters))
                        closed.append(state)
                        held["closed"] += 1
                    else:
                        held["open"] += 1
                await wait_for_deliveries(pending)
                for state in closed:
                    self._put_trip(state)
                for state in forgotten:
                    self.trips.delete(state.trip_id, state.partition)
                await self.trips.sync()
            for count in counters:
                count()
            for kind, count_held in held.items():
                self.metrics.trips_in_state.labels(kind).set(count_held)
            self.metrics.drivers_in_state.set(len(self.drivers))
            return len(closed)

    def _expire_labels(self, state: TripState, counters: list[Callable[[], None]]) -> None:
        logger.info(
            "labels expired without their trip",
            extra={
                "trip_id": state.trip_id,
                "labels": len(state.verdicts),
                "label_event_ids": ",".join(sorted(verdict.label_event_id for verdict in state.verdicts.values())),
            },
        )
        counters.append(lambda: self.metrics.labels_expired.inc(len(state.verdicts)))

    # --- labels: repartition by trip (applied with the trip inputs above)

    async def forward_labels(self, batch: Sequence[Inbound]) -> None:
        """Re-key labels (keyed by window_id) by trip_id onto the internal topic co-partitioned with the trips."""
        pending: list[PendingDelivery] = []
        invalid = 0
        for inbound in batch:
            label = inbound.message
            assert isinstance(label, labels_pb2.Label)
            with _span_of(inbound):
                problem = messages.label_problem(label, inbound.key)
                if problem is not None:
                    invalid += 1
                    pending.append(self.publisher.dead_letter(inbound, SCHEMA_VIOLATION, problem))
                    continue
                routed = messages.routed_label(label, inbound.key)
                pending.append(self.publisher.publish(LABELS_BY_TRIP, routed.lineage.trip_id, routed))
        await wait_for_deliveries(pending)
        if invalid:
            self.metrics.invalid_messages.labels(batch[0].topic).inc(invalid)

    # --- drivers: repartition trip scores by driver, then roll them up

    async def forward_trip_scores(self, batch: Sequence[Inbound]) -> None:
        """Re-key trip scores by driver_id onto the internal topic the driver table is partitioned by."""
        pending: list[PendingDelivery] = []
        for inbound in batch:
            score = inbound.message
            driver_id = score.lineage.driver_id  # type: ignore[attr-defined]
            if not driver_id or not score.lineage.trip_id:  # type: ignore[attr-defined]
                continue  # a trip nobody drove (no driver id) has no driver score to update
            with _span_of(inbound):
                pending.append(self.publisher.publish(TRIP_SCORES_BY_DRIVER, driver_id, score))
        await wait_for_deliveries(pending)

    async def on_driver_trip_scores(self, batch: Sequence[Inbound]) -> None:
        async with self.driver_lock:
            working: dict[str, tuple[DriverState, int]] = {}
            changed: set[str] = set()
            pending: list[PendingDelivery] = []
            updates = 0
            duplicates = 0
            for inbound in batch:
                score = inbound.message
                assert isinstance(score, scoring_pb2.TripScore)
                driver_id = score.lineage.driver_id or inbound.key
                problem = messages.trip_score_problem(score, driver_id)
                if problem is not None:
                    self.metrics.invalid_messages.labels(inbound.topic).inc()
                    pending.append(self.publisher.dead_letter(inbound, SCHEMA_VIOLATION, problem))
                    continue
                state = (
                    working.get(driver_id, (None, 0))[0]
                    or self.drivers.get(driver_id)
                    or DriverState(driver_id=driver_id)
                )
                working[driver_id] = (state, inbound.partition)
                if not driver_domain.apply_trip(state, messages.trip_contribution(score), self.config.driver_window):
                    duplicates += 1
                    continue
                changed.add(driver_id)
                with _span_of(inbound):
                    summary = driver_domain.summarize_driver(state)
                    pending.append(self.publisher.publish(DRIVER_SCORES, driver_id, messages.driver_score(summary)))
                updates += 1
            await wait_for_deliveries(pending)
            for driver_id in changed:
                state, partition = working[driver_id]
                self.metrics.state_bytes.labels("drivers").observe(self.drivers.put(state, partition))
            await self.drivers.sync()
            self.metrics.driver_updates.inc(updates)
            self.metrics.duplicates_ignored.labels("trip-score").inc(duplicates)
