"""Detection quality against the fleet simulator's ground truth (pure pipeline, no Kafka).

10 devices x 10 minutes: recall of injected risky events (harsh braking, acceleration,
cornering, speeding) ≥ 0.9, every speeding episode found, and at most one false detection per
10 simulated device-minutes. A detection matches a ground-truth event of the same type on the
same device whose span overlaps the detection's window (±1.5 s for 1 Hz GPS and window edges).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from michi.contracts.v1 import upload_pb2
from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig, judge_detections
from services.inference.adapters.onnx_model import OnnxDetector, install_baseline_model
from services.inference.domain.state import DeviceState
from services.inference.handlers import InferencePipeline, process_uploads

TOLERANCE_S = 1.5
DEVICES, MINUTES = 10, 10


def evaluate(seed: int, models: Path, scenario: str | None = None) -> dict[str, float]:
    road_map = RoadMap.default()
    simulator = FleetSimulator(
        SimulationConfig(devices=DEVICES, duration_s=MINUTES * 60.0, seed=seed, scenario=scenario), road_map=road_map
    )
    uploads = [upload_pb2.UploadReceived(upload=upload) for upload in simulator.uploads()]
    pipeline = InferencePipeline(OnnxDetector(install_baseline_model(models)), road_map)
    states: dict[str, DeviceState] = {}
    detections = []
    for first in range(0, len(uploads), 64):
        for outcome in process_uploads(uploads[first : first + 64], states, pipeline).uploads:
            assert outcome.segment.detection_count == len(outcome.detections)
            detections.extend(outcome.detections)
    risky = [event for event in simulator.ground_truth if event.risky]
    judged = judge_detections(detections, simulator.ground_truth, TOLERANCE_S)
    speeding = [event for event in risky if event.kind == "speeding"]
    return {
        "risky": len(risky),
        "recall": judged.recall(risky),
        "speeding": len(speeding),
        "speeding_recall": judged.recall(speeding),
        "false_per_10_device_minutes": judged.false_detections / (DEVICES * MINUTES / 10.0),
    }


@pytest.mark.parametrize("seed", [1, 3, 7])
def test_quality_on_the_simulated_fleet(seed: int, tmp_path: Path) -> None:
    figures = evaluate(seed, tmp_path)
    assert figures["risky"] >= 10, figures  # the run must hold enough events to mean something
    assert figures["recall"] >= 0.9, figures
    assert figures["speeding_recall"] == 1.0, figures
    assert figures["false_per_10_device_minutes"] <= 1.0, figures


def harsh_recall(seed: int, models: Path, *, gps: bool, settled_s: float) -> tuple[int, float, float]:
    """Harsh braking/acceleration/cornering recall after each device's first `settled_s` of driving."""
    minutes = 15
    simulator = FleetSimulator(SimulationConfig(devices=DEVICES, duration_s=minutes * 60.0, seed=seed))
    uploads = [upload_pb2.UploadReceived(upload=upload) for upload in simulator.uploads()]
    if not gps:
        for received in uploads:
            del received.upload.gps[:]
    pipeline = InferencePipeline(OnnxDetector(install_baseline_model(models)), None)
    states: dict[str, DeviceState] = {}
    detections = []
    for first in range(0, len(uploads), 64):
        detections.extend(
            detection
            for outcome in process_uploads(uploads[first : first + 64], states, pipeline).uploads
            for detection in outcome.detections
        )
    settled = simulator.config.start_time + settled_s
    harsh = [e for e in simulator.ground_truth if e.risky and e.kind != "speeding" and e.started_at >= settled]
    judged = judge_detections(detections, simulator.ground_truth, TOLERANCE_S)
    return len(harsh), judged.recall(harsh), judged.false_detections / (DEVICES * minutes / 10.0)


@pytest.mark.parametrize("seed", [1, 3])
def test_harsh_recall_without_gps_is_within_five_points_of_recall_with_it(seed: int, tmp_path: Path) -> None:
    # A device's mount is calibrated once, from its first stops and turns, and kept across trips: the
    # comparison is made once each device has driven 3 minutes (a brand-new device without GPS has no
    # way to tell braking from cornering before its first turn or stop, and says so: no detection).
    events, with_gps, false_with = harsh_recall(seed, tmp_path, gps=True, settled_s=180.0)
    _, without_gps, false_without = harsh_recall(seed, tmp_path, gps=False, settled_s=180.0)
    assert events >= 10, events
    assert without_gps >= with_gps - 0.05, (with_gps, without_gps)
    assert false_without <= false_with + 0.5, (false_with, false_without)
