"""`michi evaluate` and `michi replay` without servers: the label figures, the command outputs, argument errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.cli.recordings import first_seconds, load_recording, rebased_start
from michi.infra.processes import free_port
from michi.recordings import RecordingError, read_recording, shared_recording
from michi.recordings.evaluation import (
    DetectedEvent,
    LabelledEvent,
    LabelsError,
    detections_per_hour,
    evaluate_detections,
    match_events,
    read_labels,
    trip_matches,
)
from michi.registry import ModelRegistry
from michi.windows.features import DATA_VERSION
from michi.windows.model_spec import BASELINE_MODEL_VERSION
from michi.windows.physics import PHYSICS_MODEL_VERSION
from services.inference.adapters.onnx_model import build_baseline_model

ANNOTATIONS = Path(__file__).resolve().parents[2] / "datasets/real-driving/quat-orient-auckland/annotations.csv"
FORWARD_NAMES = ["accel_2020-10-15-21", "auckland-forward"]


def braking(start: float, end: float) -> DetectedEvent:
    return DetectedEvent(start, end, "harsh_braking")


def cornering(start: float, end: float) -> DetectedEvent:
    return DetectedEvent(start, end, "harsh_cornering")


# --- matching and figures


def test_a_label_is_widened_by_one_second_on_each_side() -> None:
    label = LabelledEvent(12.9, 12.9, "harsh_braking")
    assert match_events([braking(10.0, 12.0)], [label]) == [(0, 0)]
    assert match_events([braking(13.8, 16.0)], [label]) == [(0, 0)]
    assert match_events([braking(10.0, 11.8)], [label]) == []
    assert match_events([braking(14.0, 16.0)], [label]) == []
    assert match_events([braking(13.8, 16.0)], [label], widen_s=0.5) == []


def test_each_label_matches_one_detection_and_the_second_is_another_detection() -> None:
    figures = evaluate_detections(
        [braking(10.0, 12.0), braking(12.0, 14.0)], [LabelledEvent(11.0, 13.0, "harsh_braking")], duration_s=120.0
    )
    assert (figures.matched_aggressive, figures.other_detections) == (1, 1)
    assert figures.recall == 1.0 and figures.precision == 0.5
    assert figures.other_per_minute == pytest.approx(0.5)


def test_the_matching_pairs_as_many_as_possible() -> None:
    # Detection 0 overlaps both labels, detection 1 only the first: a greedy first pick would pair 0 with the
    # first label and leave both the second label and detection 1 alone.
    detections = [braking(10.0, 12.0), braking(4.0, 6.0)]
    labels = [LabelledEvent(6.5, 9.5, "harsh_braking"), LabelledEvent(13.0, 13.0, "harsh_braking")]
    assert match_events(detections, labels) == [(1, 0), (0, 1)]
    assert evaluate_detections(detections, labels, duration_s=60.0).recall == 1.0


def test_among_equal_matchings_the_closest_label_wins() -> None:
    # A cornering inside a short roundabout label that also lies in a coarse "downhill for 50 s" label.
    detection = cornering(108.0, 110.0)
    downhill = LabelledEvent(60.0, 110.0, "downhill", "longitudinal")
    roundabout = LabelledEvent(105.0, 111.0, "roundabout", "lateral")
    figures = evaluate_detections([detection], [downhill, roundabout], duration_s=600.0)
    assert [pair.label for pair in figures.pairs] == [roundabout]
    assert figures.axis_agreement == 1.0
    # Both labels are overlapped, so both count as false alarms on normal manoeuvres.
    assert (figures.normal_overlapped, figures.normal_labels) == (2, 2)


def test_aggressive_labels_are_matched_before_normal_ones() -> None:
    detection = braking(20.0, 22.0)
    normal = LabelledEvent(21.0, 21.0, "turn_left", "lateral")
    harsh = LabelledEvent(19.0, 23.0, "harsh_braking")
    figures = evaluate_detections([detection], [normal, harsh], duration_s=60.0)
    assert [pair.label for pair in figures.pairs] == [harsh]
    assert (figures.matched_aggressive, figures.matched_normal, figures.other_detections) == (1, 0, 0)
    assert figures.normal_false_alarm_rate == 1.0


def test_every_figure_on_a_hand_built_drive() -> None:
    labels = [
        LabelledEvent(30.0, 31.0, "harsh_braking"),
        LabelledEvent(90.0, 92.0, "harsh_acceleration"),
        LabelledEvent(150.0, 153.0, "harsh_cornering"),
        LabelledEvent(200.0, 200.0, "harsh_braking"),  # missed
        LabelledEvent(250.0, 255.0, "roundabout", "lateral"),
        LabelledEvent(300.0, 300.0, "stopped", "longitudinal"),
        LabelledEvent(400.0, 430.0, "downhill"),  # no axis column: not judged for axis agreement
    ]
    detections = [
        braking(29.0, 31.0),  # harsh braking as braking: axis agrees
        cornering(91.0, 93.0),  # harsh acceleration as cornering: axis disagrees
        cornering(152.0, 154.0),  # harsh cornering: agrees
        cornering(251.0, 253.0),  # on a roundabout: a false alarm, axis agrees
        braking(410.0, 412.0),  # on the downhill: a false alarm, no axis to judge
        braking(500.0, 502.0),  # nothing labelled there
        DetectedEvent(520.0, 530.0, "speeding"),  # nothing labelled there
    ]
    figures = evaluate_detections(detections, labels, duration_s=600.0)
    assert (figures.aggressive_labels, figures.normal_labels, figures.detections) == (4, 3, 7)
    assert figures.recall == pytest.approx(3 / 4)
    assert figures.precision == pytest.approx(3 / 7)
    assert figures.normal_false_alarm_rate == pytest.approx(2 / 3)
    assert figures.other_detections == 2 and figures.other_per_minute == pytest.approx(2 / 10)
    assert (figures.axis_agreeing, figures.axis_pairs) == (3, 4)
    assert figures.axis_agreement == pytest.approx(3 / 4)
    document = figures.to_json()
    assert document["recall"] == pytest.approx(0.75) and len(document["pairs"]) == 5
    json.dumps(document)


def test_a_figure_without_a_denominator_is_none() -> None:
    figures = evaluate_detections([], [], duration_s=0.0)
    assert (figures.recall, figures.precision, figures.normal_false_alarm_rate) == (None, None, None)
    assert (figures.other_per_minute, figures.axis_agreement) == (None, None)
    normal_only = evaluate_detections([braking(1.0, 3.0)], [LabelledEvent(50.0, 50.0, "turn_left")], duration_s=60.0)
    assert normal_only.recall is None and normal_only.precision == 0.0 and normal_only.normal_false_alarm_rate == 0.0


def test_detections_per_hour_by_event_type() -> None:
    detections = [braking(0, 2), braking(10, 12), cornering(20, 22)]
    assert detections_per_hour(detections, duration_s=1800.0) == {"harsh_braking": 4.0, "harsh_cornering": 2.0}
    assert detections_per_hour(detections, duration_s=0.0) == {}


# --- the labels file


def test_the_shipped_annotations_are_read_for_their_trip() -> None:
    labels = read_labels(ANNOTATIONS, FORWARD_NAMES)
    assert len(labels) == 20 and not any(label.aggressive for label in labels)
    first = labels[0]
    assert (first.start_s, first.end_s, first.label, first.axis) == (63.91, 63.91, "turn_left", "lateral")
    assert {label.axis for label in labels if label.label in ("downhill", "uphill", "braking")} == {"longitudinal"}
    with pytest.raises(LabelsError, match=r"no row's trip names this recording.*trips in the file: 2020-10-15-21"):
        read_labels(ANNOTATIONS, ["accel_2020-10-15-22", "auckland-backwards"])


def test_a_trip_names_a_recording_only_as_a_whole_part() -> None:
    assert trip_matches("2020-10-15-21", ["accel_2020-10-15-21"])
    assert trip_matches("auckland-forward", ["accel_2020-10-15-21", "auckland-forward"])
    assert not trip_matches("2020-10-15-2", ["accel_2020-10-15-21"])
    assert not trip_matches("", ["accel_2020-10-15-21"])


def test_a_labels_file_without_trip_keeps_every_row_and_checks_them(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("t_start_s,t_end_s,label,who\n10,12,Harsh_Braking,me\n40,41,lane_change,me\n")
    labels = read_labels(path, ["anything"])
    assert [(label.label, label.aggressive, label.axis) for label in labels] == [
        ("harsh_braking", True, "longitudinal"),
        ("lane_change", False, None),
    ]
    path.write_text("t_start_s,t_end_s,label\n10,9,harsh_braking\n")
    with pytest.raises(LabelsError, match=r"row 2: t_end_s 9\.0 is before t_start_s 10\.0"):
        read_labels(path)
    path.write_text("start,end,label\n10,12,harsh_braking\n")
    with pytest.raises(LabelsError, match="columns missing: t_start_s, t_end_s"):
        read_labels(path)
    path.write_text("t_start_s,t_end_s,label\nsoon,12,harsh_braking\n")
    with pytest.raises(LabelsError, match="row 2: times must be seconds, or minutes:seconds"):
        read_labels(path)
    # As a video player shows them.
    path.write_text("t_start_s,t_end_s,label\n1:23.5,0:01:25,harsh_braking\n")
    assert [(label.start_s, label.end_s) for label in read_labels(path)] == [(83.5, 85.0)]


def test_a_labels_file_saved_by_a_spreadsheet_is_read_alike(tmp_path: Path) -> None:
    """A byte-order mark, semicolons and decimal commas: how spreadsheets in many locales save a CSV."""
    expected = [(10.5, 12.0, "harsh_braking"), (40.0, 41.25, "lane_change")]
    path = tmp_path / "labels.csv"
    for text in (
        "t_start_s,t_end_s,label\n10.5,12,harsh_braking\n40,41.25,lane_change\n",
        "\ufefft_start_s;t_end_s;label\n10,5;12;harsh_braking\n40;41,25;lane_change\n",
        "\ufefft_start_s\tt_end_s\tlabel\n10.5\t12\tharsh_braking\n40\t41.25\tlane_change\n",
    ):
        path.write_text(text, encoding="utf-8")
        assert [(label.start_s, label.end_s, label.label) for label in read_labels(path)] == expected


# --- reading recordings, rebasing


def test_rebasing_keeps_every_upload_in_the_past_when_it_is_sent() -> None:
    now, span = 1_000_000.0, 360.0
    assert rebased_start(now, span, speed=1.0) == now
    assert rebased_start(now, span, speed=0.5) == now
    assert rebased_start(now, span, speed=4.0) == now - 270.0
    assert rebased_start(now, span, speed=0.0) == now - span
    for speed in (2.0, 10.0):
        start = rebased_start(now, span, speed)
        # Upload k ends at start + end_k and is sent at now + end_k / speed.
        for end in (10.0, 120.0, span):
            assert start + end <= now + end / speed + 1e-9


def test_the_first_seconds_of_a_recording() -> None:
    recording = shared_recording("auckland-forward")
    first = first_seconds(recording, 60.0)
    assert first.times_s.max() < 60.0 and first.times_s.size == np.count_nonzero(recording.times_s < 60.0)
    assert first.accel.shape == (first.times_s.size, 3) and first.gyro is None
    assert first.gps_times_s.size == np.count_nonzero(recording.gps_times_s < 60.0) > 0
    assert first.latitude.size == first.gps_times_s.size


def test_a_recording_with_its_own_column_names(tmp_path: Path) -> None:
    times = np.arange(0, 30, 0.02)
    imu = tmp_path / "drive.csv"
    imu.write_text(
        "stamp,fwd,side,vert\n" + "".join(f"{round(t * 1000)},0.1,0.0,9.8\n" for t in times),
    )
    gps = tmp_path / "fixes.csv"
    gps.write_text("stamp,lat,lon,v,hdg\n" + "".join(f"{t * 1000},52.5,13.4,10.0,90\n" for t in range(30)))
    mapping = {
        "time": "stamp",
        "time_unit": "ms",
        "accel": ["fwd", "side", "vert"],
        "gps": {"time": "stamp", "time_unit": "ms", "speed": "v", "heading": "hdg"},
    }
    source = load_recording(str(imu), columns=json.dumps(mapping), gps_file=gps)
    assert source.recording.sample_rate_hz == pytest.approx(50.0)
    assert source.recording.gps_times_s.size == 30 and source.names[0] == "drive"
    mapping_file = tmp_path / "columns.json"
    mapping_file.write_text(json.dumps(mapping))
    assert load_recording(str(imu), columns=str(mapping_file), gps_file=gps, gps=False).recording.has_gps is False
    with pytest.raises(RecordingError, match="--columns is not JSON"):
        load_recording(str(imu), columns="{time: stamp}")
    with pytest.raises(RecordingError, match="shipped recording: --columns and --gps-file are for your own files"):
        load_recording("auckland-forward", gps_file=gps)


# --- michi evaluate


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """A fresh home: an empty model registry, the baseline installed under it."""
    return {"MICHI_HOME": str(tmp_path / ".michi"), "MICHI_DATABASE_URL": f"sqlite:///{tmp_path / 'michi.db'}"}


def test_evaluate_prints_calibration_detections_and_figures(environment: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", "auckland-forward", "--labels", str(ANNOTATIONS), "--model", "baseline"], env=environment
    )
    assert result.exit_code == 0, result.output
    output = result.output
    assert "recording    auckland-forward (" in output and "accel_2020-10-15-21.csv" in output
    assert "duration     355.4 s (5.9 min), 36 uploads" in output
    assert "sample rate  16.67 Hz, gyroscope no" in output and "GPS          yes (297 fixes)" in output
    assert f"model        michi-risk {BASELINE_MODEL_VERSION}: the built-in baseline" in output
    assert "confidence >= 0.5 from upload" in output and "mount moved     0 times" in output
    assert "labels       " in output and "0 aggressive, 20 normal" in output
    for figure in ("recall", "precision", "false alarms on normal", "other detections / min", "axis agreement"):
        assert f"  {figure} " in output
    assert "  recall                     n/a  (0 of 0 aggressive labels)" in output


def test_evaluate_as_json(environment: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app,
        ["evaluate", "auckland-forward", "--labels", str(ANNOTATIONS), "--model", "baseline", "--json"],
        env=environment,
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    recording = document["recording"]
    assert (recording["name"], recording["uploads"], recording["gps"], recording["gyroscope"]) == (
        "auckland-forward",
        36,
        True,
        False,
    )
    assert recording["sample_rate_hz"] == pytest.approx(16.667, abs=0.01)
    assert document["model"] == {
        "name": "michi-risk",
        "version": BASELINE_MODEL_VERSION,
        "source": "the built-in baseline",
        "fallback": False,
    }
    calibration = document["calibration"]
    assert len(calibration["per_upload"]) == 36 and calibration["mount_moved"] == 0
    reliable = calibration["reliable_from_upload"]
    assert reliable is not None
    assert calibration["per_upload"][reliable]["confidence"] >= 0.5
    assert all(upload["confidence"] < 0.5 for upload in calibration["per_upload"][:reliable])
    assert calibration["forward_method"] == calibration["per_upload"][-1]["forward_method"] != "none"
    detections = document["detections"]
    assert detections["count"] == len(detections["events"])
    assert detections["per_hour"] == pytest.approx(detections["count"] * 3600 / recording["duration_s"])
    labels = document["labels"]
    assert (labels["aggressive_labels"], labels["normal_labels"], labels["recall"]) == (0, 20, None)
    assert labels["detections"] == detections["count"]
    assert labels["matched_aggressive"] + labels["matched_normal"] + labels["other_detections"] == detections["count"]


def test_evaluate_with_the_physics_baseline(environment: dict[str, str]) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", "auckland-forward", "--no-gps", "--model", "physics", "--json"], env=environment
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["model"] == {
        "name": "michi-risk",
        "version": PHYSICS_MODEL_VERSION,
        "source": f"the physics baseline {PHYSICS_MODEL_VERSION}",
        "fallback": False,
    }
    # Without GPS the mount calibrates from its stops (at 40 s); the firm pull-away at 40 s and the brake at 100 s
    # (2.5-2.9 m/s², partly an 11 % hill) are what physics-3 flags on this ordinary drive as they come, and the
    # first pull-away at 11 s, held while the forward axis was unknown, in hindsight once the mount is calibrated.
    events = [
        (round(event["start_s"]), event["event_type"], event["hindsight"]) for event in document["detections"]["events"]
    ]
    assert events == [
        (11, "harsh_acceleration", True),
        (40, "harsh_acceleration", False),
        (100, "harsh_braking", False),
    ]


def test_evaluate_without_gps_and_with_an_onnx_file(environment: dict[str, str], tmp_path: Path) -> None:
    model = tmp_path / "candidate-7.onnx"
    model.write_bytes(build_baseline_model(gain_scale=2.0))
    result = CliRunner().invoke(
        app, ["evaluate", "auckland-backwards", "--no-gps", "--model", str(model), "--json"], env=environment
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["recording"]["gps"] is False and document["recording"]["gps_fixes"] == 0
    assert document["model"]["version"] == "candidate-7" and document["labels"] is None


def test_evaluate_falls_back_to_the_baseline_without_a_champion(environment: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["evaluate", "comma2k19"], env=environment)
    assert result.exit_code == 0, result.output
    note = "no champion of michi-risk in the model registry: the built-in baseline"
    assert f"model        michi-risk {BASELINE_MODEL_VERSION}: {note}" in result.output
    assert "gyroscope yes" in result.output


class PlansNotSent:
    """The registry publishes a rollout plan on promotion; nothing listens here."""

    def publish_and_wait(self, *arguments: object, **options: object) -> None:
        return None


def test_evaluate_uses_the_champion_of_the_registry(environment: dict[str, str], tmp_path: Path) -> None:
    payload = build_baseline_model(gain_scale=3.0)
    artifact = tmp_path / "blobs" / "models" / "michi-risk" / "1" / "model.onnx"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(payload)
    registry = ModelRegistry.from_url(environment["MICHI_DATABASE_URL"], PlansNotSent())
    try:
        version = registry.register(
            "michi-risk",
            f"file://{artifact}",
            hashlib.sha256(payload).hexdigest(),
            "src-test",
            DATA_VERSION,
            {},
            {},
            created_by="test",
        )
        registry.promote("michi-risk", version.version, actor="test", reason="evaluate it")
    finally:
        registry.close()
    result = CliRunner().invoke(
        app,
        ["evaluate", "auckland-forward", "--json"],
        env={**environment, "MICHI_BLOB_URL": f"file://{tmp_path / 'blobs'}"},
    )
    assert result.exit_code == 0, result.output
    model = json.loads(result.stdout)["model"]
    assert model == {
        "name": "michi-risk",
        "version": version.version,
        "source": "the model registry's champion",
        "fallback": False,
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["no-such-drive"], "no-such-drive: no such file, nor a shipped recording (auckland-forward"),
        (["auckland-forward", "--model", "missing.onnx"], "--model missing.onnx: no such file (--model is champion"),
        (["comma2k19", "--labels", str(ANNOTATIONS)], "no row's trip names this recording (imu, comma2k19)"),
    ],
)
def test_evaluate_refuses_what_it_cannot_read(environment: dict[str, str], arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["evaluate", *arguments], env=environment)
    assert result.exit_code == 1
    assert message in result.output


# --- michi replay: argument errors (sending is tests/integration/test_replay_ingest.py)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["no-such-drive"], "no-such-drive: no such file, nor a shipped recording"),
        (["auckland-forward", "--speed", "-1"], "--speed must be 0 (as fast as possible) or more"),
        (["auckland-forward", "--upload-seconds", "0"], "--upload-seconds must be more than 0"),
        (["auckland-forward", "--limit-seconds", "-5"], "--limit-seconds must be more than 0"),
        (["auckland-forward", "--token", "abc"], "--token belongs to one device: name it with --device"),
        (["auckland-forward", "--columns", "{}"], "shipped recording: --columns and --gps-file are for your own"),
        (["auckland-forward", "--device", "cam 1"], "--device 'cam 1': ids are 1-128 characters"),
        (["auckland-forward", "--trip-id", "a/b"], "--trip-id 'a/b': ids are 1-128 characters"),
    ],
)
def test_replay_refuses_bad_arguments(environment: dict[str, str], arguments: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["replay", *arguments, "--target", "http://127.0.0.1:9"], env=environment)
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_replay_needs_a_target(environment: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["replay", "auckland-forward"], env=environment)
    assert result.exit_code == 2 and "--target" in result.output


def test_replay_stops_at_once_when_nothing_answers(environment: dict[str, str], tmp_path: Path) -> None:
    target = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(
        app, ["replay", "auckland-forward", "--target", target, "--speed", "0"], env=environment
    )
    assert result.exit_code == 1
    assert f"no answer from {target}: ConnectError" in result.output
    # Nothing was registered: the device registry was never opened.
    assert not (tmp_path / "michi.db").exists()


def test_json_and_npz_recordings_read_as_the_same_drive(tmp_path: Path) -> None:
    drive = shared_recording("auckland-forward")
    gps = {
        "time_s": drive.gps_times_s.tolist(),
        "latitude": drive.latitude.tolist(),
        "longitude": drive.longitude.tolist(),
        "speed_mps": drive.speed_mps.tolist(),
        "heading_deg": drive.heading_deg.tolist(),
    }
    as_json = tmp_path / "drive.json"
    as_json.write_text(
        json.dumps({"imu": {"time_s": drive.times_s.tolist(), "accel": drive.accel.tolist(), "gyro": None}, "gps": gps})
    )
    as_npz = tmp_path / "drive.npz"
    np.savez(
        as_npz,
        imu_time_s=drive.times_s,
        accel=drive.accel,
        gps_time_s=drive.gps_times_s,
        **{name: np.asarray(values) for name, values in gps.items() if name != "time_s"},
    )
    for path in (as_json, as_npz):
        read = read_recording(path)
        assert read.gyro is None and read.sample_rate_hz == pytest.approx(drive.sample_rate_hz)
        np.testing.assert_allclose(read.accel, drive.accel)
        np.testing.assert_allclose(read.gps_times_s, drive.gps_times_s)
        np.testing.assert_allclose(read.speed_mps, drive.speed_mps)
