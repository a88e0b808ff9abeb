"""The pipeline with a shadow model, and redeliveries across a model swap (pure, no Kafka).

Shadow: every window gets a SHADOW prediction; disagreements on a risky class become capped
SHADOW_DISAGREEMENT label requests; the champion's outputs are byte-for-byte those of a run without
a shadow, and a failing shadow changes none of them. Swap: an upload handled by v1, redelivered
after v2 took over, is replayed with v1 (same outputs); if v1 is gone, the detections keep their ids.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from michi.contracts.v1 import common_pb2, inference_pb2, labels_pb2, upload_pb2
from michi.windows.features import DATA_VERSION
from services.inference.adapters.onnx_model import ModelArtifact, OnnxDetector, build_baseline_model
from services.inference.domain.state import DeviceState, ModelsUsed
from services.inference.handlers import BatchOutcome, InferencePipeline, UploadOutcome, process_uploads

from ..model_graphs import build_signals_model
from ..scripted_drive import ScriptedDrive, ScriptedEvent

BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
ACCELERATION = common_pb2.EVENT_TYPE_HARSH_ACCELERATION
EVENTS = [ScriptedEvent("harsh_braking", 12.3, 1.5, 5.5), ScriptedEvent("harsh_acceleration", 42.3, 2.0, 4.2)]


def detector(folder: Path, version: str, payload: bytes) -> OnnxDetector:
    path = folder / f"{version}.onnx"
    path.write_bytes(payload)
    return OnnxDetector(ModelArtifact("michi-risk", version, DATA_VERSION, path, hashlib.sha256(payload).hexdigest()))


class SwappedDetector:
    """A shadow that calls every harsh brake a harsh acceleration and vice versa."""

    model_name = "michi-risk"
    data_version = DATA_VERSION

    def __init__(self, inner: OnnxDetector, version: str) -> None:
        self.inner = inner
        self.model_version = version

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        probabilities = self.inner.predict(features, signals).copy()
        probabilities[:, [1, 2]] = probabilities[:, [2, 1]]
        return probabilities


class BrokenDetector:
    model_name = "michi-risk"
    model_version = "broken"
    data_version = DATA_VERSION

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        raise RuntimeError("shadow session crashed")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OnnxDetector]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "1": detector(folder, "1", build_baseline_model()),
        "2": detector(folder, "2", build_signals_model()),
        "3": detector(folder, "3", build_baseline_model(0.6)),
    }


def run(
    uploads: list[upload_pb2.UploadReceived], pipeline: InferencePipeline, states: dict[str, DeviceState] | None = None
) -> list[UploadOutcome]:
    states = {} if states is None else states
    outcomes: list[UploadOutcome] = []
    for first in range(0, len(uploads), 3):
        batch: BatchOutcome = process_uploads(uploads[first : first + 3], states, pipeline)
        outcomes.extend(batch.uploads)
    return outcomes


def champion_bytes(outcomes: list[UploadOutcome]) -> list[bytes]:
    return [
        message.SerializeToString()
        for outcome in outcomes
        for message in (*outcome.predictions, *outcome.detections, *outcome.label_requests, outcome.segment)
    ]


def test_shadow_scores_every_window_never_detects_and_asks_people_where_it_disagrees(
    models: dict[str, OnnxDetector],
) -> None:
    uploads = ScriptedDrive(duration_s=60.0, origin=(1.0, 1.0), events=EVENTS).uploads()
    alone = run(uploads, InferencePipeline(models["1"], None))
    shadow = SwappedDetector(models["1"], "9")
    together = run(uploads, InferencePipeline(models["1"], None, shadow=shadow, shadow_requests_per_upload=1))

    assert champion_bytes(together) == champion_bytes(alone)  # the champion's outputs are unchanged
    shadow_predictions = [p for o in together for p in o.shadow_predictions]
    assert len(shadow_predictions) == sum(len(o.predictions) for o in together) == 6 * 9
    assert {(p.variant, p.lineage.model_version) for p in shadow_predictions} == {(inference_pb2.VARIANT_SHADOW, "9")}
    assert not {p.event_id for p in shadow_predictions} & {p.event_id for o in together for p in o.predictions}
    detections = [d for o in together for d in o.detections]
    assert [d.event_type for d in detections] == [BRAKING, ACCELERATION]
    assert {(d.variant, d.lineage.model_version) for d in detections} == {(inference_pb2.VARIANT_CHAMPION, "1")}

    requests = [r for o in together for r in o.disagreement_requests]
    by_upload = [len(o.disagreement_requests) for o in together]
    assert max(by_upload) == 1 and sum(o.shadow_disagreements for o in together) >= 4  # capped at one per upload
    assert {(r.reason, r.suggested, r.alternative) for r in requests} == {
        (labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT, BRAKING, ACCELERATION),
        (labels_pb2.LABEL_REASON_SHADOW_DISAGREEMENT, ACCELERATION, BRAKING),
    }
    assert {r.detection_event_id for r in requests} == {d.event_id for d in detections}
    assert all(r.lineage.model_version == "1" and 0 < r.priority <= 100 for r in requests)
    # Deterministic: the same input gives the same requests (ids), whatever the batching.
    again = process_uploads(
        uploads, {}, InferencePipeline(models["1"], None, shadow=shadow, shadow_requests_per_upload=1)
    )
    assert [r.event_id for o in again.uploads for r in o.disagreement_requests] == [r.event_id for r in requests]


def test_agreeing_shadow_raises_no_requests(models: dict[str, OnnxDetector]) -> None:
    uploads = ScriptedDrive(duration_s=60.0, origin=(1.0, 1.0), events=EVENTS).uploads()
    outcomes = run(uploads, InferencePipeline(models["1"], None, shadow=models["2"]))
    assert sum(o.shadow_disagreements for o in outcomes) == 0
    assert [r for o in outcomes for r in o.disagreement_requests] == []
    assert all(len(o.shadow_predictions) == 9 for o in outcomes)


def test_failing_shadow_leaves_the_champion_alone(models: dict[str, OnnxDetector]) -> None:
    uploads = ScriptedDrive(duration_s=30.0, origin=(1.0, 1.0), events=EVENTS[:1]).uploads()
    alone = process_uploads(uploads, {}, InferencePipeline(models["1"], None))
    broken = process_uploads(uploads, {}, InferencePipeline(models["1"], None, shadow=BrokenDetector()))
    assert broken.shadow_failure is not None and "shadow session crashed" in broken.shadow_failure
    assert champion_bytes(broken.uploads) == champion_bytes(alone.uploads)
    assert all(o.shadow_predictions == [] for o in broken.uploads)


def test_redelivery_after_a_swap_is_replayed_with_the_model_that_first_handled_it(
    models: dict[str, OnnxDetector],
) -> None:
    uploads = ScriptedDrive(duration_s=60.0, origin=(1.0, 1.0), events=EVENTS).uploads()
    states: dict[str, DeviceState] = {}
    v1 = InferencePipeline(models["1"], None, shadow=models["3"])
    first = run(uploads, v1, states)
    assert states["device-1"].models_used(uploads[-1].upload.upload_id) == ModelsUsed("1", "3")
    saved = states["device-1"].to_bytes()

    # v3 (different gains: different confidences) took over; v1 is still loaded; the shadow is gone.
    v3 = InferencePipeline(models["3"], None, earlier={"1": models["1"], "3": models["3"]})
    restored = {"device-1": DeviceState.from_bytes(saved)}
    again = run(uploads[1:3], v3, restored)
    assert all(outcome.replayed and outcome.replay_model_missing is None for outcome in again)
    for original, repeated in zip(first[1:3], again, strict=True):
        assert champion_bytes([repeated]) == champion_bytes([original])
        assert [p.SerializeToString() for p in repeated.shadow_predictions] == [
            p.SerializeToString() for p in original.shadow_predictions
        ]
    assert restored["device-1"].to_bytes() == saved
    # New uploads go to the new champion.
    later = ScriptedDrive(duration_s=20.0, origin=(1.0, 1.0), trip_id="trip-2", start_time_s=1_767_300_000.0)
    fresh = run(later.uploads(), v3, restored)
    assert {p.lineage.model_version for o in fresh for p in o.predictions} == {"3"}


def test_redelivery_whose_model_is_gone_keeps_the_detection_ids(models: dict[str, OnnxDetector]) -> None:
    uploads = ScriptedDrive(duration_s=60.0, origin=(1.0, 1.0), events=EVENTS).uploads()
    states: dict[str, DeviceState] = {}
    first = run(uploads, InferencePipeline(models["1"], None), states)
    # After a restart only v2 is loaded: the replay runs on v2 and says so; the same events get the same ids.
    again = run(uploads, InferencePipeline(models["2"], None), states)
    assert all(outcome.replay_model_missing == "1" for outcome in again)
    assert [d.event_id for o in again for d in o.detections] == [d.event_id for o in first for d in o.detections]
    assert [o.segment.SerializeToString() for o in again] == [o.segment.SerializeToString() for o in first]


def test_state_written_before_model_versions_were_recorded_is_still_read() -> None:
    legacy = b'{"version":1,"calibration":{},"open_episode":null,"speeding":null,"recent":[["u1",{"calibration":{}}]]}'
    state = DeviceState.from_bytes(legacy)
    assert state.state_before("u1") is not None and state.models_used("u1") is None
    state.remember("u2", state.core(), ModelsUsed("4", None))
    assert DeviceState.from_bytes(state.to_bytes()).models_used("u2") == ModelsUsed("4", None)
