"""The reference rule (`michi.recordings.threshold_rule`) on synthetic signals, on a real drive, and in `michi evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from michi.cli import app
from michi.recordings import Recording, shared_recording
from michi.recordings.evaluation import UNTYPED_EVENT, DetectedEvent, LabelledEvent, evaluate_detections
from michi.recordings.injection import BRAKING, Manoeuvre, inject_manoeuvres, quiet_moments
from michi.recordings.threshold_rule import ThresholdRule, recording_rule_detections, rule_detections
from michi.windows.calibration import Calibration
from michi.windows.chain import ChainedUpload
from michi.windows.features import empty_windows
from michi.windows.upload import UploadData
from services.trainer.domain.real_data import gps_truth
from tests.scripted_drive import GRAVITY, mount_matrix

ANNOTATIONS = Path(__file__).resolve().parents[2] / "datasets/real-driving/quat-orient-auckland/annotations.csv"
# A phone yawed, pitched and rolled in its holder: no device axis is a vehicle axis.
MOUNT = mount_matrix(120.0, 25.0, -10.0)
UPLOAD_S = 10.0


def pulse(times: np.ndarray, start_s: float, hold_s: float, ramp_s: float = 0.1) -> np.ndarray:
    """0 → 1 → 0 with linear ramps: a manoeuvre held `hold_s` at full strength."""
    rise = np.clip((times - start_s) / ramp_s, 0.0, 1.0)
    fall = np.clip((start_s + 2 * ramp_s + hold_s - times) / ramp_s, 0.0, 1.0)
    return np.minimum(rise, fall)


def sample_times(duration_s: float, rate_hz: float, jitter: float = 0.0, seed: int = 3) -> np.ndarray:
    """Sample times at `rate_hz`, each interval off by up to ±`jitter` of itself."""
    steps = np.full(int(duration_s * rate_hz), 1.0 / rate_hz)
    steps *= 1.0 + np.random.default_rng(seed).uniform(-jitter, jitter, steps.size)
    return np.concatenate([[0.0], np.cumsum(steps)[:-1]])


def device_accel(times: np.ndarray, longitudinal: np.ndarray, lateral: np.ndarray, seed: int = 5) -> np.ndarray:
    """Specific force in device axes: the vehicle's acceleration, gravity along up and a little road noise."""
    noise = np.random.default_rng(seed).normal(0.0, 0.08, (times.size, 3))
    vehicle = np.column_stack([longitudinal, lateral, np.full(times.size, GRAVITY)]) + noise
    return np.asarray(vehicle @ MOUNT.T)


def calibration(forward_known: bool) -> Calibration:
    """The mount's true rotation; its forward axis reliable or not."""
    return Calibration(
        rotation=MOUNT.T,
        gravity_mps2=GRAVITY,
        confidence=1.0 if forward_known else 0.0,
        gravity_confidence=1.0,
        forward_confidence=1.0 if forward_known else 0.0,
        forward_method="gps" if forward_known else "none",
        orientation_changed=False,
    )


def chained(times: np.ndarray, accel: np.ndarray, *, forward_known: bool = True) -> list[ChainedUpload]:
    """The drive as 10 s uploads each read with a hand-set calibration (the rule alone, without estimating one)."""
    links = []
    for index in range(int(np.ceil(times[-1] / UPLOAD_S))):
        inside = (times >= index * UPLOAD_S) & (times < (index + 1) * UPLOAD_S)
        data = UploadData(
            upload_id=f"upload-{index}",
            device_id="device",
            driver_id="driver",
            trip_id="trip",
            sequence=index,
            trip_end=False,
            firmware_version="test",
            vehicle_type="",
            declared_sample_rate_hz=50.0,
            started_at_s=1000.0 + index * UPLOAD_S,
            trace_id="",
            times_s=times[inside] - index * UPLOAD_S,
            accel=accel[inside],
            gyro=np.zeros((int(inside.sum()), 3)),
            gps_times_s=np.zeros(0),
            latitude=np.zeros(0),
            longitude=np.zeros(0),
            speed_mps=np.zeros(0),
            heading_deg=np.zeros(0),
            has_gyroscope=False,
        )
        links.append(ChainedUpload(data, calibration(forward_known), empty_windows(), None))
    return links


