"""The trainer's real-data section, its gate rule, user recordings (evaluation and training), physics-3 in the registry.

Covers: detections as serving makes them (the decision threshold, `detection_allowed`, consecutive
windows merged) and the figures over them (false alerts per hour of normal driving, aggressive labels
found by their class, normal labels alerted); the gate refusing a candidate behind the physics
baseline on real data (false alerts per hour beyond the margin, a labelled aggressive event the
baseline finds and the candidate misses), the bootstrap's advisory checks; a user's recording folder
(evaluated, unreadable files named) and a labelled recording becoming training data with its own
version; physics-3 registered once as a candidate that can go to shadow; the road map's data version
for speeding detections.

Run: .venv/bin/pytest tests/unit/test_trainer_real_data.py -q
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from michi.recordings import shared_recording
from michi.recordings.evaluation import LabelledEvent
from michi.registry import Stage, VersionAlreadyRegistered
from michi.roads import RoadMap
from michi.windows.features import FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from michi.windows.physics import PHYSICS_DATA_VERSION, PHYSICS_MODEL_VERSION, build_physics_model
from services.inference.domain.speeding import road_map_version
from services.trainer.adapters.onnx_model import OnnxRiskModel
from services.trainer.adapters.recordings import RealRecordings
from services.trainer.domain.dataset import build_dataset
from services.trainer.domain.gate import PHYSICS_RULE, GatePolicy, decide
from services.trainer.domain.labels import CLASS_NAMES, LABEL_SOURCE_IMPORTED, source_name
from services.trainer.domain.real_data import RealWindows, real_data_section, recording_figures
from services.trainer.handlers import TrainerWiring, next_version, register_physics_model
from services.trainer.settings import TrainerSettings
from services.trainer.wiring import build_wiring

from ..fakes import RecordingPlanPublisher

NORMAL, BRAKING, ACCELERATION, CORNERING = range(4)


def synthetic(
    decisions: list[int], allowed: list[bool] | None = None, labels: tuple[LabelledEvent, ...] = ()
) -> tuple[np.ndarray, RealWindows]:
    """Probabilities deciding `decisions` (one per window, 1 s hop) and the recording they belong to."""
    count = len(decisions)
    probabilities = np.full((count, 5), 0.05, dtype=np.float32)
    probabilities[np.arange(count), decisions] = 0.8
    starts = np.arange(count, dtype=np.float64)
    windows = RealWindows(
        recording="drive",
        variant="gps",
        duration_s=float(count + 1),
        starts_s=starts,
        ends_s=starts + 2.0,
        features=np.zeros((count, len(FEATURE_NAMES)), dtype=np.float32),
        signals=np.zeros((count, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32),
        allowed=np.array(allowed if allowed is not None else [True] * count),
        labels=labels,
    )
    return probabilities, windows


def test_detections_follow_the_serving_rule_and_are_judged_against_the_labels() -> None:
    decisions = [NORMAL] * 40
    decisions[2:4] = [BRAKING, BRAKING]  # one detection of two windows: the labelled brake
    decisions[9] = CORNERING  # not allowed (uncalibrated, no GPS): no detection
    decisions[15] = ACCELERATION  # a false alert, over a labelled turn
    decisions[30] = CORNERING  # a false alert on normal driving
    allowed = [True] * 40
    allowed[9] = False
    labels = (
        LabelledEvent(3.0, 3.5, "harsh_braking"),
        LabelledEvent(20.0, 22.0, "harsh_cornering"),  # nothing detected there: missed
        LabelledEvent(16.0, 16.0, "turn_left", "lateral"),
        LabelledEvent(25.0, 25.0, "roundabout", "lateral"),
    )
    probabilities, windows = synthetic(decisions, allowed, labels)
    figures = recording_figures(probabilities, windows)
    assert [(event.event_type, event.start_s, event.end_s) for event in figures.detections] == [
        ("harsh_braking", 2.0, 5.0),
        ("harsh_acceleration", 15.0, 17.0),
        ("harsh_cornering", 30.0, 32.0),
    ]
    assert figures.false_alerts == 2
    assert figures.aggressive_found == [0] and figures.aggressive_labels == 2
    assert (figures.normal_labels, figures.normal_labels_alerted) == (2, 1)
    # Normal driving: 41 s less the aggressive labels widened by 1 s (2.0-4.5 and 19-23).
    assert figures.normal_hours == pytest.approx((41.0 - 2.5 - 4.0) / 3600.0)
    # A harsh argmax below the 0.5 threshold is no detection.
    probabilities[2:4] = [0.3, 0.45, 0.1, 0.1, 0.05]
    assert recording_figures(probabilities, windows).detections[0].event_type != "harsh_braking"


def test_the_section_pools_recordings_and_says_none_when_there_is_nothing_to_measure() -> None:
    quiet, first = synthetic([NORMAL] * 10)
    noisy, second = synthetic([NORMAL] * 5 + [CORNERING] + [NORMAL] * 4)
    recordings = [first, second]
    outputs = iter([quiet, noisy])
    section = real_data_section(lambda features, signals: next(outputs), recordings)
    metrics = section["metrics"]
    assert metrics["real_recordings"] == 2 and metrics["real_false_alerts"] == 1
    assert metrics["real_false_alerts_per_hour"] == pytest.approx(1 / (22.0 / 3600.0))
    assert metrics["real_aggressive_recall"] is None and metrics["real_normal_labels_alerted"] is None
    assert metrics["real_calibration_error_deg_max"] is None


def section_with(false_alerts: int, found: list[str], hours: float = 1.0) -> dict[str, object]:
    return {
        "metrics": {"real_false_alerts_per_hour": false_alerts / hours, "real_recordings": 1},
        "recordings": [{"recording": "drive/gps"}],
        "aggressive_found": found,
    }


def test_the_gate_refuses_a_candidate_behind_the_physics_baseline_on_real_data() -> None:
    policy = GatePolicy(minimums={}, maximums={}, not_behind_champion={})
    physics = section_with(1, ["drive/gps#0", "drive/gps#3"])

    def verdict(candidate: dict[str, object], **options: bool) -> tuple[bool, list[str]]:
        decision = decide(
            policy, {}, None, real_candidate=candidate, real_reference=physics, reference_label="physics-3", **options
        )
        assert all(check.rule == PHYSICS_RULE for check in decision.checks)
        return decision.passed, [check.metric for check in decision.failures]

    assert verdict(section_with(1, ["drive/gps#0", "drive/gps#3"])) == (True, [])
    # 0.5 false alerts per hour of margin: 1.4/h passes, 2/h does not.
    assert verdict(section_with(7, ["drive/gps#0", "drive/gps#3"], hours=5.0)) == (True, [])
    assert verdict(section_with(2, ["drive/gps#0", "drive/gps#3"])) == (False, ["real_false_alerts_per_hour"])
    # Finding more than physics does not make up for missing one it finds.
    assert verdict(section_with(0, ["drive/gps#0", "drive/gps#5"])) == (False, ["real_missed_aggressive"])
    # The bootstrap's real-data checks are advisory by default: recorded, failing, not refusing.
    decision = decide(
        policy, {}, None, real_candidate=section_with(5, []), real_reference=physics, real_data_advisory=True
    )
    assert decision.passed and not decision.failures
    assert [(check.metric, check.passed, check.advisory) for check in decision.checks] == [
        ("real_false_alerts_per_hour", False, True),
        ("real_missed_aggressive", False, True),
    ]
    assert "FAILED (advisory)" in decision.checks[0].describe()
    # No real recording: nothing to check.
    empty = {"metrics": {}, "recordings": [], "aggressive_found": []}
    assert decide(policy, {}, None, real_candidate=empty, real_reference=physics).checks == ()


def test_gate_policy_reads_the_physics_margins_and_the_bootstrap_flag() -> None:
    policy = GatePolicy.from_dict(
        {"not_behind_physics": {"real_false_alerts_per_hour": 1}, "enforce_real_data_at_bootstrap": True}
    )
    assert policy.not_behind_physics == {"real_false_alerts_per_hour": 1.0}
    assert policy.enforce_real_data_at_bootstrap is True
    assert GatePolicy().not_behind_physics == {"real_false_alerts_per_hour": 0.5, "real_missed_aggressive": 0.0}
    assert GatePolicy().enforce_real_data_at_bootstrap is False
    with pytest.raises(ValueError, match="unknown metrics"):
        GatePolicy.from_dict({"not_behind_physics": {"harsh_recall": 0.1}})
    with pytest.raises(ValueError, match="true or false"):
        GatePolicy.from_dict({"enforce_real_data_at_bootstrap": "yes"})


def write_recording(path: Path, seconds: float = 90.0) -> None:
    """The first `seconds` of auckland-forward as a JSON recording a user would add."""
    recording = shared_recording("auckland-forward")
    imu = recording.times_s < seconds
    fixes = recording.gps_times_s < seconds
    path.write_text(
        json.dumps(
            {
                "imu": {
                    "time_s": recording.times_s[imu].tolist(),
                    "accel": recording.accel[imu].tolist(),
                    "gyro": None,
                },
                "gps": {
                    "time_s": recording.gps_times_s[fixes].tolist(),
                    "latitude": recording.latitude[fixes].tolist(),
                    "longitude": recording.longitude[fixes].tolist(),
                    "speed_mps": recording.speed_mps[fixes].tolist(),
                    "heading_deg": recording.heading_deg[fixes].tolist(),
                },
            }
        )
    )


def test_a_users_recordings_join_the_evaluation_and_unreadable_ones_are_named(tmp_path: Path) -> None:
    folder = tmp_path / "evaluation"
    folder.mkdir()
    write_recording(folder / "my-drive.json")
    (folder / "my-drive.labels.csv").write_text(
        "t_start_s,t_end_s,label\n40.0,41.0,harsh_acceleration\n70,70,turn_left\n"
    )
    (folder / "broken.csv").write_text("nothing,useful\n1,2\n")
    (folder / "notes.txt").write_text("not a recording")
    recordings, skipped = RealRecordings(evaluation_folder=folder, shipped=False).evaluation_windows()
    # With GPS, without, and without GPS with a real-strength manoeuvre added at a steady moment (for recall).
    assert [windows.key for windows in recordings] == ["my-drive/gps", "my-drive/no-gps", "my-drive/no-gps+manoeuvres"]
    injected = recordings[2]
    assert not injected.normal_driving and [label.label for label in injected.labels] == ["harsh_braking"]
    assert list(skipped) == ["broken.csv"] and "time column" in skipped["broken.csv"]
    first = recordings[0]
    assert first.count >= 80 and first.labels[0].label == "harsh_acceleration"
    assert first.calibration_error_deg is not None and first.calibration_error_deg < 15.0
    physics = real_data_section(OnnxRiskModel(build_physics_model()).predict, recordings)
    # The labelled start at 40 s pulls away at 2.9 m/s² (0.3 g): physics-3 finds it with and without GPS,
    # and the added brake too; the added variant's own driving is not counted again.
    assert physics["metrics"]["real_aggressive_labels"] == 3
    assert physics["metrics"]["real_aggressive_found"] == 3
    assert physics["metrics"]["real_normal_labels"] == 2
    assert physics["metrics"]["real_false_alerts"] == 0


def test_a_phone_loggers_separate_gyroscope_file_goes_with_its_recording_and_is_no_recording_itself(
    tmp_path: Path,
) -> None:
    """Android loggers write one file per sensor, bare x, y, z columns in nanoseconds: `drive.gyro.csv` is the
    gyroscope of `drive.csv`, on its clock, and counts in the recording's digest."""
    folder = tmp_path / "evaluation"
    folder.mkdir()
    times_ns = (np.arange(0.0, 60.0, 0.01) * 1e9).astype(np.int64) + 1_700_000_000_000_000_000
    gravity = np.tile([0.3, 0.2, 9.78], (times_ns.size, 1)) + np.random.default_rng(5).normal(
        0, 0.05, (times_ns.size, 3)
    )
    rows = "\n".join(f"{t},{x:.4f},{y:.4f},{z:.4f}" for t, (x, y, z) in zip(times_ns, gravity, strict=True))
    (folder / "phone.csv").write_text("time,x,y,z\n" + rows + "\n")
    rotation = "\n".join(f"{t},0.001,-0.002,{0.05 * np.sin(t / 1e9):.4f}" for t in times_ns[::2])
    (folder / "phone.gyro.csv").write_text("time,x,y,z\n" + rotation + "\n")
    recordings = RealRecordings(evaluation_folder=folder, shipped=False)
    files, skipped = recordings.evaluation_files()
    assert skipped == {} and [file.names[0] for file in files] == ["phone"]
    recording = files[0].recording
    assert recording.gyro is not None and recording.gyro.shape == recording.accel.shape
    assert not recording.linear_acceleration and abs(recording.sample_rate_hz - 100.0) < 1.0
    digest = files[0].digest
    (folder / "phone.gyro.csv").write_text("time,x,y,z\n" + rotation.replace("0.001,", "0.002,") + "\n")
    assert RealRecordings(evaluation_folder=folder, shipped=False).evaluation_files()[0][0].digest != digest


