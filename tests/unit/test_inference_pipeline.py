"""The pure pipeline: one detection per event, exact segment counts, determinism, bad input, speeding."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, upload_pb2
from michi.windows.features import FEATURE_NAMES, unpack_features
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.domain.episodes import OpenEpisode, merge_windows
from services.inference.domain.speeding import SPEEDING_MARGIN_MPS, road_map_version
from services.inference.domain.state import RECENT_UPLOADS, DeviceState
from services.inference.handlers import BatchOutcome, InferencePipeline, process_uploads, qa_sampled

from ..scripted_drive import ScriptedDrive, ScriptedEvent

WARM_UP = [ScriptedEvent("stop", 8.0, 3.0, 2.0), ScriptedEvent("stop", 24.0, 3.0, 2.0)]
BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
SPEEDING = common_pb2.EVENT_TYPE_SPEEDING


class FakeRoadMap:
    """Every road is posted at `limit_mps` inside a box around the synthetic drives' origin."""

    def __init__(self, limit_mps: float) -> None:
        self.limit_mps = limit_mps

    def speed_limit_at(self, latitude: float, longitude: float, heading_deg: float | None = None) -> float | None:
        return self.limit_mps if abs(latitude - 35.68) < 0.1 and abs(longitude - 139.76) < 0.1 else None

    def to_json(self) -> str:
        return f'{{"limit_mps": {self.limit_mps}}}'


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> OnnxDetector:
    return OnnxDetector(install_baseline_model(tmp_path_factory.mktemp("models")))


def run(
    uploads: list[upload_pb2.UploadReceived],
    pipeline: InferencePipeline,
    states: dict[str, DeviceState] | None = None,
    batch: int = 64,
) -> list:
    states = {} if states is None else states
    outcomes = []
    for first in range(0, len(uploads), batch):
        result: BatchOutcome = process_uploads(uploads[first : first + batch], states, pipeline)
        outcomes.extend(result.uploads)
    return outcomes


def detections_of(outcomes: list) -> list:
    return [detection for outcome in outcomes for detection in outcome.detections]


def test_one_brake_seen_by_overlapping_windows_is_one_detection(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=70.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 43.2, 1.5, 5.5)])
    outcomes = run(drive.uploads(), InferencePipeline(detector, None))
    risky_windows = [p for o in outcomes for p in o.predictions if p.predicted == BRAKING]
    assert len(risky_windows) >= 2  # overlapping windows each saw it...
    found = detections_of(outcomes)
    assert [detection.event_type for detection in found] == [BRAKING]  # ...one detection
    start = timestamp_to_seconds(found[0].window.started_at) - drive.start_time_s
    end = timestamp_to_seconds(found[0].window.ended_at) - drive.start_time_s
    assert start <= 43.2 and end >= 44.7
    assert found[0].peak_value > 4.5
    assert found[0].lineage.model_version == "baseline-1" and found[0].lineage.data_version
    assert found[0].detector == "onnx:baseline-1"


