"""Events-only uploads (docs/edge.md): the device's report, ingest's rules for it, and inference taking its calls.

The device side runs `michi.edge.runtime.decide_upload` (what `EdgeRuntime.process` runs) with the cloud's own
baseline model, so the device's calls are the cloud's and an events-only upload can be compared with the full one.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from google.protobuf import json_format

from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, upload_pb2
from michi.device_client import JSON, PROTOBUF, encode_upload
from michi.edge.reports import (
    events_only_upload,
    sampled_in_full,
    thinned_gps,
    windows_to_send,
)
from michi.edge.runtime import EdgeUploadResult, decide_upload, events_only
from michi.windows.calibration import CalibrationSums
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.domain.state import DeviceState
from services.inference.handlers import InferencePipeline, UploadOutcome, process_uploads, recorded_versions
from services.ingest.domain.decoding import JSON as INGEST_JSON
from services.ingest.domain.decoding import FieldRefused, decode_upload
from services.ingest.domain.validation import EDGE_TEXT_FIELDS, UploadLimits, validate_upload

from ..scripted_drive import ScriptedDrive, ScriptedEvent

WARM_UP = [ScriptedEvent("stop", 8.0, 3.0, 2.0), ScriptedEvent("stop", 24.0, 3.0, 2.0)]
BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
MODEL = upload_pb2.EdgeModel(
    name="michi-risk", version="baseline-1", data_version="rules-test", bundle_sha256="ab" * 32, precision="fp32"
)


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> OnnxDetector:
    return OnnxDetector(install_baseline_model(tmp_path_factory.mktemp("models")))


@pytest.fixture(scope="module")
def drive() -> list[upload_pb2.UploadReceived]:
    """A drive with two harsh brakes, the second across an upload boundary (so one episode spans two uploads)."""
    events = [*WARM_UP, ScriptedEvent("harsh_braking", 43.2, 1.5, 5.5), ScriptedEvent("harsh_braking", 69.4, 1.5, 5.5)]
    return ScriptedDrive(duration_s=100.0, events=events).uploads()


def device_reports(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> tuple[list[EdgeUploadResult], list[upload_pb2.UploadReceived]]:
    """What the device decides on each upload, and the events-only form of each, as ingest would publish it."""
    sums: dict[str, CalibrationSums] = {}
    results, reports = [], []
    for received in drive:
        result = decide_upload(received.upload, sums, detector.predict)
        results.append(result)
        events = copy.deepcopy(received)
        events.upload.CopyFrom(events_only(received.upload, result, MODEL))
        reports.append(events)
    return results, reports


def run(uploads: list[upload_pb2.UploadReceived], pipeline: InferencePipeline) -> list[UploadOutcome]:
    states: dict[str, DeviceState] = {}
    return [outcome for upload in uploads for outcome in process_uploads([upload], states, pipeline).uploads]


def model_detections(outcomes: list[UploadOutcome]) -> list[inference_pb2.Detection]:
    return [
        detection
        for outcome in outcomes
        for detection in outcome.detections
        if detection.event_type != common_pb2.EVENT_TYPE_SPEEDING
    ]


# --- the device's report ---------------------------------------------------------------------------------------


def test_the_report_carries_the_calls_counts_calibration_and_each_sample_once(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> None:
    results, reports = device_reports(drive, detector)
    called = [(result, report.upload) for result, report in zip(results, reports, strict=True) if result.calls]
    assert called, "the drive's brakes are called on the device"
    for result, upload in called:
        edge = upload.edge
        assert not upload.imu.offset_ms and not upload.imu.accel_x  # no samples
        assert edge.model == MODEL
        assert edge.windows == len(result.window_ids) and sum(edge.windows_per_class) == edge.windows
        assert edge.calibration.state == common_pb2.CALIBRATION_STATE_CALIBRATED
        assert math.isclose(edge.duration_s, result.duration_s, rel_tol=1e-6)
        sent = {round(call.start_offset_s, 6) for call in edge.calls}
        for position, event_type in enumerate(result.window_calls):
            if event_type:
                assert round(result.offsets_s[position], 6) in sent
        for call in edge.calls:
            assert len(call.probabilities) == 5 and len(call.packed_features) == 26 * 4
        # Snippets: ±3 s around each window sent, each sample once, in order, within the upload.
        times = [t for call in edge.calls for t in call.imu.offset_ms]
        assert times == sorted(set(times))
        original = list(drive[results.index(result)].upload.imu.offset_ms)
        assert set(times) <= set(original)
        first = edge.calls[0]
        assert min(first.imu.offset_ms) <= max(0.0, first.start_offset_s - 3.0) * 1000 + 25
    quiet = [report.upload for result, report in zip(results, reports, strict=True) if not result.calls]
    assert any(not upload.edge.calls for upload in quiet)  # ordinary driving: nothing but counts


def test_uncertain_uncalled_windows_are_sent_for_labelling_but_not_called() -> None:
    probabilities = np.array(
        [[0.9, 0.05, 0.02, 0.02, 0.01], [0.45, 0.4, 0.05, 0.05, 0.05], [0.1, 0.8, 0.05, 0.03, 0.02]], dtype=np.float32
    )
    calls = np.array([0, 0, BRAKING])
    assert windows_to_send(probabilities, calls) == [1, 2]
    assert windows_to_send(probabilities, calls, uncertainty_band=0.0) == [2]


def test_one_upload_in_a_hundred_is_sampled_in_full_by_its_id() -> None:
    ids = [f"device-7:trip-3:{sequence}" for sequence in range(20_000)]
    share = sum(sampled_in_full(upload_id) for upload_id in ids) / len(ids)
    assert 0.008 <= share <= 0.012
    assert [sampled_in_full(upload_id) for upload_id in ids[:500]] == [sampled_in_full(i) for i in ids[:500]]
    assert not any(sampled_in_full(upload_id, 0) for upload_id in ids[:500])
    assert all(sampled_in_full(upload_id, 1) for upload_id in ids[:50])


def test_gps_thinning_keeps_the_first_and_last_fix() -> None:
    fixes = [upload_pb2.GpsFix(offset_ms=1000 * second, speed_mps=10.0) for second in range(10)]
    assert [fix.offset_ms for fix in thinned_gps(fixes, 5.0)] == [0, 5000, 9000]
    assert thinned_gps(fixes, 1.0) == fixes


# --- inference takes the device's calls ------------------------------------------------------------------------


def test_events_only_uploads_make_the_detections_and_segments_of_the_full_uploads(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> None:
    pipeline = InferencePipeline(detector, None, qa_sample_rate=0.0)
    full = run(drive, pipeline)
    _, reports = device_reports(drive, detector)
    events = run(reports, pipeline)
    cloud, device = model_detections(full), model_detections(events)
    assert [d.event_type for d in cloud] == [BRAKING, BRAKING]
    # The same detections: ids (window, type, model name), windows, confidence, where.
    assert [d.event_id for d in device] == [d.event_id for d in cloud]
    for mine, theirs in zip(device, cloud, strict=True):
        assert mine.window == theirs.window and mine.lineage.window_id == theirs.lineage.window_id
        assert mine.confidence == pytest.approx(theirs.confidence, abs=1e-6)
        assert mine.peak_value == pytest.approx(theirs.peak_value, abs=1e-5)
        assert mine.location.latitude == pytest.approx(theirs.location.latitude, abs=1e-9)
        assert mine.variant == inference_pb2.VARIANT_EDGE and mine.detector == "edge:baseline-1"
        assert mine.lineage.model_version == "baseline-1" and mine.lineage.data_version == "rules-test"
        assert mine.calibration.state == common_pb2.CALIBRATION_STATE_CALIBRATED
    # The brake across the boundary is one detection, emitted with the upload where it began, in both.
    assert [len(o.detections) for o in events] == [len(o.detections) for o in full]
    # Segments: the same exposure, so scoring's per-km figures are the same.
    for mine, theirs in zip(events, full, strict=True):
        assert mine.segment.event_id == theirs.segment.event_id
        assert mine.segment.duration_s == pytest.approx(theirs.segment.duration_s)
        assert mine.segment.distance_m == pytest.approx(theirs.segment.distance_m, rel=1e-6)
        assert list(mine.segment.detection_event_ids) == list(theirs.segment.detection_event_ids)
        assert mine.segment.variant == inference_pb2.VARIANT_EDGE and theirs.segment.variant == 0
    # Predictions: only the windows sent, with the device's probabilities and features, variant EDGE.
    predictions = [p for o in events for p in o.predictions]
    cloud_predictions = {p.lineage.window_id: p for o in full for p in o.predictions}
    assert 0 < len(predictions) < len(cloud_predictions) / 3
    for prediction in predictions:
        theirs = cloud_predictions[prediction.lineage.window_id]
        assert prediction.variant == inference_pb2.VARIANT_EDGE
        assert prediction.packed_features == theirs.packed_features
        assert prediction.predicted == theirs.predicted
        assert prediction.event_id != theirs.event_id  # another variant: never taken for the cloud's own


def test_a_redelivered_events_only_upload_adds_nothing(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> None:
    pipeline = InferencePipeline(detector, None, qa_sample_rate=0.0)
    _, reports = device_reports(drive, detector)
    states: dict[str, DeviceState] = {}
    first = [o for upload in reports for o in process_uploads([upload], states, pipeline).uploads]
    # Redelivered after the whole drive (a rebalance), then a batch holding one upload twice.
    again = [o for upload in reports for o in process_uploads([upload], states, pipeline).uploads]
    assert all(o.replayed for o in again)
    assert [[d.event_id for d in o.detections] for o in again] == [[d.event_id for d in o.detections] for o in first]
    assert [o.segment.event_id for o in again] == [o.segment.event_id for o in first]
    twice = process_uploads([reports[4], reports[4]], states, pipeline).uploads
    assert twice[0].detections == twice[1].detections == first[4].detections
    # Nothing of it asks to load a model: the device decided.
    assert recorded_versions(reports, states) == set()


def test_an_events_only_upload_with_uncertain_windows_asks_people_and_never_samples_random_qa(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> None:
    _, reports = device_reports(drive, detector)
    quiet = copy.deepcopy(next(report for report in reports if not report.upload.edge.calls))
    # A window near the threshold the device did not call (EVENT_TYPE_UNSPECIFIED): sent for people.
    quiet.upload.edge.calls.add(start_offset_s=4.0, probabilities=[0.45, 0.42, 0.05, 0.05, 0.03])
    (outcome,) = run([quiet], InferencePipeline(detector, None, qa_sample_rate=1.0))
    assert not outcome.detections
    assert [p.predicted for p in outcome.predictions] == [common_pb2.EVENT_TYPE_NORMAL]
    # Uncertain, asked for; never random QA, even at rate 1: the windows sent are no random sample.
    assert [request.reason for request in outcome.label_requests] == [labels_pb2.LABEL_REASON_UNCERTAIN]
    assert outcome.label_requests[0].lineage.window_id == outcome.predictions[0].lineage.window_id


def test_an_events_only_upload_without_calls_still_closes_its_segment(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> None:
    _, reports = device_reports(drive, detector)
    quiet = next(report for report in reports if not report.upload.edge.calls)
    (outcome,) = run([quiet], InferencePipeline(detector, None))
    assert outcome.skipped_reason is None and outcome.failure is None
    assert not outcome.predictions and not outcome.detections
    assert outcome.segment.duration_s == pytest.approx(quiet.upload.edge.duration_s, abs=1.0)
    assert outcome.segment.distance_m > 0


# --- ingest's rules ---------------------------------------------------------------------------------------------

NOW = 1_800_000_000.0


def edge_upload(calls: int = 1, rate_hz: int = 50) -> upload_pb2.Upload:
    upload = upload_pb2.Upload(
        upload_id="upload-1",
        device_id="device-1",
        driver_id="driver-1",
        trip_id="trip-1",
        sequence=3,
        sample_rate_hz=rate_hz,
        vehicle_type="car",
    )
    upload.started_at.FromSeconds(int(NOW - 20))
    upload.gps.add(offset_ms=0, latitude=35.68, longitude=139.76, speed_mps=12.0)
    edge = upload.edge
    edge.model.CopyFrom(MODEL)
    edge.calibration.state = common_pb2.CALIBRATION_STATE_CALIBRATED
    edge.calibration.forward_method = "stops"
    edge.duration_s = 10.0
    edge.windows = 9
    edge.windows_per_class.extend([9 - calls, calls, 0, 0, 0])
    for index in range(calls):
        call = edge.calls.add(
            start_offset_s=1.0 + index, event_type=BRAKING, probabilities=[0.1, 0.8, 0.05, 0.03, 0.02]
        )
        call.packed_features = np.zeros(26, dtype="<f4").tobytes()
        times = np.arange(rate_hz * 2) * (1000 // rate_hz) + 1000 * (index * 3)
        call.imu.offset_ms.extend(times.tolist())
        for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
            getattr(call.imu, name).extend([0.1] * times.size)
    return upload


def reasons(upload: upload_pb2.Upload, limits: UploadLimits | None = None) -> list[tuple[str | None, str]]:
    return [(violation.field, violation.reason) for violation in validate_upload(upload, NOW, limits or UploadLimits())]


def test_a_well_formed_events_only_upload_passes() -> None:
    assert reasons(edge_upload(calls=3)) == []
    assert reasons(edge_upload(calls=0)) == []


def broken(change: str) -> upload_pb2.Upload:
    upload = edge_upload(calls=2)
    edge = upload.edge
    if change == "samples":
        upload.imu.offset_ms.append(5)
        upload.imu.accel_x.append(0.0)
    elif change == "calls":
        edge.windows = 1
        edge.windows_per_class[:] = [0, 1, 0, 0, 0]
    elif change == "counts":
        edge.windows_per_class[:] = [1, 2]
    elif change == "order":
        edge.calls[1].start_offset_s = 0.5
    elif change == "outside":
        edge.calls[1].start_offset_s = 9.0
    elif change == "type":
        edge.calls[0].event_type = common_pb2.EVENT_TYPE_SPEEDING
    elif change == "probabilities":
        del edge.calls[0].probabilities[4]
    elif change == "probability":
        edge.calls[0].probabilities[1] = 1.5
    elif change == "nan-probability":
        edge.calls[0].probabilities[1] = math.nan
    elif change == "packed":
        edge.calls[0].packed_features = b"\0" * 6
    elif change == "wide":
        edge.calls[0].packed_features = b"\0" * 4 * 27
    elif change == "nan-feature":
        edge.calls[0].packed_features = np.full(26, np.nan, dtype="<f4").tobytes()
    elif change == "snippet-length":
        del edge.calls[1].imu.accel_y[3]
    elif change == "snippet-order":
        edge.calls[1].imu.offset_ms[5] = 0
    elif change == "snippet-value":
        edge.calls[1].imu.accel_z[7] = 400.0
    elif change == "duration":
        edge.duration_s = 300.0
    elif change == "duration-nan":
        edge.duration_s = math.nan
    elif change == "model":
        edge.model.version = ""
    elif change == "model-id":
        edge.model.name = "michi risk"
    elif change == "model-text":
        edge.model.precision = "int8\x1b[31m"
    elif change == "state":
        edge.calibration.state = 9  # type: ignore[assignment]
    elif change == "confidence":
        edge.calibration.forward_confidence = 2.0
    elif change == "gps":
        del upload.gps[:]
        upload.gps.extend(upload_pb2.GpsFix(offset_ms=index) for index in range(601))
    return upload


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ("samples", "imu", "edge-with-samples"),
        ("calls", "edge.calls", "too-many-calls"),
        ("counts", "edge.windows_per_class", "edge-counts-inconsistent"),
        ("order", "edge.calls[1].start_offset_s", "offset-not-increasing"),
        ("outside", "edge.calls[1].start_offset_s", "value-out-of-range"),
        ("type", "edge.calls[0].event_type", "unknown-enum-value"),
        ("probabilities", "edge.calls[0].probabilities", "value-out-of-range"),
        ("probability", "edge.calls[0].probabilities[1]", "value-out-of-range"),
        ("nan-probability", "edge.calls[0].probabilities[1]", "non-finite-value"),
        ("packed", "edge.calls[0].packed_features", "invalid-packed-features"),
        ("wide", "edge.calls[0].packed_features", "invalid-packed-features"),
        ("nan-feature", "edge.calls[0].packed_features", "non-finite-value"),
        ("snippet-length", "edge.calls[1].imu.accel_y", "imu-length-mismatch"),
        ("snippet-order", "edge.calls[1].imu.offset_ms[5]", "offset-not-increasing"),
        ("snippet-value", "edge.calls[1].imu.accel_z[7]", "value-out-of-range"),
        ("duration", "edge.duration_s", "value-out-of-range"),
        ("duration-nan", "edge.duration_s", "non-finite-value"),
        ("model", "edge.model.version", "required-field-missing"),
        ("model-id", "edge.model.name", "invalid-id"),
        ("model-text", "edge.model.precision", "invalid-text"),
        ("state", "edge.calibration.state", "unknown-enum-value"),
        ("confidence", "edge.calibration.forward_confidence", "value-out-of-range"),
        ("gps", "gps", "too-many-gps-fixes"),
    ],
)
def test_each_broken_rule_of_an_events_only_upload_is_named(change: str, field: str, reason: str) -> None:
    assert reasons(broken(change))[0] == (field, reason)


def test_more_than_240_calls_are_refused_and_the_snippets_share_one_uploads_sample_bound() -> None:
    limits = UploadLimits(max_upload_duration_s=240.0)
    upload = edge_upload(calls=0)
    upload.edge.duration_s = 240.0
    upload.edge.windows = 239
    upload.edge.windows_per_class[:] = [239, 0, 0, 0, 0]
    for index in range(240):
        upload.edge.calls.add(start_offset_s=float(index), probabilities=[1, 0, 0, 0, 0])
    assert reasons(upload, limits)[0] == ("edge.calls", "too-many-calls")
    few = edge_upload(calls=3)
    assert reasons(few, UploadLimits(max_samples=250))[0] == ("edge.calls[2].imu", "too-many-samples")


def test_json_bounds_the_calls_and_snippets_before_converting_them() -> None:
    upload = edge_upload(calls=1)
    document = json_format.MessageToDict(upload)
    document["edge"]["calls"] = document["edge"]["calls"] * 241
    with pytest.raises(FieldRefused) as refused:
        decode_upload(json.dumps(document).encode(), INGEST_JSON)
    assert (refused.value.reason, refused.value.field) == ("too-many-calls", "edge.calls")
    document = json_format.MessageToDict(upload)
    document["edge"]["calls"][0]["imu"]["accelX"] = [0.0] * 24_001
    with pytest.raises(FieldRefused) as refused:
        decode_upload(json.dumps(document).encode(), INGEST_JSON)
    assert (refused.value.reason, refused.value.field) == ("too-many-samples", "edge.calls[0].imu.accel_x")


@pytest.mark.parametrize("media_type", [PROTOBUF, JSON])
def test_the_device_client_encodes_an_events_only_upload_ingest_decodes_as_sent(media_type: str) -> None:
    upload = edge_upload(calls=2)
    decoded = decode_upload(encode_upload(upload, media_type), media_type)
    assert decoded == upload
    assert validate_upload(decoded, NOW, UploadLimits()) == []


def test_an_events_only_upload_from_the_builder_passes_ingest(
    drive: list[upload_pb2.UploadReceived], detector: OnnxDetector
) -> None:
    _, reports = device_reports(drive, detector)
    started = drive[0].upload.started_at.seconds
    for report in reports:
        assert validate_upload(report.upload, started + 200.0, UploadLimits()) == [], report.upload.upload_id
    # Built from any runtime result: nothing called, nothing sent but counts.
    empty = events_only_upload(
        drive[0].upload,
        model=MODEL,
        calibration=None,
        duration_s=10.0,
        offsets_s=[],
        probabilities=np.zeros((0, 5), dtype=np.float32),
        window_calls=np.zeros(0, dtype=np.int64),
        features=np.zeros((0, 26), dtype=np.float32),
    )
    assert empty.edge.windows == 0 and list(empty.edge.windows_per_class) == [0] * 5
    assert empty.edge.calibration.state == common_pb2.CALIBRATION_STATE_UNCALIBRATED


@pytest.mark.parametrize("path", [*EDGE_TEXT_FIELDS])
def test_every_text_of_the_report_is_bounded_printable_text(path: str) -> None:
    for value, reason in (("bad\x00", "invalid-text"), ("x" * 129, "value-too-long")):
        upload = edge_upload(calls=1)
        *parents, name = path.split(".")
        message = upload
        for parent in parents:
            message = getattr(message, parent)
        setattr(message, name, value)
        assert reasons(upload) == [(path, reason)]
