"""What inference does with a batch of uploads: decide what each yields, then publish it in order.

    usable = await refuse_unattributable(batch, publisher, metrics)   # dead letters, awaited
    outcome = process_uploads(uploads, states, pipeline)              # pure: the agent, benchmarks, `michi evaluate`
    await publish_outcome(usable, outcome, publisher, budget=budget, clock=clock, metrics=metrics)
    record_outcome(outcome, metrics, len(usable), seconds)

`uploads` are decoded `UploadReceived` messages in partition order, `states` maps device_id to
its `DeviceState` (updated in place), `pipeline` holds the served models (champion, optional
shadow, the arms of a split rollout and how devices are routed to them, earlier versions kept for
replays) and the road map. The outcome lists, per upload, the
protobufs to publish — predictions, detections, label requests, shadow predictions, shadow
disagreement requests and exactly one trip segment — and `process_uploads` does no I/O, so the
same input always gives the same ids and counts.

Every effect goes through the `Publisher` port (`michi.bus.streams.StreamPublisher`, filled in by
`wiring`): `publish_outcome` sends in two waves, each awaited before the next — (1) every upload's
predictions (champion, then shadow), detections and label requests (shadow disagreement requests
within the per-minute `RateBudget`), (2) each upload's `TripSegment`, so a segment never precedes
its detections — then dead-letters the uploads that failed (their segment was still published).
Each upload's outputs are sent inside a span continuing its trace. The entrypoint writes the
device states only after this returns, then acknowledges.

Three phases so ONNX Runtime sees the whole batch at once: (1) calibrate and extract features
per upload (per device in order) and pick the models of each upload, (2) one `session.run` over
every window of the batch per model (normally one champion run, plus one shadow run),
(3) decide, merge and track speeding per upload (per device in order).

Models per upload: a new upload is handled by its device's serving arm and, if the shadow covers
the device, by the shadow (`InferencePipeline.routing`: for a plan with a rollout id, a sticky hash of
rollout id and device id, `michi.rollouts.assignment.TrafficSplit`; without one, the champion serves
and the shadow scores every device). The serving arm's model does everything the champion does —
predictions, detections, label requests, the decision rule, episode merging, the device state — and
its outputs carry its variant (CHAMPION, CANARY or TREATMENT) and the rollout id. A redelivered
one (in the device's replay memory) is handled by the versions recorded when it was first
processed, if they are still loaded (`InferencePipeline.earlier`), so a redelivery after a hot
swap reproduces the same outputs. One that has left the replay memory but is among the device's last
processed uploads (`DeviceState.processed_earlier`: a crash's redelivery of a long burst) yields nothing
again (`UploadOutcome.already_processed`), not even its segment. Detection ids are derived from the window, the event type and
the model *name*, not its version: should a recorded version be gone (after a restart), the
current model's detection of the same event still gets the same id.

Shadow: the shadow model scores the same windows; its outputs are `Prediction`s with variant
SHADOW and, where the champion and the shadow disagree on a risky class, `LabelRequest`s with
reason SHADOW_DISAGREEMENT (a few per upload, strongest first). It never yields a detection and
never touches the trip segment, so nothing of it reaches scoring; a failing shadow run leaves the
champion's outputs as they are.

Calibration: each device's `CalibrationSums` are folded over its uploads in order and stored in its state. An
upload a device running the edge bundle sends in full carries the device's own sums from before it
(`Upload.device_calibration`, docs/edge.md): it is folded from those instead of the stored ones (a redelivery
too, so it reproduces the same outputs), and the result is stored as the device's sums like any upload's.

Hindsight (`services.inference.domain.hindsight`): a new upload decided while its device's mount had gravity but
no forward axis, with a window that may hold an event whatever the forward axis, is held in the device's state
(its `UploadReceived`, bounded by count, bytes and age). The first upload decided with the mount `calibrated`
afterwards (and not reporting it moved) re-runs the held uploads: their windows cut again with its calibration
(the sums are not folded again), scored in a run of their own of the serving arm's model (once per mount
session, so outside the batch's run), the same decision rule and episode merging, and the ids serving would
have given them. What it finds is emitted as `Detection`s with
`hindsight` set (`UploadOutcome.hindsight_detections`, published with the first wave under their own trip),
never in the upload's segment; no predictions or label requests are made again. A moved mount empties the
store (but for the upload held while the mount was in question, which saw the new mount: `HeldUpload.saw_mount`;
and, for a mount turned round, the trip's held uploads), using it too. The upload in which gravity first moves
(a phone remounted between trips) is read with its own gravity and no forward axis
(`Calibration.mount_in_question`), so held like any gravity-only one. A replay recomputes from a snapshot without
the store, so it never re-runs them; a fresh processing after a crash (the state not written) finds the store as
it was and yields the same detections.

Degenerate uploads (no usable IMU: too few samples, arrays of unequal length, offsets not
increasing, non-finite values) are skipped with a reason — no windows, but still their
`TripSegment`, so scoring can close the trip. Whether a risky window may become a detection
is `michi.windows.model_spec.detection_allowed`, the same for every model: with a calibrated
mount the IMU alone is enough (no GPS needed); with gravity known but not forward, only windows
GPS corroborates; with neither, none (uncertain windows still go to people). Every prediction
and detection carries the calibration it was made with and whether GPS was there. An upload
whose processing raises is reported as failed (the agent dead-letters it) and still gets its
segment.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np
from google.protobuf.message import Message

from michi.bus.catalog import DETECTIONS, LABEL_REQUESTS, PREDICTIONS, TRIP_SEGMENTS, TopicSpec
from michi.bus.producer import PendingDelivery, wait_for_deliveries
from michi.bus.tracing import resumed_span
from michi.contracts import stable_event_id, timestamp_from_seconds, timestamp_to_seconds
from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, upload_pb2
from michi.edge.calibration_state import device_calibration
from michi.rollouts.assignment import TrafficSplit
from michi.windows.calibration import Calibration, CalibrationSums, update_calibration
from michi.windows.features import (
    FEATURE_INDEX,
    FEATURE_NAMES,
    PACKED_FEATURE_TYPE,
    SIGNAL_CHANNELS,
    SIGNAL_STEPS,
    WINDOW_SECONDS,
    UploadWindows,
    empty_windows,
    extract_windows,
    pack_features,
    window_id,
)
from michi.windows.model_spec import (
    CLASS_EVENT_TYPES,
    DECISION_THRESHOLD,
    RISKY_EVENT_TYPES,
    calibration_summary,
    detection_allowed,
)
from michi.windows.upload import UploadData, upload_from_proto
from services.inference.domain.episodes import Episode, OpenEpisode, merge_windows
from services.inference.domain.hindsight import HeldUpload, pack_upload, unpack_upload, worth_holding
from services.inference.domain.rollout import RateBudget, variant_label
from services.inference.domain.speeding import (
    RULE_NAME,
    RULE_VERSION,
    SpeedingEpisode,
    SpeedLimits,
    road_map_version,
    speed_limits_of,
    track_speeding,
)
from services.inference.domain.state import DeviceState, ModelsUsed

if TYPE_CHECKING:
    # Typing only: the pure pipeline is imported by `michi evaluate` and the trainer, which need no faust.
    from michi.bus.streams import Inbound
    from services.inference.adapters.metrics import InferenceMetrics

logger = logging.getLogger(__name__)

SERVICE = "inference"
# Dead-letter reasons of this service (besides the decoder's).
SCHEMA_VIOLATION = "schema-violation"
PROCESSING_FAILED = "processing-failed"

RISKY_COLUMNS = [index for index, event_type in enumerate(CLASS_EVENT_TYPES) if event_type in RISKY_EVENT_TYPES]
# Random QA requests rank below every uncertain one (those run 0-100 by closeness to the threshold).
QA_PRIORITY = 0


def qa_sampled(window_id: str, rate: float) -> bool:
    """Whether a window is sampled for random QA: a hash of its id against `rate`."""
    if rate <= 0.0:
        return False
    digest = hashlib.blake2b(window_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


PEAK_FEATURE = {
    common_pb2.EVENT_TYPE_HARSH_BRAKING: ("longitudinal_min_mps2", -1.0),
    common_pb2.EVENT_TYPE_HARSH_ACCELERATION: ("longitudinal_max_mps2", 1.0),
    common_pb2.EVENT_TYPE_HARSH_CORNERING: ("lateral_abs_max_mps2", 1.0),
}


class Detector(Protocol):
    model_name: str
    model_version: str
    data_version: str

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """Class probabilities [N, 5] for features [N, F] and signals [N, C, T] (float32, same N)."""
        ...


@dataclass
class ReportedModel:
    """The model a device decided with (an events-only upload's `edge.model`): named, never run here."""

    model_name: str
    model_version: str
    data_version: str

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        raise RuntimeError(f"{self.model_name} {self.model_version} ran on the device: its calls are not rescored")


def reported_model(edge: upload_pb2.EdgeReport) -> ReportedModel:
    return ReportedModel(edge.model.name, edge.model.version, edge.model.data_version)


class Publisher(Protocol):
    """The port every effect of a batch goes through (`michi.bus.streams.StreamPublisher`).

    Both send at once, inside the caller's current span (its trace context goes into the headers), and
    return a future that settles when the broker acknowledged the record (acks=all).
    """

    def publish(self, spec: TopicSpec, key: str, message: Message) -> PendingDelivery: ...

    def dead_letter(self, inbound: Inbound, reason: str, detail: str) -> PendingDelivery:
        """`inbound`'s message to the dead letters, with where it came from and why."""
        ...


@dataclass(frozen=True)
class ArmModel:
    """A serving arm's loaded model and the variant its outputs carry."""

    detector: Detector
    variant: inference_pb2.Variant


@dataclass(frozen=True)
class Routing:
    """How a plan with a rollout id routes devices: the split, and the model of each serving arm.

    Arms are named by model version in the split (`services.inference.domain.rollout.arms_of`); the
    split's shadow, if any, is the pipeline's `shadow`, scoring the devices its share covers.
    """

    split: TrafficSplit
    arms: Mapping[str, ArmModel]

    @property
    def rollout_id(self) -> str:
        return self.split.rollout_id


@dataclass(frozen=True)
class InferencePipeline:
    detector: Detector
    road_map: SpeedLimits | None
    # Windows whose best risky probability is within this of the threshold go to people.
    uncertainty_band: float = 0.15
    variant: inference_pb2.Variant = inference_pb2.VARIANT_CHAMPION
    # Scores the same windows; its outputs never reach scoring.
    shadow: Detector | None = None
    # Other loaded versions of the model, by version: redelivered uploads are replayed with them.
    earlier: Mapping[str, Detector] = field(default_factory=dict)
    # At most this many shadow disagreement label requests per upload (the strongest).
    shadow_requests_per_upload: int = 2
    # Share of all windows sent to people anyway (random QA, uncertain ones included), chosen by window id so a replay
    # picks the same windows.
    qa_sample_rate: float = 0.005
    # A plan with a rollout id: which arm serves each device (None: `detector` serves every device as
    # `variant`, and `shadow` scores every device).
    routing: Routing | None = None

    def detector_for(self, version: str) -> Detector | None:
        """The loaded model of this version, if any."""
        if self.detector.model_version == version:
            return self.detector
        if self.shadow is not None and self.shadow.model_version == version:
            return self.shadow
        if self.routing is not None and version in self.routing.arms:
            return self.routing.arms[version].detector
        return self.earlier.get(version)

    def route(self, device_id: str) -> tuple[Detector, inference_pb2.Variant, Detector | None, str]:
        """The model serving this device, its variant, the shadow if it covers the device, the rollout id."""
        if self.routing is None:
            return self.detector, self.variant, self.shadow, ""
        route = self.routing.split.route(device_id)
        arm = self.routing.arms[route.arm]
        return arm.detector, arm.variant, self.shadow if route.shadows else None, self.routing.rollout_id


@dataclass
class UploadOutcome:
    upload_id: str
    device_id: str
    trip_id: str
    predictions: list[inference_pb2.Prediction] = field(default_factory=list)
    detections: list[inference_pb2.Detection] = field(default_factory=list)
    label_requests: list[labels_pb2.LabelRequest] = field(default_factory=list)
    segment: inference_pb2.TripSegment = field(default_factory=inference_pb2.TripSegment)
    skipped_reason: str | None = None
    failure: str | None = None
    replayed: bool = False
    calibration_confidence: float | None = None
    orientation_changed: bool = False
    # Shadow outputs: predictions (variant SHADOW) and disagreement label requests (rate-bounded by the caller).
    shadow_predictions: list[inference_pb2.Prediction] = field(default_factory=list)
    disagreement_requests: list[labels_pb2.LabelRequest] = field(default_factory=list)
    # Windows where champion and shadow disagreed on a risky class (before the per-upload cap).
    shadow_disagreements: int = 0
    # A replay whose recorded champion version is no longer loaded (the current one handled it).
    replay_model_missing: str | None = None
    # The arm that served the upload: its variant and model version (None: nothing was decided).
    variant: inference_pb2.Variant | None = None
    model_version: str | None = None
    # Detections of earlier uploads decided again now that the mount is calibrated (`Detection.hindsight`):
    # published under their own trip, not in this upload's segment.
    hindsight_detections: list[inference_pb2.Detection] = field(default_factory=list)
    # The traceparent each held upload's record carried, by upload id: its hindsight detections continue its trace.
    held_trace_parents: dict[str, str] = field(default_factory=dict)
    # Why re-running the held uploads failed (they stay held for the next calibrated upload).
    hindsight_failure: str | None = None
    # Processed and published before, and gone from the replay memory since: nothing is published again, not
    # even its segment (`DeviceState.processed_earlier`).
    already_processed: bool = False


@dataclass
class BatchOutcome:
    uploads: list[UploadOutcome]
    window_count: int
    onnx_seconds: float
    shadow_seconds: float = 0.0
    shadow_failure: str | None = None


@dataclass
class _Models:
    # The serving arm's model (the champion, unless a split routed the device to another arm).
    champion: Detector
    shadow: Detector | None
    # The recorded serving version that is no longer loaded, if so.
    missing: str | None = None
    variant: inference_pb2.Variant = inference_pb2.VARIANT_CHAMPION
    rollout_id: str = ""

    @property
    def used(self) -> ModelsUsed:
        shadow = self.shadow.model_version if self.shadow else None
        return ModelsUsed(self.champion.model_version, shadow, int(self.variant), self.rollout_id)


def _current_models(pipeline: InferencePipeline, device_id: str) -> _Models:
    detector, variant, shadow, rollout_id = pipeline.route(device_id)
    return _Models(detector, shadow, variant=variant, rollout_id=rollout_id)


@dataclass
class _Pending:
    received: upload_pb2.UploadReceived
    data: UploadData | None
    replay: bool
    calibration_after: CalibrationSums | None
    calibration: Calibration | None
    windows: UploadWindows
    skipped_reason: str | None
    models: _Models
    failure: str | None = None
    scores: np.ndarray | None = None
    shadow_scores: np.ndarray | None = None
    # An events-only upload's report: its calls are the windows, its probabilities the scores.
    edge: upload_pb2.EdgeReport | None = None
    # Processed and published before, gone from the replay memory since (`DeviceState.processed_earlier`).
    already_processed: bool = False
    # The traceparent its record carried ('' when none), kept with it if it is held.
    trace_parent: str = ""


def recorded_versions(uploads: Sequence[upload_pb2.UploadReceived], states: Mapping[str, DeviceState]) -> set[str]:
    """Model versions the replays in this batch were first handled by (the caller makes sure they are loaded)."""
    versions: set[str] = set()
    for received in uploads:
        if received.upload.HasField("edge"):
            continue  # decided on the device: no model of this service replays it
        state = states.get(received.upload.device_id)
        used = state.models_used(received.upload.upload_id) if state is not None else None
        if used is not None:
            versions.add(used.champion)
            if used.shadow:
                versions.add(used.shadow)
    return versions


def process_uploads(
    uploads: Sequence[upload_pb2.UploadReceived],
    states: MutableMapping[str, DeviceState],
    pipeline: InferencePipeline,
    trace_parents: Sequence[str] = (),
) -> BatchOutcome:
    """Analyse a batch of uploads (in partition order); `states` is updated in place. `trace_parents`, one per
    upload when given, are the traceparents their records carried: kept with an upload that is held."""
    pending = [_prepare(received, states, chain, pipeline) for chain in [_CalibrationChain()] for received in uploads]
    for item, trace_parent in zip(pending, trace_parents, strict=False):
        item.trace_parent = trace_parent
    rows = sum(item.windows.count for item in pending)
    began = time.perf_counter()
    for detector, items in _by_model(pending, shadow=False):
        for item, scores in zip(items, _predict(detector, items), strict=True):
            item.scores = scores
    onnx_seconds = time.perf_counter() - began if rows else 0.0
    began = time.perf_counter()
    shadow_failure = None
    for detector, items in _by_model(pending, shadow=True):
        try:
            for item, scores in zip(items, _predict(detector, items), strict=True):
                item.shadow_scores = scores
        except Exception as error:  # the shadow must never disturb the champion's outputs
            shadow_failure = f"{detector.model_version}: {type(error).__name__}: {error}"
            logger.exception("shadow model failed", extra={"model_version": detector.model_version})
    shadow_seconds = time.perf_counter() - began if pipeline.shadow is not None else 0.0
    outcomes = []
    for item in pending:
        try:
            outcomes.append(_decide(item, states, pipeline))
        except Exception as error:  # one bad upload must not stop the batch
            logger.exception("upload decision failed", extra={"upload_id": item.received.upload.upload_id})
            outcomes.append(_failed(item, f"{type(error).__name__}: {error}", pipeline))
    return BatchOutcome(outcomes, rows, onnx_seconds, shadow_seconds, shadow_failure)


def upload_problem(received: upload_pb2.UploadReceived) -> str | None:
    """Why an `UploadReceived` cannot be analysed at all (None: it can).

    Without its upload, device and trip ids nothing it yields could be attributed: no device state to
    chain, and a trip segment keyed by nothing that scoring would refuse in turn. Ingest never
    publishes one; anything else that does is dead-lettered, before the pipeline sees it.
    """
    upload = received.upload
    missing = [
        name
        for name, value in (
            ("upload.upload_id", upload.upload_id),
            ("upload.device_id", upload.device_id),
            ("upload.trip_id", upload.trip_id),
        )
        if not value
    ]
    return f"UploadReceived without {', '.join(missing)}" if missing else None


async def refuse_unattributable(
    batch: Sequence[Inbound], publisher: Publisher, metrics: InferenceMetrics
) -> list[Inbound]:
    """Dead-letter (`schema-violation`, awaited) the uploads of `batch` that cannot be analysed; return the others."""
    usable, letters = [], []
    for inbound in batch:
        problem = upload_problem(cast(upload_pb2.UploadReceived, inbound.message))
        if problem is None:
            usable.append(inbound)
            continue
        letters.append(publisher.dead_letter(inbound, SCHEMA_VIOLATION, problem))
        metrics.uploads.labels(outcome="refused").inc()
    await wait_for_deliveries(letters)
    return usable


async def publish_outcome(
    batch: Sequence[Inbound],
    outcome: BatchOutcome,
    publisher: Publisher,
    *,
    budget: RateBudget,
    clock: Callable[[], float],
    metrics: InferenceMetrics,
) -> None:
    """Publish what `process_uploads` decided for `batch` (the same uploads, in the same order).

    Two waves, each acknowledged before the next starts: (1) every upload's predictions, shadow
    predictions, detections and label requests, and the shadow disagreement requests `budget` admits;
    (2) every upload's `TripSegment`, so scoring never sees a segment before its detections. Then
    the uploads whose processing failed are dead-lettered (`processing-failed`, one at a time, each
    awaited); a skipped upload is only logged. Each upload's outputs are sent inside a span continuing
    its trace, so `michi trace <upload_id>` follows it from ingest through inference to scoring.
    """
    # Imported here: the pure pipeline above is used where faust is not (see the typing import).
    from michi.bus.streams import consumer_span

    first_wave = []
    for inbound, result in zip(batch, outcome.uploads, strict=True):
        with consumer_span(inbound, SERVICE):
            first_wave += [publisher.publish(PREDICTIONS, result.device_id, message) for message in result.predictions]
            first_wave += [
                publisher.publish(PREDICTIONS, result.device_id, message) for message in result.shadow_predictions
            ]
            first_wave += [publisher.publish(DETECTIONS, result.trip_id, message) for message in result.detections]
            for upload_id, messages in itertools.groupby(
                result.hindsight_detections, key=lambda message: message.lineage.upload_id
            ):
                # Inside a span of the held upload's own trace, linked to this one.
                with resumed_span(result.held_trace_parents.get(upload_id, ""), inbound.topic, SERVICE, "hindsight"):
                    first_wave += [
                        publisher.publish(DETECTIONS, message.lineage.trip_id, message) for message in messages
                    ]
            first_wave += [
                publisher.publish(LABEL_REQUESTS, message.lineage.window_id, message)
                for message in result.label_requests
            ]
            for message in result.disagreement_requests:
                if budget.allow(clock()):
                    first_wave.append(publisher.publish(LABEL_REQUESTS, message.lineage.window_id, message))
                    metrics.shadow_label_requests.labels(outcome="published").inc()
                else:
                    metrics.shadow_label_requests.labels(outcome="rate-limited").inc()
    await wait_for_deliveries(first_wave)
    second_wave = []
    for inbound, result in zip(batch, outcome.uploads, strict=True):
        if result.already_processed:
            continue
        with consumer_span(inbound, SERVICE, "settle"):
            second_wave.append(publisher.publish(TRIP_SEGMENTS, result.trip_id, result.segment))
    await wait_for_deliveries(second_wave)
    for inbound, result in zip(batch, outcome.uploads, strict=True):
        if result.failure is not None:
            await wait_for_deliveries([publisher.dead_letter(inbound, PROCESSING_FAILED, result.failure)])
        elif result.skipped_reason is not None:
            logger.warning("upload skipped", extra={"upload_id": result.upload_id, "reason": result.skipped_reason})


def record_outcome(outcome: BatchOutcome, metrics: InferenceMetrics, uploads: int, seconds: float) -> None:
    """Count a handled batch: its size, timings, windows, and each upload's outcome and what it noticed."""
    metrics.batch_uploads.observe(uploads)
    metrics.batch_seconds.observe(seconds)
    if outcome.window_count:
        metrics.batch_windows.observe(outcome.window_count)
        metrics.onnx_seconds.observe(outcome.onnx_seconds)
        if outcome.shadow_seconds:
            metrics.shadow_seconds.observe(outcome.shadow_seconds)
    if outcome.shadow_failure is not None:
        metrics.shadow_failures.inc()
    metrics.windows.inc(outcome.window_count)
    metrics.record_rate(outcome.window_count)
    for result in outcome.uploads:
        kind = (
            "failed"
            if result.failure
            else "skipped"
            if result.skipped_reason
            else "already-processed"
            if result.already_processed
            else "replayed"
            if result.replayed
            else "processed"
        )
        metrics.uploads.labels(outcome=kind).inc()
        if result.variant is not None and result.model_version is not None:
            metrics.arm_uploads.labels(version=result.model_version, variant=variant_label(result.variant)).inc()
        for detection in result.detections:
            metrics.detection(detection.event_type)
        for detection in result.hindsight_detections:
            metrics.detection(detection.event_type)
            metrics.hindsight_detections.inc()
        if result.hindsight_failure is not None:
            logger.warning(
                "held uploads not decided again: kept for the next calibrated upload",
                extra={"upload_id": result.upload_id, "error": result.hindsight_failure},
            )
        if result.shadow_disagreements:
            metrics.shadow_disagreements.inc(result.shadow_disagreements)
        if result.replay_model_missing is not None:
            metrics.replay_model_missing.inc()
            logger.warning(
                "replayed with the current model: the recorded one is not available",
                extra={"upload_id": result.upload_id, "recorded_version": result.replay_model_missing},
            )
        if result.calibration_confidence is not None:
            metrics.calibration_confidence.observe(result.calibration_confidence)
        if result.orientation_changed:
            metrics.orientation_changes.inc()
            logger.info(
                "device mount moved: calibration restarted",
                extra={"device_id": result.device_id, "upload_id": result.upload_id},
            )


def _by_model(pending: list[_Pending], *, shadow: bool) -> list[tuple[Detector, list[_Pending]]]:
    """Items with windows grouped by the model that scores them (one group unless a replay needs another)."""
    groups: dict[int, tuple[Detector, list[_Pending]]] = {}
    for item in pending:
        detector = item.models.shadow if shadow else item.models.champion
        if detector is not None and item.windows.count and item.edge is None:
            groups.setdefault(id(detector), (detector, []))[1].append(item)
    return list(groups.values())


def _predict(detector: Detector, items: list[_Pending]) -> list[np.ndarray]:
    """One run over every window of `items`, split back per item."""
    return _predict_windows(detector, [item.windows for item in items])


def _predict_windows(detector: Detector, windows: list[UploadWindows]) -> list[np.ndarray]:
    """One run over every window of `windows` (each with at least one), split back per upload."""
    features = np.concatenate([part.features for part in windows], axis=0)
    signals = np.concatenate([part.signals for part in windows], axis=0)
    probabilities = np.asarray(detector.predict(features, signals))
    if probabilities.shape != (features.shape[0], len(CLASS_EVENT_TYPES)):
        raise ValueError(
            f"model {detector.model_version} returned shape {probabilities.shape}, "
            f"expected ({features.shape[0]}, {len(CLASS_EVENT_TYPES)})"
        )
    bounds = np.cumsum([part.count for part in windows])[:-1]
    return list(np.split(probabilities, bounds, axis=0))


class _CalibrationChain:
    """Calibration sums per device as phase 1 walks the batch (mirrors what phase 3 will store)."""

    def __init__(self) -> None:
        self.current: dict[str, CalibrationSums] = {}
        self.before: dict[str, dict[str, CalibrationSums]] = {}
        self.models: dict[str, _Models] = {}


def _models_for(recorded: ModelsUsed | None, pipeline: InferencePipeline, device_id: str) -> _Models:
    """The recorded versions and arm where still loaded; the device's current arm otherwise."""
    if recorded is None:
        return _current_models(pipeline, device_id)
    champion = pipeline.detector_for(recorded.champion)
    shadow = pipeline.detector_for(recorded.shadow) if recorded.shadow else None
    if champion is None:
        current = _current_models(pipeline, device_id)
        return replace(current, shadow=shadow, missing=recorded.champion)
    variant = cast(inference_pb2.Variant, recorded.variant)
    return _Models(champion, shadow, variant=variant, rollout_id=recorded.rollout_id)


def _prepare(
    received: upload_pb2.UploadReceived,
    states: MutableMapping[str, DeviceState],
    chain: _CalibrationChain,
    pipeline: InferencePipeline,
) -> _Pending:
    upload = received.upload
    current = _current_models(pipeline, upload.device_id)
    try:
        data = upload_from_proto(received)
    except Exception as error:
        return _Pending(
            received,
            None,
            False,
            None,
            None,
            empty_windows(),
            None,
            current,
            failure=f"{type(error).__name__}: {error}",
        )
    device = data.device_id
    stored = states.get(device) or DeviceState()
    seen = chain.before.setdefault(device, {})
    replay = True
    if upload.upload_id in seen:
        calibration_before = seen[upload.upload_id]
        models = chain.models[upload.upload_id]
    elif (earlier := stored.state_before(upload.upload_id)) is not None:
        calibration_before = earlier.calibration
        models = _models_for(stored.models_used(upload.upload_id), pipeline, device)
    elif stored.processed_earlier(upload.upload_id):
        # A redelivery (after a crash, of a burst longer than the replay memory) of an upload whose outputs went
        # out: nothing is decided or published again, and the device state is left as it is.
        return _Pending(received, data, True, None, None, empty_windows(), None, current, already_processed=True)
    else:
        replay = False
        calibration_before = chain.current.get(device, stored.calibration)
        seen[upload.upload_id] = calibration_before
        models = chain.models[upload.upload_id] = current
    if upload.HasField("edge"):
        # The device calibrated, scored and decided: its report is taken as it is, the sums stay as they were.
        # (Ingest refuses device_calibration on an upload without samples, so an events-only one has none.)
        edge = upload.edge
        windows, scores = _edge_windows(data, edge)
        edge_models = _Models(reported_model(edge), None, variant=inference_pb2.VARIANT_EDGE)
        if not replay:
            chain.models[upload.upload_id] = edge_models
        return _Pending(
            received, data, replay, calibration_before, None, windows, None, edge_models, scores=scores, edge=edge
        )
    device_sums = device_calibration(upload)
    if device_sums is not None:
        # The device's own sums from before this upload, folded over every upload it made (the cloud sees 1 in 100
        # of an events-only device's in full): the upload is folded from them, new or redelivered alike.
        calibration_before = device_sums
        if not replay:
            seen[upload.upload_id] = device_sums
    reason = data.degenerate_reason()
    if reason is not None:
        if device_sums is not None and not replay:
            chain.current[device] = device_sums  # phase 3 stores them as the device's sums: so does the chain
        return _Pending(received, data, replay, calibration_before, None, empty_windows(), reason, models)
    try:
        calibration_after, calibration = update_calibration(calibration_before, data)
        windows = extract_windows(data, calibration)
    except Exception as error:
        logger.exception("feature extraction failed", extra={"upload_id": upload.upload_id})
        return _Pending(
            received,
            data,
            replay,
            calibration_before,
            None,
            empty_windows(),
            None,
            models,
            failure=f"{type(error).__name__}: {error}",
        )
    if not replay:
        chain.current[device] = calibration_after
    return _Pending(received, data, replay, calibration_after, calibration, windows, None, models)


def _edge_windows(data: UploadData, edge: upload_pb2.EdgeReport) -> tuple[UploadWindows, np.ndarray]:
    """The windows an events-only upload sent (its calls) and their probabilities, as scoring would give them.

    Features come from each call's packed row (NaN beyond a narrower row: a device on an older feature list);
    there are no signals (nothing runs on them). Places come from the upload's GPS fixes as the cloud's windows
    take them: latitude and longitude at the window's middle, speed the mean of its start, middle and end.
    """
    calls = list(edge.calls)
    count = len(calls)
    starts = np.array([call.start_offset_s for call in calls], dtype=np.float64)
    ends = starts + WINDOW_SECONDS
    features = np.full((count, len(FEATURE_NAMES)), np.nan, dtype=np.float32)
    for position, call in enumerate(calls):
        row = np.frombuffer(call.packed_features, dtype=PACKED_FEATURE_TYPE)[: len(FEATURE_NAMES)]
        features[position, : row.size] = row
    scores = np.array([list(call.probabilities) for call in calls], dtype=np.float32).reshape(
        count, len(CLASS_EVENT_TYPES)
    )
    times = data.gps_times_s
    middle = (starts + ends) / 2.0
    if times.size:
        latitude = np.interp(middle, times, data.latitude)
        longitude = np.interp(middle, times, data.longitude)
        speed = (
            np.interp(starts, times, data.speed_mps)
            + np.interp(middle, times, data.speed_mps)
            + np.interp(ends, times, data.speed_mps)
        ) / 3.0
        heading = np.interp(middle, times, data.heading_deg)
    else:
        latitude = longitude = speed = heading = np.zeros(count)
    signals = np.zeros((count, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32)
    return UploadWindows(starts, ends, features, signals, latitude, longitude, speed, heading), scores


def _lineage(
    data: UploadData, window_id: str, model_name: str, model_version: str, data_version: str
) -> common_pb2.Lineage:
    return common_pb2.Lineage(
        upload_id=data.upload_id,
        window_id=window_id,
        trip_id=data.trip_id,
        device_id=data.device_id,
        driver_id=data.driver_id,
        model_name=model_name,
        model_version=model_version,
        data_version=data_version,
        trace_id=data.trace_id,
    )


def _span(start_s: float, end_s: float) -> common_pb2.TimeSpan:
    return common_pb2.TimeSpan(started_at=timestamp_from_seconds(start_s), ended_at=timestamp_from_seconds(end_s))


def _risky_calls(scores: np.ndarray, allowed: np.ndarray) -> list[common_pb2.EventType | None]:
    """Per window: the risky event type the decision rule calls, or None (also where not `allowed`)."""
    calls: list[common_pb2.EventType | None] = []
    for row, may in zip(scores, allowed, strict=True):
        column = int(np.argmax(row))
        event_type = CLASS_EVENT_TYPES[column]
        risky = bool(may) and event_type in RISKY_EVENT_TYPES and float(row[column]) >= DECISION_THRESHOLD
        calls.append(event_type if risky else None)
    return calls


@dataclass
class _Windows:
    """One upload's windows as the decision phase needs them."""

    data: UploadData
    windows: UploadWindows
    ids: list[str]
    starts: list[float]
    ends: list[float]
    features: list[dict[str, float]]
    # The same rows packed as `Prediction.packed_features` carries them (float32 little-endian).
    packed_features: list[bytes]
    calibration: common_pb2.CalibrationSummary
    gps_available: np.ndarray
    # Per window: whether a risky call may become a detection (`detection_allowed`).
    allowed: np.ndarray

    @classmethod
    def of(
        cls,
        data: UploadData,
        windows: UploadWindows,
        features: list[dict[str, float]],
        packed_features: list[bytes],
        calibration: common_pb2.CalibrationSummary,
        gps_available: np.ndarray,
        allowed: np.ndarray,
    ) -> _Windows:
        """An upload's windows with their ids and absolute start and end times."""
        origin = data.started_at_s
        return cls(
            data,
            windows,
            [window_id(data.upload_id, float(start)) for start in windows.starts_s],
            [origin + float(start) for start in windows.starts_s],
            [origin + float(end) for end in windows.ends_s],
            features,
            packed_features,
            calibration,
            gps_available,
            allowed,
        )


def _window_location(data: UploadData, windows: UploadWindows, position: int) -> common_pb2.GeoPoint | None:
    """Where window `position` was: its GPS position (a lone fix's for every window of an upload with one),
    or None, leaving `location` unset, when the upload carried no fix: (0, 0) is a place in the sea."""
    if data.gps_times_s.size == 0:
        return None
    return common_pb2.GeoPoint(latitude=float(windows.latitude[position]), longitude=float(windows.longitude[position]))


def _prediction(
    place: _Windows,
    position: int,
    scores: np.ndarray,
    detector: Detector,
    variant: inference_pb2.Variant,
    rollout_id: str,
) -> inference_pb2.Prediction:
    data, windows = place.data, place.windows
    column = int(np.argmax(scores[position]))
    return inference_pb2.Prediction(
        event_id=stable_event_id("prediction", place.ids[position], detector.model_version, variant),
        occurred_at=timestamp_from_seconds(place.ends[position]),
        lineage=_lineage(data, place.ids[position], detector.model_name, detector.model_version, detector.data_version),
        predicted=CLASS_EVENT_TYPES[column],
        confidence=float(scores[position, column]),
        scores=[
            inference_pb2.ClassScore(event_type=event_type, probability=float(scores[position, index]))
            for index, event_type in enumerate(CLASS_EVENT_TYPES)
        ],
        window=_span(place.starts[position], place.ends[position]),
        location=_window_location(data, windows, position),
        speed_mps=float(windows.speed_mps[position]),
        variant=variant,
        features=place.features[position],
        packed_features=place.packed_features[position],
        sample_rate_hz=round(data.sample_rate_hz),
        vehicle_type=data.vehicle_type,
        firmware_version=data.firmware_version,
        calibration=place.calibration,
        gps_available=bool(place.gps_available[position]),
        sample_rate_exact_hz=data.sample_rate_hz,
        rollout_id=rollout_id,
    )


def _decide(item: _Pending, states: MutableMapping[str, DeviceState], pipeline: InferencePipeline) -> UploadOutcome:
    data = item.data
    if data is None or item.failure is not None:
        return _failed(item, item.failure or "undecodable upload", pipeline)
    if item.already_processed:
        return UploadOutcome(data.upload_id, data.device_id, data.trip_id, replayed=True, already_processed=True)
    stored = states.get(data.device_id) or DeviceState()
    replayed_from = stored.state_before(data.upload_id)
    working = replayed_from if replayed_from is not None else stored
    snapshot = working.core()
    detector = item.models.champion
    variant, rollout_id = item.models.variant, item.models.rollout_id
    outcome = UploadOutcome(
        data.upload_id,
        data.device_id,
        data.trip_id,
        skipped_reason=item.skipped_reason,
        replayed=item.replay,
        replay_model_missing=item.models.missing,
        variant=variant,
        model_version=detector.model_version,
    )
    if item.calibration is not None:
        outcome.calibration_confidence = item.calibration.confidence
        outcome.orientation_changed = item.calibration.orientation_changed

    windows = item.windows
    gps_available = windows.features[:, FEATURE_INDEX["gps_available"]] > 0
    edge = item.edge
    if edge is None:
        features = [dict(zip(FEATURE_NAMES, (float(value) for value in row), strict=True)) for row in windows.features]
        packed = pack_features(windows.features)
        summary = calibration_summary(item.calibration)
        allowed = detection_allowed(item.calibration.state if item.calibration else "uncalibrated", gps_available)
    else:
        # The device's rows as it sent them; a narrower row (an older feature list) names only its features.
        features = [
            {name: float(value) for name, value in zip(FEATURE_NAMES, row, strict=True) if not np.isnan(value)}
            for row in windows.features
        ]
        packed = [call.packed_features for call in edge.calls]
        summary = edge.calibration
        allowed = np.ones(windows.count, dtype=bool)  # the device applied the rule with its own calibration
    place = _Windows.of(data, windows, features, packed, summary, gps_available, allowed)
    scores = item.scores if item.scores is not None else np.zeros((0, len(CLASS_EVENT_TYPES)), dtype=np.float32)
    if edge is None:
        risky_types = _risky_calls(scores, place.allowed)
    else:
        # The device's calls, not the argmax of its probabilities: it decided with its own calibration.
        risky_types = [call.event_type if call.event_type in RISKY_EVENT_TYPES else None for call in edge.calls]

    def detection_id(first_window_id: str, event_type: int) -> str:
        return _detection_id(first_window_id, event_type, detector.model_name)

    episodes, working.open_episode = merge_windows(
        trip_id=data.trip_id,
        starts_s=place.starts,
        ends_s=place.ends,
        risky_types=risky_types,
        first_window_ids=place.ids,
        detection_id=detection_id,
        open_episode=working.open_episode,
    )
    detection_of_window: dict[int, str] = {}
    for episode in episodes:
        for position in episode.window_positions:
            detection_of_window[position] = episode.detection_event_id
        if episode.new:
            outcome.detections.append(
                _model_detection(
                    place,
                    episode.event_type,
                    episode.detection_event_id,
                    episode.window_positions,
                    scores,
                    detector,
                    variant,
                    rollout_id,
                    detector_label=f"edge:{detector.model_version}" if edge is not None else None,
                )
            )

    for position in range(windows.count):
        outcome.predictions.append(_prediction(place, position, scores, detector, variant, rollout_id))
        risky_column = RISKY_COLUMNS[int(np.argmax(scores[position, RISKY_COLUMNS]))]
        risky_probability = float(scores[position, risky_column])
        if abs(risky_probability - DECISION_THRESHOLD) <= pipeline.uncertainty_band:
            outcome.label_requests.append(
                labels_pb2.LabelRequest(
                    event_id=stable_event_id("label-request", place.ids[position], detector.model_version, "uncertain"),
                    occurred_at=timestamp_from_seconds(place.ends[position]),
                    lineage=outcome.predictions[-1].lineage,
                    reason=labels_pb2.LABEL_REASON_UNCERTAIN,
                    # Closest to the threshold first.
                    priority=round(
                        100 * (1.0 - abs(risky_probability - DECISION_THRESHOLD) / max(pipeline.uncertainty_band, 1e-6))
                    ),
                    suggested=CLASS_EVENT_TYPES[risky_column],
                    confidence=risky_probability,
                    window=outcome.predictions[-1].window,
                    detection_event_id=detection_of_window.get(position, ""),
                )
            )
        # Drawn over every window, uncertain ones included, so the labels asked for at random are a random sample
        # of what the model sees (an unbiased measure of its accuracy), not of its confident windows only. An
        # events-only upload's windows are its calls, no such sample: its device's full uploads are drawn instead.
        if edge is None and qa_sampled(place.ids[position], pipeline.qa_sample_rate):
            column = int(np.argmax(scores[position]))
            outcome.label_requests.append(
                labels_pb2.LabelRequest(
                    event_id=stable_event_id("label-request", place.ids[position], detector.model_version, "random-qa"),
                    occurred_at=timestamp_from_seconds(place.ends[position]),
                    lineage=outcome.predictions[-1].lineage,
                    reason=labels_pb2.LABEL_REASON_RANDOM_QA,
                    priority=QA_PRIORITY,
                    suggested=CLASS_EVENT_TYPES[column],
                    confidence=float(scores[position, column]),
                    window=outcome.predictions[-1].window,
                    detection_event_id=detection_of_window.get(position, ""),
                )
            )

    shadow = item.models.shadow
    if shadow is not None and item.shadow_scores is not None:
        _shadow_outputs(
            outcome,
            place,
            scores,
            risky_types,
            item.shadow_scores,
            detector,
            shadow,
            pipeline,
            detection_of_window,
            rollout_id,
        )

    _track_speeding(outcome, data, working, pipeline)
    outcome.segment = _segment(data, outcome.detections, float(edge.duration_s) if edge is not None else None)
    if edge is not None:
        outcome.segment.variant = inference_pb2.VARIANT_EDGE  # the device decided: no rollout arm's exposure
    if replayed_from is None:
        _hindsight(item, outcome, working, risky_types)
        if item.calibration_after is not None:
            working.calibration = item.calibration_after
        working.remember(data.upload_id, snapshot, item.models.used)
        states[data.device_id] = working
    return outcome


def _shadow_outputs(
    outcome: UploadOutcome,
    place: _Windows,
    scores: np.ndarray,
    risky_types: list[common_pb2.EventType | None],
    shadow_scores: np.ndarray,
    champion: Detector,
    shadow: Detector,
    pipeline: InferencePipeline,
    detection_of_window: dict[int, str],
    rollout_id: str,
) -> None:
    """SHADOW predictions for every window, and disagreement requests where the risky calls differ.

    `champion` is the model of the arm serving the device (the champion, or a canary or treatment).
    """
    outcome.shadow_predictions = [
        _prediction(place, position, shadow_scores, shadow, inference_pb2.VARIANT_SHADOW, rollout_id)
        for position in range(place.windows.count)
    ]
    shadow_types = _risky_calls(shadow_scores, place.allowed)
    strength: dict[int, float] = {}
    for position, (called, other) in enumerate(zip(risky_types, shadow_types, strict=True)):
        if called == other:
            continue
        columns = [CLASS_EVENT_TYPES.index(kind) for kind in (called, other) if kind is not None]
        strength[position] = max(abs(float(scores[position, c]) - float(shadow_scores[position, c])) for c in columns)
    outcome.shadow_disagreements = len(strength)
    strongest = sorted(strength, key=lambda position: (-strength[position], position))
    for position in sorted(strongest[: pipeline.shadow_requests_per_upload]):
        prediction = outcome.predictions[position]
        outcome.disagreement_requests.append(
            labels_pb2.LabelRequest(
                event_id=stable_event_id(
                    "label-request",
                    place.ids[position],
                    champion.model_version,
                    shadow.model_version,
                    "shadow-disagreement",
                ),
                occurred_at=prediction.occurred_at,
                lineage=prediction.lineage,
                reason=labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT,
                priority=round(100 * strength[position]),
                suggested=prediction.predicted,
                confidence=prediction.confidence,
                window=prediction.window,
                alternative=outcome.shadow_predictions[position].predicted,
                detection_event_id=detection_of_window.get(position, ""),
            )
        )


def _track_speeding(
    outcome: UploadOutcome, data: UploadData, working: DeviceState, pipeline: InferencePipeline
) -> None:
    origin = data.started_at_s
    if pipeline.road_map is not None and data.gps_times_s.size:
        limits = speed_limits_of(pipeline.road_map, data.latitude, data.longitude, data.heading_deg)
        fix_ids = [stable_event_id(data.upload_id, "gps", index) for index in range(data.gps_times_s.size)]
        finished, working.speeding = track_speeding(
            trip_id=data.trip_id,
            trip_end=data.trip_end,
            fix_times_s=origin + data.gps_times_s,
            speed_mps=data.speed_mps,
            limits_mps=limits,
            latitude=data.latitude,
            longitude=data.longitude,
            fix_window_ids=fix_ids,
            open_episode=working.speeding,
        )
        outcome.detections.extend(
            _speeding_detection(data, episode, road_map_version(pipeline.road_map)) for episode in finished
        )
    elif data.trip_end and working.speeding is not None:
        finished, working.speeding = track_speeding(
            trip_id=data.trip_id,
            trip_end=True,
            fix_times_s=np.zeros(0),
            speed_mps=np.zeros(0),
            limits_mps=np.zeros(0),
            latitude=np.zeros(0),
            longitude=np.zeros(0),
            fix_window_ids=[],
            open_episode=working.speeding,
        )
        outcome.detections.extend(
            _speeding_detection(data, episode, road_map_version(pipeline.road_map)) for episode in finished
        )


def _model_detection(
    place: _Windows,
    event_type: int,
    event_id: str,
    positions: list[int],
    scores: np.ndarray,
    detector: Detector,
    variant: inference_pb2.Variant,
    rollout_id: str,
    *,
    detector_label: str | None = None,
) -> inference_pb2.Detection:
    data, windows = place.data, place.windows
    kind = cast(common_pb2.EventType, event_type)
    column = CLASS_EVENT_TYPES.index(kind)
    feature_name, sign = PEAK_FEATURE[kind]
    # NaN (a feature an older device's row lacks) never wins the peak.
    peak_values = [
        float(np.nan_to_num(sign * windows.features[position, FEATURE_INDEX[feature_name]], nan=-np.inf))
        for position in positions
    ]
    peak_position = positions[int(np.argmax(peak_values))]
    return inference_pb2.Detection(
        event_id=event_id,
        occurred_at=timestamp_from_seconds(place.starts[positions[0]]),
        lineage=_lineage(
            data, place.ids[positions[0]], detector.model_name, detector.model_version, detector.data_version
        ),
        event_type=kind,
        confidence=max(float(scores[position, column]) for position in positions),
        window=_span(place.starts[positions[0]], max(place.ends[position] for position in positions)),
        location=_window_location(data, windows, peak_position),
        speed_mps=float(windows.speed_mps[peak_position]),
        peak_value=max(peak_values),
        # Only the arm serving the device makes detections (the champion, a canary or a treatment; never a shadow).
        variant=variant,
        features=place.features[peak_position],
        detector=detector_label or f"onnx:{detector.model_version}",
        calibration=place.calibration,
        gps_available=bool(place.gps_available[peak_position]),
        rollout_id=rollout_id,
    )


def _speeding_detection(data: UploadData, episode: SpeedingEpisode, map_version: str) -> inference_pb2.Detection:
    event_type = common_pb2.EVENT_TYPE_SPEEDING
    return inference_pb2.Detection(
        event_id=stable_event_id("detection", episode.window_id, event_type, RULE_VERSION),
        occurred_at=timestamp_from_seconds(episode.start_s),
        # The rule's version and the road map's content hash answer "which model, which data".
        lineage=_lineage(data, episode.window_id, RULE_NAME, RULE_VERSION, map_version),
        event_type=event_type,
        confidence=1.0,
        window=_span(episode.start_s, episode.last_over_s),
        location=common_pb2.GeoPoint(latitude=episode.latitude, longitude=episode.longitude),
        speed_mps=episode.speed_mps,
        speed_limit_mps=episode.speed_limit_mps,
        peak_value=episode.peak_excess_mps,
        variant=inference_pb2.VARIANT_CHAMPION,
        features={"sustained_s": float(episode.sustained_s), "peak_excess_mps": float(episode.peak_excess_mps)},
        detector=RULE_NAME,
    )


def _distance_m(data: UploadData, duration_s: float) -> float:
    """Distance from GPS speed (integrated), robust to position noise while stopped."""
    if data.gps_times_s.size == 0:
        return 0.0
    if data.gps_times_s.size == 1:
        return float(data.speed_mps[0]) * duration_s
    times, speeds = data.gps_times_s, np.clip(data.speed_mps, 0.0, None)
    inside = float(np.sum((speeds[1:] + speeds[:-1]) / 2.0 * np.diff(times)))
    # The upload covers a little before the first fix and after the last one.
    edges = float(speeds[0]) * max(float(times[0]), 0.0) + float(speeds[-1]) * max(duration_s - float(times[-1]), 0.0)
    return inside + edges


def _segment(
    data: UploadData, detections: list[inference_pb2.Detection], duration_s: float | None = None
) -> inference_pb2.TripSegment:
    """The upload's exposure; `duration_s` when the upload says it (an events-only upload has no samples)."""
    duration = data.duration_s if duration_s is None else max(duration_s, data.duration_s)
    return inference_pb2.TripSegment(
        event_id=stable_event_id("trip-segment", data.upload_id),
        occurred_at=timestamp_from_seconds(data.started_at_s + duration),
        lineage=common_pb2.Lineage(
            upload_id=data.upload_id,
            trip_id=data.trip_id,
            device_id=data.device_id,
            driver_id=data.driver_id,
            trace_id=data.trace_id,
        ),
        sequence=data.sequence,
        trip_end=data.trip_end,
        distance_m=_distance_m(data, duration),
        duration_s=duration,
        detection_count=len(detections),
        detection_event_ids=[detection.event_id for detection in detections],
        span=_span(data.started_at_s, data.started_at_s + duration),
        vehicle_type=data.vehicle_type,
    )


def _failed(item: _Pending, reason: str, pipeline: InferencePipeline) -> UploadOutcome:
    """A segment with no detections for an upload that could not be processed (scoring can still close the trip)."""
    upload = item.received.upload
    started = timestamp_to_seconds(upload.started_at)
    segment = inference_pb2.TripSegment(
        event_id=stable_event_id("trip-segment", upload.upload_id),
        occurred_at=timestamp_from_seconds(started),
        lineage=common_pb2.Lineage(
            upload_id=upload.upload_id,
            trip_id=upload.trip_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
            trace_id=item.received.lineage.trace_id,
        ),
        sequence=upload.sequence,
        trip_end=upload.trip_end,
        detection_count=0,
        span=_span(started, started),
        vehicle_type=upload.vehicle_type,
    )
    return UploadOutcome(upload.upload_id, upload.device_id, upload.trip_id, segment=segment, failure=reason)


def _detection_id(first_window_id: str, event_type: int, model_name: str) -> str:
    # The model name, not its version: the same event seen by two versions of the model is one detection.
    return stable_event_id("detection", first_window_id, event_type, model_name)


def _hindsight(item: _Pending, outcome: UploadOutcome, working: DeviceState, risky_types: Sequence[int | None]) -> None:
    """Keep, re-run or drop the device's held uploads after a new upload decided with `item.calibration`.

    A moved mount drops them; the first calibrated upload re-runs them (their detections go to
    `outcome.hindsight_detections`) and then drops them; an upload decided with gravity but no forward
    axis is held when it may hold an event (`worth_holding`), with the risky calls serving made on it
    (`risky_types`, per window). Events-only uploads carry no calibration here.
    """
    calibration = item.calibration
    data = item.data
    if calibration is None or data is None or item.edge is not None:
        return
    if calibration.orientation_changed:
        # Part of this upload saw the old mount, and every held one did but those held while the mount was in
        # question whose gravity is the new mount's, and, for a mount turned round about up (noticed while its
        # evidence held the confidence down), those of this trip: they wait for the new forward axis.
        working.held = [
            held
            for held in working.held
            if held.saw_mount(calibration.rotation[2]) or (calibration.turned_round and held.trip_id == data.trip_id)
        ]
        return
    if calibration.state == "calibrated":
        if working.held:
            try:
                outcome.hindsight_detections = _decide_held(working.held, item, outcome.detections)
                outcome.held_trace_parents = {held.upload_id: held.trace_parent for held in working.held}
            except Exception as error:  # the upload's own outputs stand; the store waits for the next one
                logger.exception("held uploads failed", extra={"upload_id": data.upload_id})
                outcome.hindsight_failure = f"{type(error).__name__}: {error}"
                return
            working.held = []
        return
    windows = item.windows
    if windows.count and worth_holding(
        calibration.state,
        windows.features[:, FEATURE_INDEX["horizontal_max_mps2"]],
        windows.features[:, FEATURE_INDEX["gps_available"]],
    ):
        live_calls = tuple((position, int(call)) for position, call in enumerate(risky_types) if call is not None)
        working.hold(
            HeldUpload(
                data.upload_id,
                data.trip_id,
                data.started_at_s,
                pack_upload(item.received.SerializeToString()),
                live_calls,
                item.trace_parent,
                tuple(float(value) for value in calibration.rotation[2]) if calibration.mount_in_question else (),
            )
        )


def _decide_held(
    held: list[HeldUpload], item: _Pending, deciding: Sequence[inference_pb2.Detection] = ()
) -> list[inference_pb2.Detection]:
    """The detections serving would have made on `held` had it known `item`'s calibration then.

    Windows GPS covered were decided when they came, under the same rule: their calls then stand (they are
    not called again), and an event that includes one of them was detected then, so it is not detected
    again (GPS lost in the middle of a brake must not make the brake two detections). Nor is an event that
    comes within one window's length (`WINDOW_SECONDS`) of such a call of its type, or of one of `deciding`
    (the deciding upload's own detections): the same manoeuvre, seen once with GPS or the calibrated axis and
    once without, its halves a window apart.
    """
    calibration = item.calibration
    if calibration is None:
        return []
    detector = item.models.champion
    summary = calibration_summary(calibration)
    places: list[_Windows] = []
    entries: list[HeldUpload] = []
    for entry in held:
        received = upload_pb2.UploadReceived.FromString(unpack_upload(entry.payload))
        data = upload_from_proto(received)
        if data.degenerate_reason() is not None:
            continue
        windows = extract_windows(data, calibration)
        if not windows.count:
            continue
        gps_available = windows.features[:, FEATURE_INDEX["gps_available"]] > 0
        places.append(
            _Windows.of(
                data,
                windows,
                [dict(zip(FEATURE_NAMES, (float(value) for value in row), strict=True)) for row in windows.features],
                pack_features(windows.features),
                summary,
                gps_available,
                detection_allowed(calibration.state, gps_available) & ~gps_available,
            )
        )
        entries.append(entry)
    if not places:
        return []

    def detection_id(first_window_id: str, event_type: int) -> str:
        return _detection_id(first_window_id, event_type, detector.model_name)

    detections: list[inference_pb2.Detection] = []
    # Held uploads follow each other in time: an event cut by an upload boundary stays one detection.
    open_episode: OpenEpisode | None = None
    merged: list[tuple[_Windows, np.ndarray, list[Episode]]] = []
    # Episodes that include a window decided when its upload came (in any held upload): detected then.
    detected_then: set[str] = set()
    predicted = _predict_windows(detector, [place.windows for place in places])
    for entry, place, scores in zip(entries, places, predicted, strict=True):
        risky_types = [
            entry.live_call_of(position) if covered else call
            for position, (covered, call) in enumerate(
                zip(place.gps_available, _risky_calls(scores, place.allowed), strict=True)
            )
        ]
        episodes, open_episode = merge_windows(
            trip_id=place.data.trip_id,
            starts_s=place.starts,
            ends_s=place.ends,
            risky_types=risky_types,
            first_window_ids=place.ids,
            detection_id=detection_id,
            open_episode=open_episode,
        )
        merged.append((place, scores, episodes))
        for episode in episodes:
            if any(place.gps_available[position] for position in episode.window_positions):
                detected_then.add(episode.detection_event_id)
    # Where each event of the held uploads lies (an event may go on from one held upload into the next), and
    # where the calls made as the windows came lie: GPS-covered windows' in the held uploads, the deciding upload's.
    spans: dict[str, tuple[int, float, float]] = {}
    for place, _, episodes in merged:
        for episode in episodes:
            start = place.starts[episode.window_positions[0]]
            event_type, first, last = spans.get(episode.detection_event_id, (episode.event_type, start, episode.end_s))
            spans[episode.detection_event_id] = (event_type, min(first, start), max(last, episode.end_s))
    made_then = [
        (call, place.starts[position], place.ends[position])
        for entry, place in zip(entries, places, strict=True)
        for position, covered in enumerate(place.gps_available)
        if covered and (call := entry.live_call_of(position)) is not None
    ]
    made_then += [
        (
            int(detection.event_type),
            timestamp_to_seconds(detection.window.started_at),
            timestamp_to_seconds(detection.window.ended_at),
        )
        for detection in deciding
    ]
    for event_id, (event_type, first, last) in spans.items():
        if any(
            call == event_type and start <= last + WINDOW_SECONDS and end >= first - WINDOW_SECONDS
            for call, start, end in made_then
        ):
            detected_then.add(event_id)
    for place, scores, episodes in merged:
        for episode in episodes:
            if not episode.new or episode.detection_event_id in detected_then:
                continue
            detection = _model_detection(
                place,
                episode.event_type,
                episode.detection_event_id,
                episode.window_positions,
                scores,
                detector,
                item.models.variant,
                item.models.rollout_id,
            )
            detection.hindsight = True
            detections.append(detection)
    return detections