def detect(
    longitudinal_mps2: float = 0.0,
    lateral_mps2: float = 0.0,
    *,
    hold_s: float = 1.0,
    ramp_s: float = 0.1,
    forward_known: bool = True,
    rule: ThresholdRule | None = None,
) -> list[DetectedEvent]:
    """The rule on 30 s of driving with one manoeuvre from 9.6 s, through hand-calibrated uploads."""
    times = sample_times(30.0, 50.0)
    shape = pulse(times, 9.6, hold_s, ramp_s)
    accel = device_accel(times, longitudinal_mps2 * shape, lateral_mps2 * shape)
    return rule_detections(chained(times, accel, forward_known=forward_known), origin_s=1000.0, rule=rule)


def recording(times: np.ndarray, accel: np.ndarray, *, linear: bool = False) -> Recording:
    empty = np.zeros(0)
    return Recording("synthetic", times, accel, None, empty, empty, empty, empty, empty, linear_acceleration=linear)


# --- the rule on synthetic signals


def test_a_firm_one_second_brake_is_found_once_and_typed_braking() -> None:
    # 9.6-10.8 s: the brake straddles two uploads and is still one detection.
    [found] = detect(-2.8)
    assert found.event_type == "harsh_braking"
    assert 9.6 <= found.start_s < found.end_s <= 11.0


@pytest.mark.parametrize(
    ("longitudinal", "lateral", "event_type"),
    [(2.8, 0.0, "harsh_acceleration"), (0.0, 2.8, "harsh_cornering"), (0.0, -2.8, "harsh_cornering")],
)
def test_the_event_type_is_the_dominant_vehicle_axis_at_the_peak(
    longitudinal: float, lateral: float, event_type: str
) -> None:
    assert [found.event_type for found in detect(longitudinal, lateral)] == [event_type]


def test_a_brake_under_the_threshold_is_not_found() -> None:
    assert detect(-2.2) == []
    # The threshold is a parameter.
    assert len(detect(-2.2, rule=ThresholdRule(threshold_mps2=2.0))) == 1


def test_a_short_spike_is_smoothed_away() -> None:
    # 0.2 s at 4 m/s², averaged over 0.5 s, is 1.6 m/s²; held 0.6 s it is a manoeuvre.
    assert detect(4.0, hold_s=0.2, ramp_s=0.01) == []
    assert len(detect(4.0, hold_s=0.6, ramp_s=0.01)) == 1
    # Without the smoothing the spike alone crosses the threshold.
    assert len(detect(4.0, hold_s=0.2, ramp_s=0.01, rule=ThresholdRule(smoothing_s=0.0))) == 1


def test_runs_less_than_a_second_apart_are_one_detection() -> None:
    times = sample_times(30.0, 50.0)
    # Smoothed, the first brake falls under the threshold 0.8 s before the second rises above it.
    close = pulse(times, 12.0, 0.8) + pulse(times, 13.3, 0.8)
    apart = pulse(times, 12.0, 0.8) + pulse(times, 15.0, 0.8)
    for shape, count in ((close, 1), (apart, 2)):
        links = chained(times, device_accel(times, -2.9 * shape, np.zeros(times.size)))
        assert len(rule_detections(links, origin_s=1000.0)) == count


def test_without_a_forward_axis_a_detection_is_untyped_and_not_judged_for_its_axis() -> None:
    [found] = detect(-2.8, forward_known=False)
    assert found.event_type == UNTYPED_EVENT
    figures = evaluate_detections([found], [LabelledEvent(9.8, 10.6, "harsh_braking")], duration_s=30.0)
    assert (figures.recall, figures.precision) == (1.0, 1.0)
    assert (figures.axis_pairs, figures.axis_agreement) == (0, None)


def test_gravity_on_a_tilted_mount_is_not_horizontal_acceleration() -> None:
    # The product's own calibration finds up; read in raw device axes, the tilt alone would be ~4.5 m/s².
    times = sample_times(90.0, 50.0)
    quiet = device_accel(times, np.zeros(times.size), np.zeros(times.size))
    assert np.hypot(quiet[:, 0], quiet[:, 1]).mean() > 2.5
    assert recording_rule_detections(recording(times, quiet)) == []
    braking = device_accel(times, -2.8 * pulse(times, 60.0, 1.0), np.zeros(times.size))
    [found] = recording_rule_detections(recording(times, braking))
    assert 59.9 <= found.start_s < found.end_s <= 61.4