def test_segments_count_exactly_the_detections_of_their_upload(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(
        duration_s=100.0,
        events=[
            *WARM_UP,
            ScriptedEvent("harsh_braking", 43.2, 1.5, 5.5),
            ScriptedEvent("harsh_acceleration", 62.0, 2.0, 4.2),
            ScriptedEvent("pothole", 81.0, 0.6, 10.0),
        ],
    )
    outcomes = run(drive.uploads(), InferencePipeline(detector, None))
    assert [outcome.segment.sequence for outcome in outcomes] == list(range(10))
    for outcome in outcomes:
        assert outcome.segment.detection_count == len(outcome.detections)
        assert list(outcome.segment.detection_event_ids) == [detection.event_id for detection in outcome.detections]
        assert outcome.segment.duration_s == pytest.approx(10.0, abs=0.05)
        assert 100.0 < outcome.segment.distance_m < 200.0
        assert len(outcome.predictions) == 9
    assert sorted(d.event_type for d in detections_of(outcomes)) == [BRAKING, common_pb2.EVENT_TYPE_HARSH_ACCELERATION]
    assert outcomes[-1].segment.trip_end


def test_confounders_and_normal_driving_do_not_fire(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(
        duration_s=160.0,
        events=[
            *WARM_UP,
            ScriptedEvent("pothole", 41.0, 0.6, 12.0),
            ScriptedEvent("speed_bump", 55.0, 1.5, 6.0),
            ScriptedEvent("turn", 70.0, 6.0, 1.7),
            ScriptedEvent("stop", 90.0, 4.0, 2.3),
            ScriptedEvent("mount_moved", 120.0),
        ],
    )
    outcomes = run(drive.uploads(), InferencePipeline(detector, None))
    assert detections_of(outcomes) == []


def test_same_input_gives_same_outputs_whatever_the_batching(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=70.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 43.2, 1.5, 5.5)])
    pipeline = InferencePipeline(detector, FakeRoadMap(20.0))
    one_by_one = run(drive.uploads(), pipeline, batch=1)
    all_at_once = run(drive.uploads(), pipeline, batch=64)
    assert [o.segment.SerializeToString() for o in one_by_one] == [o.segment.SerializeToString() for o in all_at_once]
    assert [p.SerializeToString() for o in one_by_one for p in o.predictions] == [
        p.SerializeToString() for o in all_at_once for p in o.predictions
    ]


def test_redelivered_uploads_reproduce_their_ids_and_leave_state_alone(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=70.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 49.3, 1.5, 5.5)])
    uploads = drive.uploads()
    pipeline = InferencePipeline(detector, FakeRoadMap(20.0))
    states: dict[str, DeviceState] = {}
    first = run(uploads, pipeline, states)
    saved = states[drive.device_id].to_bytes()
    # A crash after the table write but before the offset commit: the last three come again.
    again = run(uploads[-3:], pipeline, states)
    assert all(outcome.replayed for outcome in again)
    for original, repeated in zip(first[-3:], again, strict=True):
        assert repeated.segment.SerializeToString() == original.segment.SerializeToString()
        assert [d.SerializeToString() for d in repeated.detections] == [
            d.SerializeToString() for d in original.detections
        ]
        assert [p.event_id for p in repeated.predictions] == [p.event_id for p in original.predictions]
    assert states[drive.device_id].to_bytes() == saved
    # And a duplicate inside one batch.
    twice = run([uploads[0], uploads[0]], pipeline, {})
    assert twice[0].segment.SerializeToString() == twice[1].segment.SerializeToString()


def test_a_redelivered_burst_longer_than_the_replay_memory_publishes_nothing_again(detector: OnnxDetector) -> None:
    # A device's backlog of uploads, all processed, then all redelivered after a crash (state written, offsets
    # not committed): the last RECENT_UPLOADS are replayed as before; the older ones, gone from the replay
    # memory, are recognised as processed and yield nothing (no segment, no detection), the state untouched.
    drive = ScriptedDrive(
        duration_s=(RECENT_UPLOADS + 8) * 10.0,
        events=[
            *WARM_UP,
            ScriptedEvent("harsh_braking", 49.3, 1.5, 5.5),
            ScriptedEvent("harsh_braking", 129.3, 1.5, 5.5),
        ],
    )
    uploads = drive.uploads()
    assert len(uploads) > RECENT_UPLOADS
    pipeline = InferencePipeline(detector, FakeRoadMap(20.0))
    states: dict[str, DeviceState] = {}
    first = run(uploads, pipeline, states)
    assert any(outcome.detections for outcome in first[: len(uploads) - RECENT_UPLOADS])
    saved = states[drive.device_id].to_bytes()
    restored = round_trip(states)
    again = run(uploads, pipeline, restored)
    older, recent = again[: len(uploads) - RECENT_UPLOADS], again[len(uploads) - RECENT_UPLOADS :]
    assert all(outcome.already_processed and outcome.replayed for outcome in older)
    assert not any(outcome.detections or outcome.predictions or outcome.label_requests for outcome in older)
    assert all(outcome.replayed and not outcome.already_processed for outcome in recent)
    for original, repeated in zip(first[len(uploads) - RECENT_UPLOADS :], recent, strict=True):
        assert repeated.segment.SerializeToString() == original.segment.SerializeToString()
    assert restored[drive.device_id].to_bytes() == saved
    # Processed once more as new (a state without the digests, as written before they were kept): the older
    # uploads are decided again from the later state (what the digests prevent).
    forgetful = DeviceState.from_bytes(saved)
    forgetful.processed = []
    assert not any(outcome.already_processed for outcome in run(uploads, pipeline, {drive.device_id: forgetful}))