def write_logger_export(folder: Path, seconds: float = 90.0) -> None:
    """The first `seconds` of auckland-forward as Sensor Logger exports a drive: a CSV per sensor, times in ns."""
    recording = shared_recording("auckland-forward")
    folder.mkdir(parents=True)
    origin_ns = 1_700_000_000_000_000_000
    imu = recording.times_s < seconds
    lines = [
        f"{origin_ns + int(t * 1e9)},{x:.4f},{y:.4f},{z:.4f}"
        for t, (x, y, z) in zip(recording.times_s[imu], recording.accel[imu], strict=True)
    ]
    (folder / "TotalAcceleration.csv").write_text("time,x,y,z\n" + "\n".join(lines) + "\n")
    fixes = recording.gps_times_s < seconds
    rows = zip(
        recording.gps_times_s[fixes],
        recording.latitude[fixes],
        recording.longitude[fixes],
        recording.speed_mps[fixes],
        recording.heading_deg[fixes],
        strict=True,
    )
    lines = [f"{origin_ns + int(t * 1e9)},{lat:.6f},{lon:.6f},{v:.2f},{h:.1f}" for t, lat, lon, v, h in rows]
    (folder / "Location.csv").write_text("time,latitude,longitude,speed,bearing\n" + "\n".join(lines) + "\n")
    (folder / "Metadata.csv").write_text("device name,version\nPixel,1\n")


