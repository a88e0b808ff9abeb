"""The device's calibration on the uploads it sends in full (docs/edge.md, "The device's calibration on full uploads").

A device running the edge bundle sends 1 upload in 100 in full; each carries its sums from before that upload
(`Upload.device_calibration`), so inference folds the upload from the device's calibration instead of its own (which
saw only the full uploads): the cloud's windows of that upload are the device's. The device side runs
`michi.edge.runtime.decide_upload` (what `EdgeRuntime.process` runs) with the cloud's baseline model, and attaches
its sums with the runtime's own `with_device_calibration`. GPS is removed from every drive: with it the cloud
catches up within a few uploads; without it only the device's sums calibrate the cloud.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

from michi.contracts.v1 import common_pb2, inference_pb2, upload_pb2
from michi.device_client import JSON, PROTOBUF, encode_upload
from michi.edge.calibration_state import MAX_SUMS_BYTES, sums_from_json, sums_to_json
from michi.edge.reports import sampled_in_full
from michi.edge.runtime import EdgeUploadResult, decide_upload, events_only, with_device_calibration
from michi.simulator.config import SimulationConfig
from michi.simulator.fleet import FleetSimulator
from michi.windows.calibration import CalibrationSums
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.domain.state import DeviceState
from services.inference.handlers import InferencePipeline, UploadOutcome, process_uploads
from services.ingest.domain.decoding import decode_upload
from services.ingest.domain.validation import UploadLimits, validate_upload

CALIBRATED = common_pb2.CALIBRATION_STATE_CALIBRATED
MODEL = upload_pb2.EdgeModel(name="michi-risk", version="baseline-1", data_version="rules-test", precision="fp32")


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> OnnxDetector:
    return OnnxDetector(install_baseline_model(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def pipeline(detector: OnnxDetector) -> InferencePipeline:
    return InferencePipeline(detector, None, qa_sample_rate=0.05)


@pytest.fixture(scope="module")
def drive() -> list[upload_pb2.UploadReceived]:
    """20 minutes of one simulated device with harsh events, without GPS: calibrated from its stops and turns."""
    config = SimulationConfig(devices=1, duration_s=1200.0, seed=9502, event_rate_per_10min=14.0)
    uploads = [upload_pb2.UploadReceived(upload=upload) for upload in FleetSimulator(config).uploads()]
    for received in uploads:
        del received.upload.gps[:]
    return uploads


@pytest.fixture(scope="module")
def device(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]]:
    """What the device decided on each upload, and its sums before and after each."""
    sums: dict[str, CalibrationSums] = {}
    results, before, after = [], [], []
    for received in drive:
        device_id = received.upload.device_id
        before.append((sums.get(device_id) or CalibrationSums()).copy())
        results.append(decide_upload(received.upload, sums, detector.predict))
        after.append(sums[device_id].copy())
    return results, before, after


def sent_in_full(received: upload_pb2.UploadReceived, sums: CalibrationSums) -> upload_pb2.UploadReceived:
    """`received` as ingest publishes it when the device sent it in full with `sums`."""
    full = copy.deepcopy(received)
    full.upload.CopyFrom(with_device_calibration(received.upload, sums))
    return full


def outcome_bytes(outcome: UploadOutcome) -> list[bytes]:
    records = [*outcome.predictions, *outcome.detections, *outcome.label_requests, outcome.segment]
    return [record.SerializeToString(deterministic=True) for record in records]


def _windows_of(detection: inference_pb2.Detection, outcome: UploadOutcome) -> list[str]:
    """The window ids of `outcome`'s predictions inside `detection`'s span."""
    start, end = detection.window.started_at.ToNanoseconds(), detection.window.ended_at.ToNanoseconds()
    return [
        prediction.lineage.window_id
        for prediction in outcome.predictions
        if start <= prediction.window.started_at.ToNanoseconds() and prediction.window.ended_at.ToNanoseconds() <= end
    ]


def first_called(results: list[EdgeUploadResult]) -> int:
    """The first upload the device made a call on (calibrated: no GPS)."""
    return next(index for index, result in enumerate(results) if result.calls)


# --- inference -------------------------------------------------------------------------------------------------


def test_a_full_upload_with_the_devices_sums_makes_the_devices_calls(
    drive: list[upload_pb2.UploadReceived],
    device: tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]],
    pipeline: InferencePipeline,
) -> None:
    results, before, after = device
    index = first_called(results)
    result = results[index]
    assert result.calibration_state == "calibrated"
    # The cloud saw none of the device's earlier uploads in full (they went events-only).
    states: dict[str, DeviceState] = {}
    (outcome,) = process_uploads([sent_in_full(drive[index], before[index])], states, pipeline).uploads
    assert [prediction.lineage.window_id for prediction in outcome.predictions] == result.window_ids
    for position, prediction in enumerate(outcome.predictions):
        assert prediction.calibration.state == CALIBRATED
        scores = [score.probability for score in prediction.scores]
        assert np.allclose(scores, result.probabilities[position], atol=1e-6)
        assert prediction.packed_features == result.features[position].astype("<f4").tobytes()
    # The device's calls are the cloud's detections: each starts at a window the device called the same way.
    called = {call.window_id: call.event_type for call in result.calls}
    assert outcome.detections
    for detection in outcome.detections:
        assert called[detection.lineage.window_id] == detection.event_type
    # ... and every call is in one of them (the same merge of consecutive windows as an events-only upload's).
    assert {detection.event_type for detection in outcome.detections} == set(called.values())
    covered = {window_id for detection in outcome.detections for window_id in _windows_of(detection, outcome)}
    assert set(called) <= covered
    # Stored as the device's sums, like any upload's fold: the device's own sums after the upload.
    assert states[drive[index].upload.device_id].calibration.to_dict() == after[index].to_dict()

    # Without the device's sums the cloud has only this upload: no forward axis, no call, zero forward features.
    (alone,) = process_uploads([drive[index]], {}, pipeline).uploads
    assert all(prediction.calibration.state != CALIBRATED for prediction in alone.predictions)
    assert not alone.detections


def test_a_redelivered_full_upload_gives_the_same_bytes_whatever_the_device_state_since(
    drive: list[upload_pb2.UploadReceived],
    device: tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]],
    pipeline: InferencePipeline,
) -> None:
    results, before, after = device
    index = first_called(results)
    full = sent_in_full(drive[index], before[index])
    states: dict[str, DeviceState] = {}
    (first,) = process_uploads([full], states, pipeline).uploads
    stored = states[full.upload.device_id].to_bytes()
    (again,) = process_uploads([full], states, pipeline).uploads
    assert again.replayed and outcome_bytes(again) == outcome_bytes(first)
    assert states[full.upload.device_id].to_bytes() == stored  # a redelivery changes nothing
    # The device's next uploads (one events-only, one in full), then the first one redelivered: the same bytes.
    events = copy.deepcopy(drive[index + 1])
    events.upload.CopyFrom(events_only(drive[index + 1].upload, results[index + 1], MODEL))
    later = sent_in_full(drive[index + 2], before[index + 2])
    process_uploads([events, later], states, pipeline)
    assert states[full.upload.device_id].calibration.to_dict() == after[index + 2].to_dict()
    (late,) = process_uploads([full], states, pipeline).uploads
    assert late.replayed and outcome_bytes(late) == outcome_bytes(first)
    # ... and in one batch with it (phase 1 chains the sums through the batch as phase 3 stores them).
    batch = process_uploads([full, later, full], {}, pipeline).uploads
    assert outcome_bytes(batch[0]) == outcome_bytes(batch[2]) == outcome_bytes(first)


def test_the_devices_sums_replace_the_clouds_own_and_a_degenerate_upload_keeps_them(
    drive: list[upload_pb2.UploadReceived],
    device: tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]],
    pipeline: InferencePipeline,
) -> None:
    _, before, after = device
    device_id = drive[0].upload.device_id
    # The cloud folded the first uploads itself; the device's sums (here: fresh, a device whose mount moved or
    # that lost its file) win: they are the calibration the device decides with.
    states: dict[str, DeviceState] = {}
    process_uploads(drive[:5], states, pipeline)
    assert states[device_id].calibration.to_dict() == after[4].to_dict()
    fresh = CalibrationSums()
    process_uploads([sent_in_full(drive[5], fresh)], states, pipeline)
    assert states[device_id].calibration.to_dict() != after[5].to_dict()
    # An upload too short to window still carries the device's sums: stored as they are.
    short = sent_in_full(drive[6], before[6])
    for name in ("offset_ms", "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        del getattr(short.upload.imu, name)[5:]
    (outcome,) = process_uploads([short], states, pipeline).uploads
    assert outcome.skipped_reason is not None
    assert states[device_id].calibration.to_dict() == before[6].to_dict()


# --- ingest ----------------------------------------------------------------------------------------------------


def full_upload(drive: list[upload_pb2.UploadReceived], sums: CalibrationSums) -> upload_pb2.Upload:
    return with_device_calibration(drive[4].upload, sums)


def reasons(upload: upload_pb2.Upload) -> list[tuple[str | None, str]]:
    now = upload.started_at.seconds + 60.0
    return [(violation.field, violation.reason) for violation in validate_upload(upload, now, UploadLimits())]


@pytest.mark.parametrize("media_type", [PROTOBUF, JSON])
def test_a_full_upload_with_the_devices_sums_passes_ingest_as_sent(
    drive: list[upload_pb2.UploadReceived],
    device: tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]],
    media_type: str,
) -> None:
    _, before, _ = device
    upload = full_upload(drive, before[4])
    text = upload.device_calibration.sums_json
    assert 1_500 < len(text) < 4_000, len(text)  # about 2.4 KB with a tail of blocks
    assert sums_from_json(text).to_dict() == before[4].to_dict()  # bit for bit
    decoded = decode_upload(encode_upload(upload, media_type), media_type)
    assert decoded == upload
    assert reasons(decoded) == []


def tampered(sums_json: str, change: str) -> str:
    document = json.loads(sums_json)
    if change == "list":
        return json.dumps([document])
    if change == "nan":
        document["gravity_weight"] = math.nan
        return json.dumps(document)
    if change == "overflow":
        return sums_json.replace('"dvdt_sum":', '"dvdt_sum":1e999,"x":', 1)
    if change == "length":
        document["gravity_sum"] = [1.0, 2.0]
        return json.dumps(document)
    if change == "type":
        document["stop_count"] = "3"
        return json.dumps(document)
    if change == "tail":
        document["tail"] = [[0.0] * 9] * 7
        return json.dumps(document)
    if change == "negative-count":
        document["orientation_changes"] = -1
        return json.dumps(document)
    if change == "truncated":
        return sums_json[: len(sums_json) // 2]
    if change == "large":
        document["padding"] = "x" * MAX_SUMS_BYTES
        return json.dumps(document)
    raise AssertionError(change)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("list", "invalid-device-calibration"),
        ("nan", "non-finite-value"),
        ("overflow", "non-finite-value"),
        ("length", "invalid-device-calibration"),
        ("type", "invalid-device-calibration"),
        ("tail", "invalid-device-calibration"),
        ("negative-count", "invalid-device-calibration"),
        ("truncated", "invalid-device-calibration"),
        ("large", "value-too-long"),
    ],
)
def test_tampered_or_garbage_sums_are_refused_with_the_reason(
    drive: list[upload_pb2.UploadReceived],
    device: tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]],
    change: str,
    reason: str,
) -> None:
    _, before, _ = device
    upload = full_upload(drive, before[4])
    upload.device_calibration.sums_json = tampered(upload.device_calibration.sums_json, change)
    assert reasons(upload) == [("device_calibration.sums_json", reason)]


def test_sums_without_samples_or_empty_are_refused(
    drive: list[upload_pb2.UploadReceived],
    device: tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]],
) -> None:
    results, before, _ = device
    # An events-only upload: its report carries the summary its calls were made with; sums would be ignored.
    events = events_only(drive[4].upload, results[4], MODEL)
    events.device_calibration.sums_json = sums_to_json(before[4])
    assert reasons(events) == [("device_calibration", "device-calibration-without-samples")]
    empty = full_upload(drive, before[4])
    empty.device_calibration.sums_json = ""
    assert reasons(empty) == [("device_calibration.sums_json", "required-field-missing")]


def test_inference_ignores_sums_that_did_not_pass_ingest(
    drive: list[upload_pb2.UploadReceived],
    device: tuple[list[EdgeUploadResult], list[CalibrationSums], list[CalibrationSums]],
    pipeline: InferencePipeline,
) -> None:
    _, before, _ = device
    full = sent_in_full(drive[4], before[4])
    full.upload.device_calibration.sums_json = '{"gravity_sum": "up"}'
    (garbage,) = process_uploads([full], {}, pipeline).uploads
    (plain,) = process_uploads([drive[4]], {}, pipeline).uploads
    assert garbage.failure is None and outcome_bytes(garbage) == outcome_bytes(plain)


# --- a simulated fleet -----------------------------------------------------------------------------------------


def test_on_a_fleet_without_gps_the_cloud_is_calibrated_on_the_full_uploads_where_the_device_is(
    detector: OnnxDetector, pipeline: InferencePipeline
) -> None:
    """docs/edge.md's measurement, smaller: 2 devices, 3 h, 1 upload in 20 sent in full so that there are enough."""
    full_every = 20
    config = SimulationConfig(devices=2, duration_s=3 * 3600.0, seed=9501)
    uploads = [upload_pb2.UploadReceived(upload=upload) for upload in FleetSimulator(config).uploads()]
    sums: dict[str, CalibrationSums] = {}
    with_sums: dict[str, DeviceState] = {}
    without: dict[str, DeviceState] = {}
    device_calibrated = cloud_before = cloud_now = full = 0
    for received in uploads:
        del received.upload.gps[:]
        upload = received.upload
        before = (sums.get(upload.device_id) or CalibrationSums()).copy()
        result = decide_upload(upload, sums, detector.predict)
        if not sampled_in_full(upload.upload_id, full_every) or not result.window_ids:
            continue
        full += 1
        device_calibrated += result.calibration_state == "calibrated"
        (old,) = process_uploads([received], without, pipeline).uploads
        (new,) = process_uploads([sent_in_full(received, before)], with_sums, pipeline).uploads
        cloud_before += old.predictions[0].calibration.state == CALIBRATED
        cloud_now += new.predictions[0].calibration.state == CALIBRATED
        # The device's windows, bit for bit, and its probabilities.
        assert [prediction.packed_features for prediction in new.predictions] == [
            row.astype("<f4").tobytes() for row in result.features
        ]
        scores = np.array([[score.probability for score in prediction.scores] for prediction in new.predictions])
        assert np.allclose(scores, result.probabilities, atol=1e-6)
    assert full >= 40, full
    assert cloud_now == device_calibrated >= 0.9 * full, (cloud_now, device_calibrated, full)
    # Folding only the full uploads itself, the cloud lags (1 in 20 here; at 1 in 100 far more, docs/edge.md).
    assert cloud_before < cloud_now - 0.2 * full, (cloud_before, cloud_now, full)