def round_trip(states: dict[str, DeviceState]) -> dict[str, DeviceState]:
    """The states as the table gives them back (through their bytes)."""
    return {device: DeviceState.from_bytes(state.to_bytes()) for device, state in states.items()}


def test_state_survives_serialisation(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=70.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 49.3, 1.5, 5.5)])
    uploads = drive.uploads()
    pipeline = InferencePipeline(detector, FakeRoadMap(20.0))
    straight = run(uploads, pipeline)
    states: dict[str, DeviceState] = {}
    halves = run(uploads[:3], pipeline, states)
    restored = {device: DeviceState.from_bytes(state.to_bytes()) for device, state in states.items()}
    halves += run(uploads[3:], pipeline, restored)
    assert [o.segment.SerializeToString() for o in straight] == [o.segment.SerializeToString() for o in halves]


def test_merge_continues_an_episode_across_an_upload_boundary() -> None:
    def identifier(window_id: str, event_type: int) -> str:
        return f"detection-{window_id}"

    first, open_episode = merge_windows(
        trip_id="t",
        starts_s=[100.0, 101.0, 102.0],
        ends_s=[102.0, 103.0, 104.0],
        risky_types=[None, BRAKING, BRAKING],
        first_window_ids=["a", "b", "c"],
        detection_id=identifier,
        open_episode=None,
    )
    assert [(episode.detection_event_id, episode.window_positions, episode.new) for episode in first] == [
        ("detection-b", [1, 2], True)
    ]
    second, _ = merge_windows(
        trip_id="t",
        starts_s=[104.0, 105.0],
        ends_s=[106.0, 107.0],
        risky_types=[BRAKING, None],
        first_window_ids=["d", "e"],
        detection_id=identifier,
        open_episode=open_episode,
    )
    assert [(episode.detection_event_id, episode.new) for episode in second] == [("detection-b", False)]
    other_trip, _ = merge_windows(
        trip_id="u",
        starts_s=[104.0],
        ends_s=[106.0],
        risky_types=[BRAKING],
        first_window_ids=["f"],
        detection_id=identifier,
        open_episode=OpenEpisode("t", BRAKING, 104.0, "detection-b"),
    )
    assert [(episode.detection_event_id, episode.new) for episode in other_trip] == [("detection-f", True)]


