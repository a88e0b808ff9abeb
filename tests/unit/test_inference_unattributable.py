"""An `UploadReceived` naming no upload, device or trip is dead-lettered by inference's handlers and yields nothing.

The agent's batch runs with its real `Publisher` adapter (`michi.bus.streams.StreamPublisher`) over a recording producer, so the
dead letters are checked as the producer would send them (offset, reason, original bytes).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, cast

from opentelemetry import context as otel_context

from michi.bus.producer import EventProducer
from michi.bus.streams import Inbound, StreamPublisher
from michi.contracts.v1 import common_pb2, upload_pb2
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.domain.rollout import RateBudget
from services.inference.entrypoints.stream import StreamWiring, handle_batch
from services.inference.handlers import SCHEMA_VIOLATION, SERVICE, upload_problem


class RecordingProducer:
    """Dead letters are acknowledged at once; anything published is a failure of the test."""

    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []

    def dead_letter(self, **letter: Any) -> concurrent.futures.Future[None]:
        self.letters.append(letter)
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.set_result(None)
        return future

    # The producer's own mapping of a decoded record onto a dead letter, over this recording `dead_letter`.
    dead_letter_inbound = EventProducer.dead_letter_inbound

    def publish(self, *arguments: Any, **keywords: Any) -> None:
        raise AssertionError(f"nothing may be published for an unattributable upload: {arguments}")


class NoServing:
    pending = None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the pipeline must not see an unattributable upload ({name})")


def received(upload_id: str = "u-1", device_id: str = "d-1", trip_id: str = "t-1") -> upload_pb2.UploadReceived:
    return upload_pb2.UploadReceived(
        event_id=f"event-{upload_id}",
        lineage=common_pb2.Lineage(upload_id=upload_id, device_id=device_id, trip_id=trip_id),
        upload=upload_pb2.Upload(upload_id=upload_id, device_id=device_id, trip_id=trip_id),
    )


def inbound(message: upload_pb2.UploadReceived, offset: int, partition: int = 2) -> Inbound:
    return Inbound(
        message,
        "key",
        {"schema": "michi.v1.UploadReceived"},
        "michi.uploads.v1",
        partition,
        offset,
        otel_context.Context(),
    )


def test_an_upload_without_its_ids_is_named_for_what_it_lacks() -> None:
    assert upload_problem(received()) is None
    assert upload_problem(upload_pb2.UploadReceived(event_id="hollow")) == (
        "UploadReceived without upload.upload_id, upload.device_id, upload.trip_id"
    )
    assert upload_problem(received(trip_id="")) == "UploadReceived without upload.trip_id"


def test_unattributable_uploads_are_dead_lettered_and_their_offsets_counted_as_handled() -> None:
    producer = RecordingProducer()
    metrics = InferenceMetrics()
    wiring = StreamWiring(
        producer=cast(Any, producer),
        publisher=StreamPublisher(cast(Any, producer), SERVICE),
        serving=cast(Any, NoServing()),
        table={},
        metrics=metrics,
        batch_size=8,
        within=0.05,
        commit_barrier=cast(Any, None),
        budget=RateBudget(60.0),
    )
    hollow = upload_pb2.UploadReceived(event_id="hollow")
    batch = [inbound(hollow, 7), inbound(received(device_id=""), 9)]

    outcome = asyncio.run(handle_batch(batch, wiring))

    assert outcome.uploads == [] and outcome.window_count == 0
    assert [(letter["offset"], letter["reason"], letter["value"]) for letter in producer.letters] == [
        (7, SCHEMA_VIOLATION, hollow.SerializeToString()),
        (9, SCHEMA_VIOLATION, received(device_id="").SerializeToString()),
    ]
    assert producer.letters[1]["error"] == "UploadReceived without upload.device_id"
    assert {letter["service"] for letter in producer.letters} == {SERVICE}
    assert wiring.processed == {2: 10}
    assert metrics.uploads.labels(outcome="refused")._value.get() == 2
