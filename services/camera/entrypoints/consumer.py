"""The camera service's consumer: media and uploads through the kit's loop (`michi.kit.consumer.ConsumerLoop`).

The loop polls `michi.media.v1` and `michi.uploads.v1` in the group `<prefix>camera`, opens each record's consumer
span, decodes it and dead-letters what cannot be decoded; this entrypoint hands each decoded record to
`MediaJoin` by topic (which keeps it in SQL, and analyses and publishes what the join completes before it
returns), and after every batch lets the join enforce its bounds. Offsets are committed only after the batch was
handled: after every detection was acknowledged and every settled item and analysis state written.

Both topics are keyed by device_id with the same partitioner (the shared producer), and the group uses the range
assignor: a device's uploads and media are in the same-numbered partitions of the two topics and so in one
consumer, which handles them one at a time. A device's streams are therefore never analysed by two consumers at
once (docs/camera.md, *Scaling*).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer
from sqlalchemy.exc import OperationalError

from michi.blobs import BlobStoreUnavailable
from michi.bus.catalog import MEDIA, UPLOADS
from michi.bus.producer import EventProducer
from michi.kit.consumer import ConsumerLoop, Delivered, LoopConsumer, Rejected
from services.camera.adapters.metrics import CameraMetrics
from services.camera.handlers import MediaJoin, Rejection, Source

SERVICE = "camera"
# Small batches: an item's analysis takes tens of milliseconds per frame, and a batch is committed at its end.
BATCH_SIZE = 20


class CameraConsumer(LoopConsumer):
    def __init__(
        self,
        *,
        consumer: Consumer,
        producer: EventProducer,
        join: MediaJoin,
        metrics: CameraMetrics,
        prefix: str,
        closing: Callable[[], None] | None = None,
    ) -> None:
        self.consumer = consumer
        self.join = join
        self.metrics = metrics
        self.closing = closing
        self.media_topic = MEDIA.name(prefix)
        self.uploads_topic = UPLOADS.name(prefix)
        self.loop = ConsumerLoop(
            consumer=consumer,
            producer=producer,
            service=SERVICE,
            topics={self.media_topic: MEDIA, self.uploads_topic: UPLOADS},
            handle=self._handle,
            end_batch=join.enforce_bounds,
            on_dead_letter=self._dead_lettered,
            # The database or the blob store away: retried on the same record, the partitions paused in the group.
            retryable=(OperationalError, BlobStoreUnavailable, OSError),
            batch_size=BATCH_SIZE,
        )

    def _handle(self, record: Delivered) -> None:
        try:
            if record.topic() == self.media_topic:
                self.join.media(
                    record.message,  # type: ignore[arg-type]
                    Source(record.topic(), record.partition(), record.offset()),
                )
            else:
                self.join.upload(record.message)  # type: ignore[arg-type]
        except Rejection as rejection:
            raise Rejected(rejection.reason, rejection.detail) from rejection

    def _dead_lettered(self, raw: Any, reason: str) -> None:
        self.metrics.dead_letters.inc()