def test_gravity_free_samples_are_read_as_they_are() -> None:
    times = sample_times(90.0, 50.0)
    accel = device_accel(times, -2.8 * pulse(times, 60.0, 1.0), np.zeros(times.size)) - GRAVITY * MOUNT[:, 2]
    [found] = recording_rule_detections(recording(times, accel, linear=True))
    assert 59.9 <= found.start_s < found.end_s <= 61.4


def test_a_fractional_rate_with_jittery_timestamps() -> None:
    # A phone at 16.7 Hz whose sample intervals wander by ±5 %.
    times = sample_times(90.0, 16.7, jitter=0.05)
    assert np.ptp(np.diff(times)) > 0.005
    for strength, count in ((-2.8, 1), (-2.2, 0)):
        accel = device_accel(times, strength * pulse(times, 60.0, 1.0), np.zeros(times.size))
        found = recording_rule_detections(recording(times, accel))
        assert len(found) == count
        assert all(59.8 <= event.start_s < event.end_s <= 61.5 for event in found)


def test_a_hard_brake_added_to_a_real_drive_is_found_and_typed_braking() -> None:
    # The drive's own grade and driving add to an added brake or take from it (a 2.8 m/s² brake here reads
    # 2.0-2.6 m/s²): 3.5 m/s² is over the threshold whatever the road does.
    drive = shared_recording("auckland-forward").without_gps()
    forward, up = gps_truth(shared_recording("auckland-forward"))
    start = quiet_moments(shared_recording("auckland-forward"))[1]

    def near(events: list[DetectedEvent]) -> list[str]:
        return [event.event_type for event in events if event.end_s >= start and event.start_s <= start + 2.0]

    assert near(recording_rule_detections(drive)) == []
    brake = Manoeuvre(BRAKING, start, peak_mps2=3.5, hold_s=1.0, ramp_s=0.3)
    injected, _ = inject_manoeuvres(drive, [brake], forward=forward, up=up)
    assert near(recording_rule_detections(injected)) == ["harsh_braking"]


# --- michi evaluate --reference


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    """A fresh home: an empty model registry."""
    return {"MICHI_HOME": str(tmp_path / ".michi"), "MICHI_DATABASE_URL": f"sqlite:///{tmp_path / 'michi.db'}"}


def evaluate(environment: dict[str, str], *arguments: str) -> str:
    result = CliRunner().invoke(
        app,
        ["evaluate", "auckland-forward", "--labels", str(ANNOTATIONS), "--model", "physics", *arguments],
        env=environment,
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_evaluate_prints_the_rule_beside_the_model(environment: dict[str, str]) -> None:
    plain = evaluate(environment)
    assert "reference" not in plain
    output = evaluate(environment, "--reference")
    assert output.startswith(plain)
    extra = output[len(plain) :]
    assert extra.startswith(
        "reference    horizontal acceleration smoothed over 0.5 s above 2.5 m/s², runs less than 1 s apart merged\n"
    )
    assert "harsh_acceleration" in extra and "matches " in extra
    assert "  figure                   model   rule  (rule's counts)" in extra
    for figure in ("recall", "precision", "false alarms on normal", "other detections / min", "axis agreement"):
        assert f"\n  {figure} " in extra
    assert "  recall                     n/a    n/a  (0 of 0)" in extra


def test_evaluate_json_has_the_rule_under_its_own_key(environment: dict[str, str]) -> None:
    assert "reference" not in json.loads(evaluate(environment, "--json"))
    document = json.loads(evaluate(environment, "--json", "--reference"))
    reference = document["reference"]
    assert reference["rule"] == {"threshold_mps2": 2.5, "smoothing_s": 0.5, "merge_gap_s": 1.0}
    detections = reference["detections"]
    assert detections["count"] == len(detections["events"]) > 0
    assert detections["per_hour"] == pytest.approx(detections["count"] * 3600 / document["recording"]["duration_s"])
    # The firm pull-away 40 s in, which physics-3 flags too, is a harsh acceleration for the rule as well.
    assert any(
        39.0 <= event["start_s"] <= 46.0 and event["event_type"] == "harsh_acceleration"
        for event in detections["events"]
    )
    labels = reference["labels"]
    assert (labels["aggressive_labels"], labels["normal_labels"], labels["detections"]) == (0, 20, detections["count"])
    assert labels["matched_aggressive"] + labels["matched_normal"] + labels["other_detections"] == detections["count"]
    # The model's own figures are untouched by the flag.
    assert document["labels"] == json.loads(evaluate(environment, "--json"))["labels"]