def test_a_phone_loggers_export_folder_or_zip_is_a_recording_with_its_labels_beside_it(tmp_path: Path) -> None:
    folder = tmp_path / "evaluation"
    write_logger_export(folder / "commute")
    (folder / "commute.labels.csv").write_text("t_start_s,t_end_s,label\n40.0,41.0,harsh_acceleration\n")
    with zipfile.ZipFile(folder / "errand.zip", "w") as archive:
        for member in sorted((folder / "commute").iterdir()):
            archive.write(member, f"errand/{member.name}")
    files, skipped = RealRecordings(evaluation_folder=folder, shipped=False).evaluation_files()
    assert skipped == {} and [file.names[0] for file in files] == ["commute", "errand"]
    commute, errand = files
    assert commute.recording.has_gps and errand.recording.has_gps
    assert commute.labels is not None and [label.label for label in commute.labels] == ["harsh_acceleration"]
    assert errand.labels is None
    np.testing.assert_allclose(commute.recording.accel, errand.recording.accel)
    # The export's content is the recording's digest: a changed sensor file is another recording.
    before = commute.digest
    with (folder / "commute" / "Metadata.csv").open("a") as metadata:
        metadata.write("Pixel,2\n")
    files, _ = RealRecordings(evaluation_folder=folder, shipped=False).evaluation_files()
    assert files[0].digest != before