def test_a_brake_whose_windows_dip_for_up_to_a_window_length_is_one_detection() -> None:
    """Risky windows of one type up to 2 s apart (one window's length) are one manoeuvre: a brake in two pulses
    with two quiet windows between them is one detection; three quiet seconds between the spans make two."""

    def identifier(window_id: str, event_type: int) -> str:
        return f"detection-{window_id}"

    def episodes(risky: list[int | None]) -> list[tuple[str, list[int]]]:
        found, _ = merge_windows(
            trip_id="t",
            starts_s=[100.0 + index for index in range(len(risky))],
            ends_s=[102.0 + index for index in range(len(risky))],
            risky_types=risky,
            first_window_ids=[f"w{index}" for index in range(len(risky))],
            detection_id=identifier,
            open_episode=None,
        )
        return [(episode.detection_event_id, episode.window_positions) for episode in found]

    # Windows 100-102 and 101-103 risky, 102-104 and 103-105 not, 104-106 risky: 1 s between the spans.
    assert episodes([BRAKING, BRAKING, None, None, BRAKING]) == [("detection-w0", [0, 1, 4])]
    # 105-107 after 100-102 and 101-103: 2 s apart, still one manoeuvre.
    assert episodes([BRAKING, BRAKING, None, None, None, BRAKING]) == [("detection-w0", [0, 1, 5])]
    # 106-108: 3 s apart, a second brake.
    assert episodes([BRAKING, BRAKING, None, None, None, None, BRAKING]) == [
        ("detection-w0", [0, 1]),
        ("detection-w6", [6]),
    ]
    # Another type between them does not join them, nor does it join them to itself.
    acceleration = common_pb2.EVENT_TYPE_HARSH_ACCELERATION
    assert episodes([BRAKING, acceleration, BRAKING]) == [
        ("detection-w0", [0]),
        ("detection-w1", [1]),
        ("detection-w2", [2]),
    ]


def test_speeding_across_upload_boundaries_is_one_detection(detector: OnnxDetector) -> None:
    # Cruising at 14 m/s (50 km/h) where the map says 30 km/h: one long episode over four uploads.
    drive = ScriptedDrive(duration_s=60.0)
    limit = 30.0 / 3.6
    outcomes = run(drive.uploads(), InferencePipeline(detector, FakeRoadMap(limit)))
    speeding = [d for d in detections_of(outcomes) if d.event_type == SPEEDING]
    assert len(speeding) == 1
    detection = speeding[0]
    assert detection.speed_limit_mps == pytest.approx(limit)
    assert detection.peak_value == pytest.approx(
        max(fix.speed_mps for u in drive.uploads() for fix in u.upload.gps) - limit, abs=1e-4
    )
    assert detection.detector == "map:speed-limit"
    # 4w2v: the rule's version and the map's content hash.
    assert detection.lineage.data_version == road_map_version(FakeRoadMap(limit)) != ""
    assert road_map_version(FakeRoadMap(limit + 1)) != detection.lineage.data_version
    # Emitted with the trip's last upload (the episode only ends there) and counted in its segment.
    assert outcomes[-1].segment.detection_event_ids == [detection.event_id]


def test_short_speeding_burst_does_not_count(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=40.0, cruise_mps=12.0, events=[*WARM_UP])
    limit = 12.0 - SPEEDING_MARGIN_MPS - 0.5  # over by a hair only while the sinusoid peaks (< 5 s)
    outcomes = run(drive.uploads(), InferencePipeline(detector, FakeRoadMap(limit + 2.0)))
    assert [d for d in detections_of(outcomes) if d.event_type == SPEEDING] == []


