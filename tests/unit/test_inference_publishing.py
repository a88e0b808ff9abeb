"""Inference's handlers publish a batch's outcome in two acknowledged waves, then dead-letter failed uploads.

`publish_outcome` runs against a fake `Publisher` whose acknowledgements arrive on a later turn of the event
loop, so a wave sent before the previous one was acknowledged would show in the journal.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

from google.protobuf.message import Message
from opentelemetry import context as otel_context
from opentelemetry import trace

from michi.bus.catalog import DETECTIONS, LABEL_REQUESTS, PREDICTIONS, TRIP_SEGMENTS, TopicSpec
from michi.bus.producer import Delivery
from michi.bus.streams import Inbound
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, upload_pb2
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.domain.rollout import RateBudget
from services.inference.handlers import (
    PROCESSING_FAILED,
    BatchOutcome,
    UploadOutcome,
    publish_outcome,
)


class JournalPublisher:
    """Records what is sent, the trace it is sent in, and how many records sent before were acknowledged then."""

    def __init__(self) -> None:
        self.journal: list[tuple[str, str, str, int, int]] = []
        self.sent: list[concurrent.futures.Future[Delivery]] = []

    def _send(self, topic: str, key: str, event_id: str) -> concurrent.futures.Future[Delivery]:
        acknowledged = sum(future.done() for future in self.sent)
        trace_id = trace.get_current_span().get_span_context().trace_id
        self.journal.append((topic, key, event_id, trace_id, acknowledged))
        future: concurrent.futures.Future[Delivery] = concurrent.futures.Future()
        # Acknowledged on a later turn of the loop, as the broker would.
        asyncio.get_running_loop().call_soon(future.set_result, Delivery(topic, 0, len(self.sent)))
        self.sent.append(future)
        return future

    def publish(self, spec: TopicSpec, key: str, message: Message) -> concurrent.futures.Future[Delivery]:
        return self._send(spec.name("michi."), key, message.event_id)  # type: ignore[attr-defined]

    def dead_letter(self, inbound: Inbound, reason: str, detail: str) -> concurrent.futures.Future[Delivery]:
        return self._send("dead-letter", reason, f"{inbound.offset}: {detail}")


def inbound(offset: int, trace_id: int) -> Inbound:
    parent = trace.SpanContext(trace_id=trace_id, span_id=offset + 1, is_remote=True)
    context = trace.set_span_in_context(trace.NonRecordingSpan(parent), otel_context.Context())
    message = upload_pb2.UploadReceived(event_id=f"received-{offset}")
    return Inbound(message, f"device-{offset}", {}, "michi.uploads.v1", 0, offset, context)


def request(event_id: str, window_id: str) -> labels_pb2.LabelRequest:
    return labels_pb2.LabelRequest(event_id=event_id, lineage=common_pb2.Lineage(window_id=window_id))


def outcome_of(name: str, *, failure: str | None = None, skipped: str | None = None) -> UploadOutcome:
    device, trip = f"device-{name}", f"trip-{name}"
    return UploadOutcome(
        upload_id=name,
        device_id=device,
        trip_id=trip,
        predictions=[inference_pb2.Prediction(event_id=f"{name}-prediction")],
        shadow_predictions=[inference_pb2.Prediction(event_id=f"{name}-shadow-prediction")],
        detections=[inference_pb2.Detection(event_id=f"{name}-detection")],
        label_requests=[request(f"{name}-uncertain", f"{name}-window-1")],
        disagreement_requests=[request(f"{name}-disagreement", f"{name}-window-2")],
        segment=inference_pb2.TripSegment(event_id=f"{name}-segment"),
        failure=failure,
        skipped_reason=skipped,
    )


def test_outputs_go_out_in_acknowledged_waves_inside_each_uploads_trace() -> None:
    publisher, metrics = JournalPublisher(), InferenceMetrics()
    batch = [inbound(10, trace_id=0xA), inbound(11, trace_id=0xB), inbound(12, trace_id=0xC)]
    outcome = BatchOutcome(
        [outcome_of("a"), outcome_of("b", failure="ValueError: broken"), outcome_of("c", skipped="too-few-samples")],
        window_count=3,
        onnx_seconds=0.0,
    )
    # Room for one disagreement request: the first upload's goes out, the others are held back.
    budget = RateBudget(1.0, burst=1.0)

    asyncio.run(publish_outcome(batch, outcome, publisher, budget=budget, clock=lambda: 100.0, metrics=metrics))

    predictions, detections = PREDICTIONS.name("michi."), DETECTIONS.name("michi.")
    requests, segments = LABEL_REQUESTS.name("michi."), TRIP_SEGMENTS.name("michi.")
    first_wave = [
        (predictions, "device-a", "a-prediction", 0xA),
        (predictions, "device-a", "a-shadow-prediction", 0xA),
        (detections, "trip-a", "a-detection", 0xA),
        (requests, "a-window-1", "a-uncertain", 0xA),
        (requests, "a-window-2", "a-disagreement", 0xA),
    ]
    for name, trace_id in (("b", 0xB), ("c", 0xC)):
        first_wave += [
            (predictions, f"device-{name}", f"{name}-prediction", trace_id),
            (predictions, f"device-{name}", f"{name}-shadow-prediction", trace_id),
            (detections, f"trip-{name}", f"{name}-detection", trace_id),
            (requests, f"{name}-window-1", f"{name}-uncertain", trace_id),
        ]
    second_wave = [
        (segments, f"trip-{name}", f"{name}-segment", trace_id)
        for name, trace_id in (("a", 0xA), ("b", 0xB), ("c", 0xC))
    ]
    # The failed upload's dead letter is sent outside any upload's span (trace id 0), after its segment.
    dead_letters = [("dead-letter", PROCESSING_FAILED, "11: ValueError: broken", 0)]
    assert [entry[:4] for entry in publisher.journal] == first_wave + second_wave + dead_letters

    # The first wave goes out at once; segments only once all of it was acknowledged; the dead letter once
    # every segment was too.
    acknowledged = [entry[4] for entry in publisher.journal]
    first, second = len(first_wave), len(first_wave) + len(second_wave)
    assert acknowledged[:first] == [0] * first
    assert acknowledged[first:second] == [first] * len(second_wave)
    assert acknowledged[second:] == [second]
    assert all(future.done() for future in publisher.sent)

    shadow_requests = metrics.shadow_label_requests
    assert shadow_requests.labels(outcome="published")._value.get() == 1
    assert shadow_requests.labels(outcome="rate-limited")._value.get() == 2
