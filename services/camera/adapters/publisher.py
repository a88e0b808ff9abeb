"""Detections and their review requests out, media items parked, through the service's one `EventProducer`, each awaited."""

from __future__ import annotations

from collections.abc import Sequence

from michi.bus.catalog import DETECTIONS, LABEL_REQUESTS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import inference_pb2, labels_pb2
from services.camera.adapters.store import StoredMedia

SERVICE = "camera"
ACK_TIMEOUT_S = 30.0


class KafkaDetections:
    """Publishes detections keyed by trip_id (like inference's) and waits for every acknowledgement."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def publish(self, detections: Sequence[inference_pb2.Detection]) -> None:
        pending = [self.producer.publish(DETECTIONS, detection.lineage.trip_id, detection) for detection in detections]
        for future in pending:
            future.result(ACK_TIMEOUT_S)


class KafkaReviewRequests:
    """Publishes camera detections' review requests keyed by window_id (the label-requests key) and waits for
    every acknowledgement."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def publish(self, requests: Sequence[labels_pb2.LabelRequest]) -> None:
        pending = [self.producer.publish(LABEL_REQUESTS, request.lineage.window_id, request) for request in requests]
        for future in pending:
            future.result(ACK_TIMEOUT_S)


class KafkaDeadLetters:
    """Parks a stored media item on the dead letters with its original bytes and where it was read."""

    def __init__(self, producer: EventProducer) -> None:
        self.producer = producer

    def send(self, media: StoredMedia, reason: str, detail: str) -> None:
        self.producer.dead_letter(
            service=SERVICE,
            source_topic=media.topic,
            partition=media.partition,
            offset=media.offset,
            key=None,
            value=media.message,
            headers={},
            reason=reason,
            error=detail,
        ).result(ACK_TIMEOUT_S)