def degenerate(received: upload_pb2.UploadReceived, change: str) -> upload_pb2.UploadReceived:
    broken = copy.deepcopy(received)
    imu = broken.upload.imu
    if change == "three-samples":
        for field in ("offset_ms", "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
            del getattr(imu, field)[3:]
    elif change == "empty":
        broken.upload.ClearField("imu")
        del broken.upload.gps[:]
    elif change == "unequal":
        del imu.accel_x[5:]
    elif change == "no-gps":
        del broken.upload.gps[:]
    return broken


@pytest.mark.parametrize("change", ["three-samples", "empty", "unequal", "no-gps"])
def test_degenerate_uploads_still_yield_their_segment(detector: OnnxDetector, change: str) -> None:
    drive = ScriptedDrive(duration_s=50.0, events=[ScriptedEvent("harsh_braking", 43.2, 1.5, 5.5)])
    uploads = drive.uploads()
    uploads[4] = degenerate(uploads[4], change)
    outcomes = run(uploads, InferencePipeline(detector, None))
    broken = outcomes[4]
    assert broken.failure is None
    assert broken.segment.lineage.upload_id == uploads[4].upload.upload_id
    assert broken.segment.detection_count == 0 and broken.detections == []
    if change == "no-gps":
        assert broken.skipped_reason is None and len(broken.predictions) == 9  # analysed, never detected
    else:
        assert broken.skipped_reason is not None and broken.predictions == []


class AlwaysBraking:
    """A model that calls harsh braking with 0.99 on every window: only the decision rule can stop it."""

    model_name = "michi-risk"
    model_version = "always-braking"
    data_version = "test"

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        scores = np.full((features.shape[0], 5), 0.0025, dtype=np.float32)
        scores[:, 1] = 0.99
        return scores


def without_gps(uploads: list[upload_pb2.UploadReceived], indexes: range | None = None) -> list:
    return [
        degenerate(received, "no-gps") if indexes is None or index in indexes else received
        for index, received in enumerate(uploads)
    ]


def test_gps_lost_mid_trip_a_calibrated_mount_still_detects_from_the_imu(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=70.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 43.2, 1.5, 5.5)])
    outcomes = run(without_gps(drive.uploads(), range(4, 7)), InferencePipeline(detector, None))
    detections = detections_of(outcomes)
    assert [detection.event_type for detection in detections] == [BRAKING]
    assert not detections[0].gps_available
    assert detections[0].calibration.state == common_pb2.CALIBRATION_STATE_CALIBRATED
    assert all(not prediction.gps_available for prediction in outcomes[4].predictions)
    # Without a fix in the upload, no place is given: (0, 0) would be a place in the sea.
    assert not detections[0].HasField("location")
    assert not any(prediction.HasField("location") for prediction in outcomes[4].predictions)
    located = outcomes[3].predictions[0].location
    assert outcomes[3].predictions[0].HasField("location") and (located.latitude, located.longitude) != (0.0, 0.0)


def test_without_gps_or_a_calibrated_mount_no_model_can_detect() -> None:
    # A fresh device, no GPS at all, on a drive with no stop: the mount's forward axis is unknown.
    drive = ScriptedDrive(duration_s=30.0, events=[ScriptedEvent("harsh_braking", 13.2, 1.5, 5.5)])
    outcomes = run(without_gps(drive.uploads()), InferencePipeline(AlwaysBraking(), None, uncertainty_band=0.5))
    assert detections_of(outcomes) == []
    predictions = [prediction for outcome in outcomes for prediction in outcome.predictions]
    assert predictions and all(prediction.predicted == BRAKING for prediction in predictions)
    assert all(
        prediction.calibration.state != common_pb2.CALIBRATION_STATE_CALIBRATED and not prediction.gps_available
        for prediction in predictions
    )
    # People still see what stood out.
    assert any(request.suggested == BRAKING for outcome in outcomes for request in outcome.label_requests)


def test_a_detection_is_backed_by_a_calibrated_mount_or_by_gps_whatever_the_model_says() -> None:
    # No GPS at all; left and right turns let the gyroscope find the forward axis (yaw evidence).
    turns = [ScriptedEvent("turn", 3.0 + 9.0 * index, 6.0, 3.0 if index % 2 else -3.0) for index in range(7)]
    drive = ScriptedDrive(duration_s=70.0, events=turns)
    outcomes = run(without_gps(drive.uploads()), InferencePipeline(AlwaysBraking(), None))
    detections = detections_of(outcomes)
    assert detections
    for detection in detections:
        assert detection.calibration.state == common_pb2.CALIBRATION_STATE_CALIBRATED or detection.gps_available
    # Before the mount is calibrated (no GPS, first uploads) nothing is detected even by this model.
    first_calibrated = next(
        index
        for index, outcome in enumerate(outcomes)
        if outcome.predictions and outcome.predictions[-1].calibration.state == common_pb2.CALIBRATION_STATE_CALIBRATED
    )
    assert first_calibrated > 0
    assert not any(outcome.detections for outcome in outcomes[:first_calibrated])


