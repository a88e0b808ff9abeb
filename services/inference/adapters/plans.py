"""Reading rollout plans from `michi.model-rollouts.v1` (compacted, keyed by model name).

Every inference worker must see every plan, so this is not a faust agent (a consumer group would
give the topic's partition to one worker only, and commit offsets so a restart would not see the
current plan again): a plain confluent-kafka consumer assigned to every partition from the
beginning, committing nothing. `read_to_end()` returns what the topic held when it was called (the
service applies it before taking uploads); `poll()` returns what arrived since. A record that
cannot be decoded goes to the dead-letter topic (its id is stable, so re-reading it after a
restart does not make a second one for consumers that deduplicate).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from michi.bus.catalog import MODEL_ROLLOUTS
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.consumers import consume_batch
from michi.bus.headers import read_headers
from michi.bus.producer import EventProducer
from michi.contracts.v1 import operations_pb2

logger = logging.getLogger(__name__)


class PlanFeedUnavailable(RuntimeError):
    """The rollout topic could not be read to its end in time."""


class RolloutPlanFeed:
    def __init__(
        self,
        bootstrap: KafkaConnection | str,
        prefix: str,
        *,
        producer: EventProducer | None = None,
        service: str = "inference",
    ) -> None:
        self.topic = MODEL_ROLLOUTS.name(prefix)
        self._producer = producer
        self._service = service
        self._consumer = Consumer(
            as_connection(bootstrap).confluent_config(
                {
                    # Required by the client; nothing is committed and no group is joined (partitions are assigned).
                    "group.id": f"michi-{service}-plans-{uuid.uuid4().hex[:12]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": 200,
                }
            )
        )
        self._assigned = False

    def _partitions(self, timeout: float) -> list[int]:
        metadata = self._consumer.list_topics(self.topic, timeout=timeout)
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            raise PlanFeedUnavailable(f"topic {self.topic} unavailable: {topic.error if topic else 'missing'}")
        return sorted(topic.partitions)

    def _assign(self, timeout: float) -> list[int]:
        partitions = self._partitions(timeout)
        if not self._assigned:
            self._consumer.assign([TopicPartition(self.topic, partition, OFFSET_BEGINNING) for partition in partitions])
            self._assigned = True
        return partitions

    def read_to_end(self, timeout: float = 30.0) -> list[operations_pb2.RolloutPlan]:
        """Every plan on the topic when called, in offset order per partition (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                partitions = self._assign(max(deadline - time.monotonic(), 0.5))
                ends = {}
                for partition in partitions:
                    low, high = self._consumer.get_watermark_offsets(
                        TopicPartition(self.topic, partition), timeout=max(deadline - time.monotonic(), 0.5)
                    )
                    if high > low:
                        ends[partition] = high
                break
            except (KafkaException, PlanFeedUnavailable) as error:
                if time.monotonic() >= deadline:
                    raise PlanFeedUnavailable(f"could not read {self.topic}: {error}") from error
                time.sleep(0.5)
        plans: list[operations_pb2.RolloutPlan] = []
        # Positions, not the offsets of records read: a compacted topic has holes, and its last offset
        # need not hold a record this reader gets to see.
        while any(position < ends[partition] for partition, position in self._positions(ends).items()):
            if time.monotonic() >= deadline:
                raise PlanFeedUnavailable(f"{self.topic} not read to its end within {timeout:.0f} s")
            plans.extend(self._decoded(consume_batch(self._consumer, 500, 0.5)))
        return plans

    def _positions(self, ends: dict[int, int]) -> dict[int, int]:
        positions = self._consumer.position([TopicPartition(self.topic, partition) for partition in ends])
        return {entry.partition: entry.offset for entry in positions}

    def poll(self, timeout: float = 1.0) -> list[operations_pb2.RolloutPlan]:
        """Plans that arrived since the last call (waits up to `timeout` for the first)."""
        if not self._assigned:
            self._assign(timeout)
        return list(self._decoded(consume_batch(self._consumer, 100, timeout)))

    def _decoded(self, records: Iterable[Any]) -> Iterable[operations_pb2.RolloutPlan]:
        for record in records:
            if record.error():
                continue
            headers = read_headers(record.headers())
            try:
                yield cast(operations_pb2.RolloutPlan, decode_message(MODEL_ROLLOUTS, record.value(), headers))
            except UndecodableMessage as error:
                logger.warning(
                    "undecodable rollout plan",
                    extra={"partition": record.partition(), "offset": record.offset(), "reason": error.reason},
                )
                if self._producer is not None:
                    self._producer.dead_letter(
                        service=self._service,
                        source_topic=self.topic,
                        partition=record.partition() or 0,
                        offset=record.offset() or 0,
                        key=record.key(),
                        value=record.value(),
                        headers=headers,
                        reason=error.reason,
                        error=error.detail,
                    )

    def close(self) -> None:
        self._consumer.close()
