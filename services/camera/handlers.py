"""What the camera service does with each media item and upload: keep both sides of the join, analyse a media item
once its upload is there, publish its detections, settle it; and keep the join within its bounds.

    joiner = MediaJoin(store=..., frames=..., analyses=..., publisher=..., dead_letters=..., metrics=..., bounds=...)
    joiner.media(message, source)     # a MediaReceived: kept; analysed now if its upload is known
    joiner.upload(message)            # an UploadReceived: kept; its waiting media analysed now
    joiner.enforce_bounds()           # after a batch: expire what waited too long, forget old rows

An item is analysed in the order: read and decode its frames; load its stream's state (a driver's inward camera,
a device's outward camera); run the analysis; publish the detections and wait for the broker's acks; then, in one
transaction, mark the item done and write the stream's new state. A crash anywhere before that transaction leaves
the item waiting and the state as it was: when Kafka redelivers the item (or its upload), it is analysed again from
the same state and publishes the same event ids, which consumers deduplicate. A redelivery after it changes
nothing: the item is settled, the upload already kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from google.protobuf.message import DecodeError

from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, upload_pb2
from michi.vision.camera_events import CameraEvent, Frame
from services.camera.adapters.frames import DecodedFrame, MediaUnreadable
from services.camera.adapters.metrics import CameraMetrics
from services.camera.adapters.store import WAITING, CameraStore, StoredMedia
from services.camera.domain.detections import camera_detection
from services.camera.domain.join import (
    UploadFacts,
    camera_of,
    media_order,
    media_problem,
    stream_of,
    upload_facts,
    upload_problem,
)
from services.camera.domain.review import ReviewSampling, review_request

logger = logging.getLogger(__name__)


class Rejection(Exception):
    """A message that cannot join (dead letters with `reason`)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Source:
    """Where a record was read: what a dead letter of it names."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class JoinBounds:
    """How long and how many of each side the join keeps (docs/camera.md, *Bounds*)."""

    # A media item waits this long for its upload, then goes to dead letters (`upload-not-arrived`).
    media_wait_s: float = 3600.0
    # At most this many media items wait at once: beyond it the oldest go to dead letters (`waiting-limit`).
    max_waiting_media: int = 10_000
    # An upload is kept this long for media that come after it, and at most this many (the oldest go first).
    upload_retention_s: float = 3600.0
    max_uploads: int = 200_000
    # A settled media item is remembered this long (redeliveries and re-announcements change nothing), at most
    # this many.
    settled_retention_s: float = 7 * 86400.0
    max_settled_media: int = 500_000
    # A stream's analysis state not updated for this long is forgotten (the driver's baseline starts again).
    stream_retention_s: float = 7 * 86400.0
    # Bounds are enforced after a batch at most this often.
    interval_s: float = 10.0


class FrameSource(Protocol):
    def read(self, media: upload_pb2.MediaReceived) -> list[DecodedFrame]: ...


class Analyses(Protocol):
    def run(
        self,
        camera: str,
        state: dict[str, Any] | None,
        frames: Sequence[Frame],
        optics: upload_pb2.CameraOptics | None,
        speed_mps_at: Callable[[int], float | None],
    ) -> tuple[list[CameraEvent], dict[str, Any]]: ...

    def lineage(self, camera: str) -> Any: ...


class DetectionPublisher(Protocol):
    def publish(self, detections: Sequence[inference_pb2.Detection]) -> None:
        """Publish and wait until the broker acknowledged every one (raise otherwise)."""


class ReviewRequests(Protocol):
    def publish(self, requests: Sequence[labels_pb2.LabelRequest]) -> None:
        """Publish and wait until the broker acknowledged every one (raise otherwise)."""


class DeadLetters(Protocol):
    def send(self, media: StoredMedia, reason: str, detail: str) -> None:
        """Park a stored media item with its original bytes (wait for the acknowledgement; raise otherwise)."""


class MediaJoin:
    def __init__(
        self,
        *,
        store: CameraStore,
        frames: FrameSource,
        analyses: Analyses,
        publisher: DetectionPublisher,
        dead_letters: DeadLetters,
        metrics: CameraMetrics,
        bounds: JoinBounds,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
        reviews: ReviewRequests | None = None,
        review_sampling: ReviewSampling | None = None,
    ) -> None:
        self.store = store
        self.frames = frames
        self.analyses = analyses
        self.publisher = publisher
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.bounds = bounds
        self.now = now
        self.clock = clock
        # Where each detection's review request goes (docs/camera.md, *Review*); None: nobody is asked.
        self.reviews = reviews
        # Which detections are asked for (a hash of the event id against a share): every one by default.
        self.review_sampling = review_sampling or ReviewSampling()
        self._bounds_checked_at: float | None = None

    # --- the two sides

    def media(self, message: upload_pb2.MediaReceived, source: Source) -> None:
        problem = media_problem(message)
        if problem is not None:
            raise Rejection("schema-violation", problem)
        kept = self.store.keep_media(
            event_id=message.event_id,
            upload_id=message.upload_id,
            device_id=message.lineage.device_id,
            name=message.name,
            message=message.SerializeToString(),
            topic=source.topic,
            partition=source.partition,
            offset=source.offset,
            now=self.now(),
        )
        stored = self.store.media(message.event_id)
        if stored is None:  # forgotten between the two statements (its bound): nothing to do
            return
        if kept:
            self.metrics.media_received.labels(camera_of(message) or "unspecified").inc()
        elif stored.status != WAITING:
            self.metrics.duplicates.labels("media").inc()
            return
        upload = self.store.upload(message.upload_id)
        if upload is not None:
            self._analyse(stored, upload)

    def upload(self, message: upload_pb2.UploadReceived) -> None:
        problem = upload_problem(message)
        if problem is not None:
            raise Rejection("schema-violation", problem)
        facts = upload_facts(message)
        if self.store.keep_upload(facts, self.now()):
            self.metrics.uploads_received.inc()
        else:
            self.metrics.duplicates.labels("upload").inc()
            # Still look for waiting media: a crash may have come between keeping the upload and analysing them.
            facts = self.store.upload(facts.upload_id) or facts
        waiting = self.store.waiting_media(facts.upload_id)
        for stored in sorted(waiting, key=lambda item: media_order(_message(item))):
            self._analyse(stored, facts)

    # --- one media item

    def _analyse(self, stored: StoredMedia, upload: UploadFacts) -> None:
        media = _message(stored)
        if media.lineage.device_id != upload.device_id:
            self._dead_letter(
                stored, "device-mismatch", f"media of device {media.lineage.device_id}, upload of {upload.device_id}"
            )
            return
        camera = camera_of(media)
        if camera is None:
            self._dead_letter(stored, "camera-unspecified", f"{media.name}: neither inward nor outward")
            return
        started = self.clock()
        try:
            decoded = self.frames.read(media)
        except MediaUnreadable as unreadable:
            self._dead_letter(stored, unreadable.reason, unreadable.detail)
            return
        self.metrics.decode_seconds.observe(self.clock() - started)
        # Stream time (epoch ms): the analysis follows one stream across uploads.
        frames = [Frame(upload.started_at_ms + frame.offset_ms, frame.image) for frame in decoded]
        stream = stream_of(camera, upload)
        saved = self.store.stream(stream)
        first_ms = min(frame.offset_ms for frame in frames)
        in_order = saved is None or first_ms > saved.last_frame_ms
        if not in_order:
            # Older than what the stream's state has seen (it came late, or waited for its upload): its frames
            # are analysed on their own, and the stream's state is left as it is.
            self.metrics.out_of_order.labels(camera).inc()
        started = self.clock()
        events, state = self.analyses.run(
            camera,
            saved.state if saved is not None and in_order else None,
            frames,
            media.optics if media.HasField("optics") else None,
            upload.speed_at,
        )
        self.metrics.analysis_seconds.labels(camera).observe(self.clock() - started)
        lineage = self.analyses.lineage(camera)
        item_frames = sorted(frame.offset_ms for frame in frames)
        detections = [
            camera_detection(
                kind=str(event.kind),
                started_ms=event.started_ms,
                ended_ms=event.ended_ms,
                confidence=event.confidence,
                peak_value=event.peak_value,
                evidence_ms=_evidence_in_item(event.frame_offsets_ms, item_frames),
                figures=event.figures,
                upload=upload,
                media=media,
                model_name=lineage.model_name,
                model_version=lineage.model_version,
                data_version=lineage.data_version,
            )
            for event in events
        ]
        # Decided from each detection's event id, type and confidence alone: analysing the item again (a crash
        # before it was settled, a redelivery) asks for the same detections.
        asked = (
            {detection.event_id for detection in detections if self.review_sampling.asks_for(detection)}
            if self.reviews is not None
            else set()
        )
        if detections:
            self.publisher.publish(detections)
            # Like the detections, before the item is settled: a crash in between publishes the same ids again.
            if self.reviews is not None and asked:
                self.reviews.publish(
                    [review_request(detection, media) for detection in detections if detection.event_id in asked]
                )
        last_frame_ms = max(item_frames)
        finished = self.store.finish(
            stored.event_id,
            detections=len(detections),
            now=self.now(),
            stream=stream if in_order else None,
            state=state if in_order else None,
            last_frame_ms=max(last_frame_ms, saved.last_frame_ms if saved is not None else 0),
        )
        if not finished:
            return
        self.metrics.media_analysed.labels(camera).inc()
        self.metrics.frames_analysed.labels(camera).inc(len(frames))
        for detection in detections:
            event_type = common_pb2.EventType.Name(detection.event_type)
            self.metrics.detections.labels(event_type).inc()
            if self.reviews is not None:
                decision = "reviewed" if detection.event_id in asked else "skipped"
                self.metrics.review_decisions.labels(event_type, decision).inc()

    def _dead_letter(self, stored: StoredMedia, reason: str, detail: str) -> None:
        self.dead_letters.send(stored, reason, detail)
        if self.store.dead_lettered(stored.event_id, reason, self.now()):
            self.metrics.media_dead_lettered.labels(reason).inc()

    # --- bounds

    def enforce_bounds(self) -> None:
        """Expire media that waited too long (dead letters), forget rows past their age or count (at most every
        `interval_s`)."""
        moment = self.clock()
        if self._bounds_checked_at is not None and moment - self._bounds_checked_at < self.bounds.interval_s:
            return
        self._bounds_checked_at = moment
        now = self.now()
        bounds = self.bounds
        while True:
            expired = self.store.oldest_waiting(received_before=now - timedelta(seconds=bounds.media_wait_s))
            for stored in expired:
                waited = (now - _aware(stored.received_at)).total_seconds()
                self._dead_letter(stored, "upload-not-arrived", f"upload {stored.upload_id} not seen in {waited:.0f} s")
            if len(expired) < 100:
                break
        excess = self.store.waiting_count() - bounds.max_waiting_media
        while excess > 0:
            batch = self.store.oldest_waiting(limit=min(excess, 100))
            if not batch:
                break
            for stored in batch:
                self._dead_letter(
                    stored, "waiting-limit", f"{bounds.max_waiting_media} media items already wait for their uploads"
                )
            excess -= len(batch)
        forgotten = {
            "uploads": self.store.forget_uploads(
                received_before=now - timedelta(seconds=bounds.upload_retention_s), keep_newest=bounds.max_uploads
            ),
            "settled": self.store.forget_settled(
                settled_before=now - timedelta(seconds=bounds.settled_retention_s),
                keep_newest=bounds.max_settled_media,
            ),
            "streams": self.store.forget_streams(updated_before=now - timedelta(seconds=bounds.stream_retention_s)),
        }
        for kind, count in forgotten.items():
            if count:
                self.metrics.forgotten.labels(kind).inc(count)
        for kind, count in self.store.counts().items():
            self.metrics.rows.labels(kind).set(count)


def _message(stored: StoredMedia) -> upload_pb2.MediaReceived:
    message = upload_pb2.MediaReceived()
    try:
        message.ParseFromString(stored.message)
    except DecodeError as error:  # written by this service from a decoded message: not expected
        raise RuntimeError(f"stored media {stored.event_id} is not a MediaReceived") from error
    return message


def _evidence_in_item(evidence_ms: Sequence[int], item_frames: Sequence[int]) -> tuple[int, ...]:
    """The evidence frames this media item holds (an episode may have begun in an earlier item); at least one."""
    held = set(item_frames)
    inside = tuple(offset for offset in evidence_ms if offset in held)
    if inside:
        return inside
    nearest = min(item_frames, key=lambda offset: abs(offset - (evidence_ms[-1] if evidence_ms else offset)))
    return (nearest,)


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive times (stored as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