def test_a_labelled_recording_becomes_training_data_with_its_own_version(tmp_path: Path) -> None:
    folder = tmp_path / "training"
    folder.mkdir()
    write_recording(folder / "labelled.json")
    write_recording(folder / "unlabelled.json", seconds=30.0)
    labels = folder / "labelled.labels.csv"
    labels.write_text("t_start_s,t_end_s,label\n40.0,42.0,harsh_acceleration\n60.0,60.0,pothole\n")
    source = RealRecordings(training_folder=folder, shipped=False)
    windows, summary = source.training_windows()
    assert summary["recordings"] == 1 and summary["skipped"] == {"unlabelled": "no labels file"}
    assert str(summary["version"]).startswith("real-") and windows.count == summary["windows"]
    assert set(windows.sources) == {LABEL_SOURCE_IMPORTED} and source_name(LABEL_SOURCE_IMPORTED) == "imported"
    starts = windows.starts_s - windows.starts_s.min()
    classes = {CLASS_NAMES[label] for label in windows.labels}
    assert classes == {"normal", "harsh_acceleration", "confounder"}
    harsh = starts[windows.labels == CLASS_NAMES.index("harsh_acceleration")]
    assert harsh.min() >= 37.0 and harsh.max() <= 42.0
    assert len(set(windows.trip_ids)) == 1 and windows.trip_ids[0].startswith("real-")
    first = build_dataset([windows]).data_version
    # Relabel: same windows, a new dataset version; the window ids do not move.
    labels.write_text("t_start_s,t_end_s,label\n40.0,42.0,harsh_braking\n")
    relabelled, again = source.training_windows()
    assert again["version"] != summary["version"]
    assert build_dataset([relabelled]).data_version != first
    # Windows labelled in both versions keep their ids (the recording, not its labels, names them).
    assert set(windows.window_ids) & set(relabelled.window_ids)


