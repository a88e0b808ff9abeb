"""The bootstrap model (learned from simulator ground truth) detects at least as well as the hand-set baseline.

The bootstrap runs as the trainer runs it (default recipe and parameters, registered and promoted in
a fresh SQLite registry; the trained artifact comes from the shared deterministic cache
`~/.cache/michi/models` when an earlier run left it there). Its champion ONNX file is then served
through inference's own pipeline (`process_uploads`) on held-out simulated fleets (seeds and sample
rates the training never saw), and judged as `test_inference_quality.py` judges the baseline: a
detection matches a ground-truth event of the same type on the same device overlapping its window
(±1.5 s). Required: harsh-event recall ≥ 0.9 and at most one false detection per 10 device-minutes
on every fleet, and no worse than the baseline on all of them together.

On the real recordings shipped in datasets/real-driving (normal driving, with and without GPS) its false
alerts per hour are printed beside the physics baseline's and the hand-set baseline's (run with -s): the
figures docs/training.md quotes for the bootstrap.

Run: .venv/bin/pytest tests/unit/test_trainer_quality.py -q
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from google.protobuf.message import Message

from michi.bus.catalog import TopicSpec
from michi.bus.producer import Delivery
from michi.contracts.v1 import upload_pb2
from michi.roadmap import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig, judge_detections
from michi.windows.physics import build_physics_model
from services.inference.domain.state import DeviceState
from services.inference.handlers import Detector, InferencePipeline, process_uploads
from services.trainer.adapters.onnx_model import OnnxRiskModel
from services.trainer.adapters.recordings import RealRecordings
from services.trainer.bootstrap import baseline_model, build_wiring
from services.trainer.domain.real_data import real_data_section
from services.trainer.settings import TrainerSettings

TOLERANCE_S = 1.5
DEVICES, MINUTES = 10, 10
HELD_OUT = ((1, 50), (3, 25), (7, 100))
HARSH_KINDS = {"harsh_braking", "harsh_acceleration", "harsh_cornering"}


class RecordingPublisher:
    def __init__(self) -> None:
        self.plans: list[Message] = []

    def publish_and_wait(self, spec: TopicSpec, key: str, message: Message, timeout: float = 30.0) -> Delivery:
        self.plans.append(message)
        return Delivery(spec.name(), 0, len(self.plans) - 1)


@dataclass
class Figures:
    harsh: int
    found: int
    false_detections: int

    @property
    def recall(self) -> float:
        return self.found / max(self.harsh, 1)

    @property
    def false_per_10_device_minutes(self) -> float:
        return self.false_detections / (DEVICES * MINUTES / 10.0)


def judge(uploads: list[upload_pb2.UploadReceived], simulator: FleetSimulator, detector: Detector) -> Figures:
    road_map = RoadMap.default()
    pipeline = InferencePipeline(detector, road_map)
    states: dict[str, DeviceState] = {}
    detections = []
    for first in range(0, len(uploads), 64):
        for outcome in process_uploads(uploads[first : first + 64], states, pipeline).uploads:
            detections.extend(outcome.detections)
    judged = judge_detections(detections, simulator.ground_truth, TOLERANCE_S)
    harsh = [event for event in simulator.ground_truth if event.kind in HARSH_KINDS]
    return Figures(
        len(harsh), sum(1 for event in harsh if event.event_id in judged.found_event_ids), judged.false_detections
    )


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> OnnxRiskModel:
    home = tmp_path_factory.mktemp("bootstrap")
    settings = TrainerSettings(
        home=home, database_url=f"sqlite:///{home / 'michi.db'}", blob_url=f"file://{home / 'blobs'}"
    )
    publisher = RecordingPublisher()
    wiring = build_wiring(settings, producer=publisher)
    try:
        from services.trainer.handlers import bootstrap_champion

        outcome = bootstrap_champion(wiring)
        assert outcome is not None and outcome.status == "succeeded", outcome and outcome.reason
        champion = wiring.registry.champion(wiring.model_name)
        assert champion is not None and champion.version == outcome.version
        assert publisher.plans and publisher.plans[-1].champion.version == champion.version  # type: ignore[attr-defined]
        payload = wiring.artifacts.read_model(champion.artifact_uri, champion.artifact_sha256)
        # A second start finds the champion and does nothing.
        assert bootstrap_champion(wiring) is None
    finally:
        wiring.registry.close()
        wiring.store.close()
    return OnnxRiskModel(payload, model_version=champion.version, data_version=champion.data_version)


def test_bootstrap_model_is_at_least_as_good_as_the_baseline_on_held_out_fleets(
    learned: OnnxRiskModel, tmp_path: Path
) -> None:
    baseline = OnnxRiskModel(baseline_model(), model_version="baseline-1")
    totals = {"learned": Figures(0, 0, 0), "baseline": Figures(0, 0, 0)}
    for seed, sample_rate in HELD_OUT:
        simulator = FleetSimulator(
            SimulationConfig(devices=DEVICES, duration_s=MINUTES * 60.0, seed=seed, sample_rate_hz=sample_rate),
            road_map=RoadMap.default(),
        )
        uploads = [upload_pb2.UploadReceived(upload=upload) for upload in simulator.uploads()]
        for name, detector in (("learned", learned), ("baseline", baseline)):
            figures = judge(uploads, simulator, detector)
            if name == "learned":
                assert figures.harsh >= 8, figures  # enough events to mean something
                assert figures.recall >= 0.9, (seed, sample_rate, figures)
                assert figures.false_per_10_device_minutes <= 1.0, (seed, sample_rate, figures)
            total = totals[name]
            total.harsh += figures.harsh
            total.found += figures.found
            total.false_detections += figures.false_detections
    assert totals["learned"].recall >= totals["baseline"].recall, totals
    assert totals["learned"].false_detections <= totals["baseline"].false_detections + 1, totals


def test_bootstrap_model_on_real_drives_beside_the_physics_baseline(learned: OnnxRiskModel) -> None:
    recordings, skipped = RealRecordings().evaluation_windows()
    assert not skipped and len(recordings) == 6
    models = {
        "bootstrap": learned,
        "physics-1": OnnxRiskModel(build_physics_model()),
        "baseline-1": OnnxRiskModel(baseline_model()),
    }
    sections = {name: real_data_section(model.predict_in_batches, recordings) for name, model in models.items()}
    print("\nfalse alerts on real normal driving (count per recording variant):")
    print(f"{'recording':28} " + " ".join(f"{name:>10}" for name in models))
    for position, windows in enumerate(recordings):
        print(
            f"{windows.key:28} "
            + " ".join(f"{sections[name]['recordings'][position]['false_alerts']:>10}" for name in models)
        )
    for name, section in sections.items():
        metrics = section["metrics"]
        print(
            f"{name}: {metrics['real_false_alerts']} in {metrics['real_normal_hours'] * 60:.1f} min = "
            f"{metrics['real_false_alerts_per_hour']:.1f}/h"
        )
    assert sections["physics-1"]["metrics"]["real_false_alerts"] == 0
    # Not a bound on the learned model (the simulator is its only teacher): the figures are for people.
    assert sections["bootstrap"]["metrics"]["real_recordings"] == 6