def test_uncertain_windows_become_label_requests(detector: OnnxDetector) -> None:
    # A brake right at the threshold: 3.3 m/s^2 for 2 s.
    drive = ScriptedDrive(duration_s=70.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 43.0, 2.0, 3.4)])
    outcomes = run(drive.uploads(), InferencePipeline(detector, None, uncertainty_band=0.45))
    requests = [request for outcome in outcomes for request in outcome.label_requests]
    assert requests
    assert all(abs(request.confidence - 0.5) <= 0.45 for request in requests)
    assert len({request.event_id for request in requests}) == len(requests)
    assert np.all([request.lineage.window_id for request in requests])


def test_qa_sampling_is_a_stable_share_of_window_ids() -> None:
    ids = [f"window-{index}" for index in range(20_000)]
    sampled = [window_id for window_id in ids if qa_sampled(window_id, 0.05)]
    assert 0.04 < len(sampled) / len(ids) < 0.06
    assert sampled == [window_id for window_id in ids if qa_sampled(window_id, 0.05)]
    assert not any(qa_sampled(window_id, 0.0) for window_id in ids[:1000])
    assert all(qa_sampled(window_id, 1.0) for window_id in ids[:1000])


def test_random_qa_is_drawn_over_every_window_uncertain_ones_included(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=60.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 40.0)])
    # A wide uncertainty band, so some windows are uncertain.
    outcomes = run(drive.uploads(), InferencePipeline(detector, None, qa_sample_rate=1.0, uncertainty_band=0.45))
    requests = [request for outcome in outcomes for request in outcome.label_requests]
    windows = [prediction.lineage.window_id for outcome in outcomes for prediction in outcome.predictions]
    by_reason: dict[int, list] = {}
    for request in requests:
        by_reason.setdefault(request.reason, []).append(request)
    qa = by_reason.get(labels_pb2.LABEL_REASON_RANDOM_QA, [])
    uncertain = by_reason.get(labels_pb2.LABEL_REASON_UNCERTAIN, [])
    # At rate 1 every window is drawn at random, the uncertain ones too (asked for twice, for two reasons):
    # the random sample is of every window, not of the confident ones only.
    assert sorted(request.lineage.window_id for request in qa) == sorted(windows)
    assert uncertain
    assert {request.lineage.window_id for request in uncertain} <= {request.lineage.window_id for request in qa}
    assert len({request.event_id for request in requests}) == len(requests)
    assert all(request.priority < min((u.priority for u in uncertain), default=1) for request in qa)
    # A random-QA request suggests the model's own call for the window (its prediction's class).
    predicted = {p.lineage.window_id: p.predicted for outcome in outcomes for p in outcome.predictions}
    assert all(request.suggested == predicted[request.lineage.window_id] for request in qa)
    # The brake's confident windows are sampled with their detection, so people can overturn it.
    assert any(request.detection_event_id and request.suggested == BRAKING for request in qa)
    none = run(drive.uploads(), InferencePipeline(detector, None, qa_sample_rate=0.0))
    assert not [r for o in none for r in o.label_requests if r.reason == labels_pb2.LABEL_REASON_RANDOM_QA]


def test_every_prediction_packs_its_feature_map_in_feature_list_order(detector: OnnxDetector) -> None:
    drive = ScriptedDrive(duration_s=40.0, events=[*WARM_UP, ScriptedEvent("harsh_braking", 30.0, 1.5, 5.5)])
    predictions = [
        p for outcome in run(drive.uploads(), InferencePipeline(detector, None)) for p in outcome.predictions
    ]
    assert predictions
    for prediction in predictions:
        packed = unpack_features([prediction.packed_features])[0]
        assert packed.size == len(FEATURE_NAMES)
        assert [prediction.features[name] for name in FEATURE_NAMES] == packed.tolist()