@pytest.fixture
def wiring(tmp_path: Path) -> Iterator[TrainerWiring]:
    home = tmp_path / ".michi"
    settings = TrainerSettings(
        home=home,
        database_url=f"sqlite:///{home / 'michi.db'}",
        blob_url=f"file://{home / 'blobs'}",
        trainer_cache_dir=home / "cache" / "models",
        trainer_simulation={"fleets": [{"seed": 21, "sample_rate_hz": 50}], "devices": 6, "duration_s": 600.0},
        trainer_reference_traffic={"fleets": [{"seed": 21, "sample_rate_hz": 50}], "devices": 6, "duration_s": 600.0},
        trainer_parameters={"test_percent": 30},
    )
    built = build_wiring(settings, producer=RecordingPlanPublisher())
    try:
        yield built
    finally:
        built.registry.close()
        built.store.close()


def test_the_physics_baseline_is_registered_once_as_a_candidate_and_can_go_to_shadow(wiring: TrainerWiring) -> None:
    name = wiring.model_name
    assert register_physics_model(wiring) == PHYSICS_MODEL_VERSION
    assert register_physics_model(wiring) is None  # idempotent: never twice
    registered = wiring.registry.get(name, PHYSICS_MODEL_VERSION)
    assert registered.stage == Stage.CANDIDATE and registered.number == 1
    assert registered.data_version == PHYSICS_DATA_VERSION
    assert registered.parameters["braking_peak_mps2"] == 2.5
    # Its evaluation is its metrics: the simulated test windows and the real drives (with added manoeuvres,
    # and auckland-backwards' own harsh moments by its GPS, which without GPS its mount hides: 9 of 20 found).
    assert "harsh_recall" in registered.metrics and registered.metrics["real_false_alerts_per_hour"] is not None
    assert registered.metrics["real_aggressive_labels"] > 0 and registered.metrics["real_aggressive_recall"] >= 0.4
    payload = wiring.artifacts.read_model(registered.artifact_uri, registered.artifact_sha256)
    assert payload == build_physics_model()
    described = json.loads(wiring.artifacts.read(f"models/{name}/{PHYSICS_MODEL_VERSION}/model.json"))
    assert described["version"] == PHYSICS_MODEL_VERSION and described["data_version"] == PHYSICS_DATA_VERSION
    assert wiring.artifacts.exists(f"models/{name}/{PHYSICS_MODEL_VERSION}/reference_profile.json")
    # A named version takes a number: the next learned version is 2, not 1.
    assert next_version(wiring.registry, name) == "2"
    with pytest.raises(VersionAlreadyRegistered):
        wiring.registry.register(
            name, "file:///x", "0" * 64, "c", "d", {}, {}, created_by="t", version=PHYSICS_MODEL_VERSION
        )
    with pytest.raises(ValueError, match="not only digits"):
        wiring.registry.register(name, "file:///x", "0" * 64, "c", "d", {}, {}, created_by="t", version="7")
    plan = wiring.registry.transition(name, PHYSICS_MODEL_VERSION, Stage.SHADOW, reason="compare", actor="test")
    assert [(arm.model.version, arm.traffic_share) for arm in plan.arms] == [(PHYSICS_MODEL_VERSION, 0.0)]
    plan = wiring.registry.promote(name, PHYSICS_MODEL_VERSION, reason="rules first", actor="test")
    assert plan.champion.version == PHYSICS_MODEL_VERSION and plan.champion.sha256 == registered.artifact_sha256


def test_speeding_detections_carry_the_road_maps_content_hash() -> None:
    default = RoadMap.default()
    version = road_map_version(default)
    assert version.startswith("map-") and len(version) == 28
    assert road_map_version(default) == version == road_map_version(RoadMap.from_json(default.to_json()))
    assert road_map_version(RoadMap.generate(7)) != version
    assert road_map_version(None) == ""

    class LimitsOnly:
        def speed_limit_at(self, latitude: float, longitude: float, heading_deg: float | None = None) -> float | None:
            return 13.9

    assert road_map_version(LimitsOnly()) == ""


def test_without_the_datasets_folder_the_shipped_recordings_are_named_as_skipped(tmp_path: Path) -> None:
    recordings, skipped = RealRecordings(root=tmp_path / "no-datasets").evaluation_windows()
    assert recordings == [] and set(skipped) == {"auckland-forward", "auckland-backwards", "comma2k19"}
    section = real_data_section(OnnxRiskModel(build_physics_model()).predict, recordings)
    assert section["metrics"]["real_recordings"] == 0
    # Nothing to measure: the gate's real-data checks do not run.
    policy = GatePolicy(minimums={}, maximums={}, not_behind_champion={})
    assert decide(policy, {}, None, real_candidate=section, real_reference=section).checks == ()
