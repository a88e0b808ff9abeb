"""Inference serving the arms of a rollout: a sticky split of devices between champion, canary and treatments.

Plans with a `rollout_id` go through `ModelServing` exactly as the service takes them (offer, load,
activate), with real ONNX models in a local blob store; the devices are routed by the pipeline the
agent gets (`InferencePipeline.route`) and uploads are processed by `process_uploads`. What is proved:
shares per arm over many devices, stickiness across revisions, monotone ramps, the variant and version
every output carries, the shadow's device share, refusal of plans that cannot be served, and a device
moved to another arm between two uploads of one event keeping exactly one detection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from michi.blobs.store import BlobStore
from michi.contracts import stable_event_id, timestamp_now
from michi.contracts.v1 import common_pb2, inference_pb2, operations_pb2, upload_pb2
from michi.rollouts.assignment import device_position
from services.inference.adapters.artifacts import SHA256_MISMATCH, ArtifactCache, load_detector
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.adapters.onnx_model import OnnxDetector, build_baseline_model, install_baseline_model
from services.inference.domain.rollout import PlanDecision, arms_of
from services.inference.domain.state import DeviceState, ModelsUsed
from services.inference.handlers import Detector, InferencePipeline, UploadOutcome, process_uploads, record_outcome
from services.inference.serving import ModelServing

from ..model_graphs import rollout_plan, store_model
from ..scripted_drive import ScriptedDrive, ScriptedEvent

MODEL = "michi-risk"
ROLLOUT = "rollout-canary-7"
CHAMPION = inference_pb2.VARIANT_CHAMPION
CANARY = inference_pb2.VARIANT_CANARY
TREATMENT = inference_pb2.VARIANT_TREATMENT
SHADOW = inference_pb2.VARIANT_SHADOW
BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING
DEVICES = [f"device-{index:06d}" for index in range(100_000)]


class Serving:
    """A `ModelServing` over a local blob store, the way the service builds it."""

    def __init__(self, folder: Path) -> None:
        self.store = BlobStore(f"file://{folder / 'blobs'}")
        self.cache = ArtifactCache(self.store, folder / "cache")
        self.metrics = InferenceMetrics()
        baseline = OnnxDetector(install_baseline_model(folder / "baseline"))
        self.serving = ModelServing(
            model_name=MODEL,
            template=InferencePipeline(baseline, None),
            loader=self.load,
            metrics=self.metrics,
            retain=2,
        )
        self.serving.start(NoPlans())
        self.references: dict[str, operations_pb2.ModelRef] = {}

    def load(self, reference: operations_pb2.ModelRef) -> Detector:
        return load_detector(self.cache, reference, threads=1)

    def model(self, version: str, gain: float) -> operations_pb2.ModelRef:
        if version not in self.references:
            self.references[version] = asyncio.run(store_model(self.store, version, build_baseline_model(gain)))
        return self.references[version]

    def apply(self, plan: operations_pb2.RolloutPlan) -> PlanDecision:
        decision = self.serving.offer(plan)
        self.serving.load_wanted()
        self.serving.activate()
        return decision

    @property
    def pipeline(self) -> InferencePipeline:
        return self.serving.pipeline

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


class NoPlans:
    def read_to_end(self, timeout: float = 30.0) -> list[operations_pb2.RolloutPlan]:
        return []

    def poll(self, timeout: float = 1.0) -> list[operations_pb2.RolloutPlan]:
        return []


@pytest.fixture
def served(tmp_path: Path) -> Serving:
    serving = Serving(tmp_path)
    serving.model("1", 1.2)  # the champion
    serving.model("2", 0.8)  # the candidate: other confidences, the same calls on clear events
    serving.model("3", 1.0)
    return serving


def split_plan(
    revision: int,
    arms: Sequence[tuple[operations_pb2.ModelRef, int, float]],
    *,
    rollout_id: str = ROLLOUT,
    strategy: int = operations_pb2.ROLLOUT_STRATEGY_CANARY,
    reason: str = "test",
) -> operations_pb2.RolloutPlan:
    """A plan whose arms are (model, variant, traffic share), in layout order."""
    plan = operations_pb2.RolloutPlan(
        event_id=stable_event_id("rollout-plan", MODEL, revision),
        occurred_at=timestamp_now(),
        model_name=MODEL,
        strategy=strategy,  # type: ignore[arg-type]
        revision=revision,
        reason=reason,
        rollout_id=rollout_id,
    )
    for model, variant, share in arms:
        plan.arms.append(operations_pb2.RolloutArm(model=model, variant=variant, traffic_share=share))  # type: ignore[arg-type]
        if variant == CHAMPION:
            plan.champion.CopyFrom(model)
    return plan


def canary_plan(served: Serving, revision: int, share: float, **options: object) -> operations_pb2.RolloutPlan:
    """Canary `2` first, champion `1` last (the layout that makes ramps monotone)."""
    return split_plan(
        revision,
        [(served.references["2"], CANARY, share), (served.references["1"], CHAMPION, round(1.0 - share, 6))],
        **options,  # type: ignore[arg-type]
    )


def arms_of_devices(pipeline: InferencePipeline, devices: list[str]) -> list[str]:
    """The model version serving each device, through the pipeline's own routing."""
    return [pipeline.route(device)[0].model_version for device in devices]


def device_between(low: float, high: float, rollout_id: str = ROLLOUT) -> str:
    """A device whose place on the rollout's serving line is in [low, high)."""
    return next(device for device in DEVICES if low <= device_position(rollout_id, device) < high)


# --- the split


def test_shares_of_devices_per_arm_are_within_one_point(served: Serving) -> None:
    treatment = served.references["3"]
    plans = {
        "canary 10 %": canary_plan(served, 1, 0.1),
        "a/b 20/30/50": split_plan(
            2,
            [
                (served.references["2"], TREATMENT, 0.2),
                (treatment, TREATMENT, 0.3),
                (served.references["1"], CHAMPION, 0.5),
            ],
            strategy=operations_pb2.ROLLOUT_STRATEGY_AB,
        ),
        "bandit 50/50": split_plan(
            3,
            [(treatment, TREATMENT, 0.5), (served.references["1"], CHAMPION, 0.5)],
            strategy=operations_pb2.ROLLOUT_STRATEGY_BANDIT,
        ),
    }
    worst = 0.0
    for name, plan in plans.items():
        assert served.apply(plan) is PlanDecision.APPLY, name
        counts = Counter(arms_of_devices(served.pipeline, DEVICES))
        for arm in plan.arms:
            measured = counts[arm.model.version] / len(DEVICES)
            assert abs(measured - arm.traffic_share) <= 0.01, (name, arm.model.version, measured)
            worst = max(worst, abs(measured - arm.traffic_share))
    print(f"\nworst share error over {len(DEVICES)} devices: {100 * worst:.3f} percentage points")


def test_a_revision_that_only_pauses_or_changes_the_reason_moves_no_device_and_swaps_nothing(served: Serving) -> None:
    served.apply(canary_plan(served, 1, 0.1))
    devices = DEVICES[:20_000]
    before = arms_of_devices(served.pipeline, devices)
    pipeline = served.pipeline
    swaps = served.metric("michi_inference_model_swaps_total")
    for revision, reason in ((2, "paused by policy"), (3, "resumed"), (4, "operator note")):
        assert served.apply(canary_plan(served, revision, 0.1, reason=reason)) is PlanDecision.APPLY
        assert served.serving.active.revision == revision
        assert served.pipeline is pipeline  # nothing to swap: the same split, the same models
        assert arms_of_devices(served.pipeline, devices) == before
    assert served.metric("michi_inference_model_swaps_total") == swaps
    assert served.metric("michi_inference_plan_revision") == 4


def test_a_ramp_from_ten_to_twenty_percent_only_moves_champion_devices_onto_the_canary(served: Serving) -> None:
    served.apply(canary_plan(served, 1, 0.1))
    before = arms_of_devices(served.pipeline, DEVICES)
    served.apply(canary_plan(served, 2, 0.2))
    after = arms_of_devices(served.pipeline, DEVICES)
    moves = Counter((old, new) for old, new in zip(before, after, strict=True) if old != new)
    assert set(moves) == {("1", "2")}  # champion -> canary, never back
    assert abs(moves[("1", "2")] / len(DEVICES) - 0.1) <= 0.01
    assert served.metric("michi_inference_model_swaps_total") == 2  # a new split is activated like a swap
    # Another rollout reshuffles: about 1 % of devices on both 10 % canaries, not 10 %.
    served.apply(canary_plan(served, 3, 0.1, rollout_id="rollout-other"))
    reshuffled = arms_of_devices(served.pipeline, DEVICES)
    both = sum(1 for old, new in zip(before, reshuffled, strict=True) if old == new == "2") / len(DEVICES)
    assert both < 0.02


def test_canary_devices_get_canary_outputs_and_the_others_the_champions(served: Serving) -> None:
    served.apply(canary_plan(served, 1, 0.3))
    on_canary = [device for device in DEVICES[:200] if device_position(ROLLOUT, device) < 0.3][:2]
    on_champion = [device for device in DEVICES[:200] if device_position(ROLLOUT, device) >= 0.3][:2]
    uploads = [
        received
        for index, device in enumerate(on_canary + on_champion)
        for received in ScriptedDrive(
            device_id=device,
            trip_id=f"trip-{device}",
            duration_s=30.0,
            origin=(1.0, 1.0 + index * 0.01),
            events=[ScriptedEvent("harsh_braking", 12.3, 1.5, 5.5)],
        ).uploads()
    ]
    outcome = process_uploads(uploads, {}, served.pipeline)
    expected = {device: (CANARY, "2") for device in on_canary} | {device: (CHAMPION, "1") for device in on_champion}
    for result in outcome.uploads:
        assert result.failure is None
        arm = expected[result.device_id]
        assert {(p.variant, p.lineage.model_version, p.rollout_id) for p in result.predictions} == {(*arm, ROLLOUT)}
        assert {(d.variant, d.lineage.model_version, d.rollout_id) for d in result.detections} <= {(*arm, ROLLOUT)}
        assert result.shadow_predictions == []
    detections = Counter(
        (result.device_id, detection.variant) for result in outcome.uploads for detection in result.detections
    )
    assert detections == Counter({(device, arm[0]): 1 for device, arm in expected.items()})
    # One ONNX run per arm over the batch, and the uploads counted per arm.
    assert {result.model_version for result in outcome.uploads} == {"1", "2"}


def test_shadow_with_share_zero_scores_every_device_and_with_a_tenth_about_a_tenth(served: Serving) -> None:
    champion, shadow = served.references["1"], served.references["3"]
    devices = DEVICES[:50_000]
    served.apply(
        split_plan(
            1, [(champion, CHAMPION, 1.0), (shadow, SHADOW, 0.0)], strategy=operations_pb2.ROLLOUT_STRATEGY_SHADOW
        )
    )
    assert all(served.pipeline.route(device)[2] is not None for device in devices)
    served.apply(
        split_plan(
            2, [(champion, CHAMPION, 1.0), (shadow, SHADOW, 0.1)], strategy=operations_pb2.ROLLOUT_STRATEGY_SHADOW
        )
    )
    covered = [device for device in devices if served.pipeline.route(device)[2] is not None]
    assert abs(len(covered) / len(devices) - 0.1) <= 0.01
    assert served.metric(
        "michi_inference_arm_share", model=MODEL, version="3", variant="shadow", rollout_id=ROLLOUT
    ) == (pytest.approx(0.1))
    # Only covered devices get shadow predictions; the others are scored by the champion alone.
    uncovered = next(device for device in devices if device not in set(covered))
    uploads = [
        received
        for index, device in enumerate((covered[0], uncovered))
        for received in ScriptedDrive(
            device_id=device, trip_id=f"t-{index}", duration_s=20.0, origin=(1.0, 1.0)
        ).uploads()
    ]
    outcome = process_uploads(uploads, {}, served.pipeline)
    shadowed = {result.device_id: bool(result.shadow_predictions) for result in outcome.uploads}
    assert shadowed == {covered[0]: True, uncovered: False}
    assert {
        (p.variant, p.lineage.model_version, p.rollout_id) for r in outcome.uploads for p in r.shadow_predictions
    } == {(SHADOW, "3", ROLLOUT)}


def test_a_plan_without_rollout_id_is_served_as_before(served: Serving) -> None:
    plan = rollout_plan(1, served.references["1"], served.references["3"])
    plan.arms.append(operations_pb2.RolloutArm(model=served.references["2"], variant=CANARY, traffic_share=0.1))
    assert served.apply(plan) is PlanDecision.APPLY
    pipeline = served.pipeline
    assert pipeline.routing is None and arms_of(plan).unsupported == ["VARIANT_CANARY 2 (share 0.1)"]
    assert set(arms_of_devices(pipeline, DEVICES[:5_000])) == {"1"}
    assert all(pipeline.route(device)[2] is not None for device in DEVICES[:5_000])  # the shadow scores everyone
    uploads = ScriptedDrive(duration_s=20.0, origin=(1.0, 1.0)).uploads()
    outcome = process_uploads(uploads, {}, pipeline)
    predictions = [p for result in outcome.uploads for p in result.predictions]
    assert {(p.variant, p.lineage.model_version, p.rollout_id) for p in predictions} == {(CHAMPION, "1", "")}
    assert served.metric("michi_inference_arm_share", model=MODEL, version="1", variant="champion", rollout_id="") == 1


def test_metrics_show_every_arm_with_its_share_and_variant(served: Serving) -> None:
    served.apply(
        split_plan(
            1,
            [
                (served.references["2"], CANARY, 0.05),
                (served.references["1"], CHAMPION, 0.95),
                (served.references["3"], SHADOW, 0.25),
            ],
        )
    )
    shares = {
        (sample.labels["version"], sample.labels["variant"], sample.labels["rollout_id"]): sample.value
        for family in served.metrics.registry.collect()
        if family.name == "michi_inference_arm_share"
        for sample in family.samples
    }
    assert shares == pytest.approx(
        {("2", "canary", ROLLOUT): 0.05, ("1", "champion", ROLLOUT): 0.95, ("3", "shadow", ROLLOUT): 0.25}
    )
    assert served.serving.active.describe() == ["canary 2 0.05", "champion 1 0.95", "shadow 3 0.25"]
    uploads = [
        received
        for device in (device_between(0.0, 0.05), device_between(0.05, 1.0))
        for received in ScriptedDrive(
            device_id=device, trip_id=f"trip-{device}", duration_s=20.0, origin=(1.0, 1.0)
        ).uploads()
    ]
    record_outcome(process_uploads(uploads, {}, served.pipeline), served.metrics, len(uploads), 0.1)
    assert served.metric("michi_inference_arm_uploads_total", version="2", variant="canary") == 2
    assert served.metric("michi_inference_arm_uploads_total", version="1", variant="champion") == 2


# --- plans that cannot be served


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("shares summing to 0.7", "serving shares sum to 0.7"),
        ("the same model twice", "appears more than once"),
        ("five arms", "5 arms, at most 4"),
        ("a treatment in a canary", "serves VARIANT_CANARY arms"),
        ("two shadows", "2 shadow arms"),
    ],
)
def test_a_plan_that_cannot_be_served_is_refused_and_the_held_plan_kept(
    served: Serving, case: str, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    first, second, third = (served.references[version] for version in ("1", "2", "3"))
    fourth, fifth = served.model("4", 1.1), served.model("5", 0.9)
    served.apply(canary_plan(served, 1, 0.1))
    pipeline, before = served.pipeline, arms_of_devices(served.pipeline, DEVICES[:5_000])
    arms: Sequence[tuple[operations_pb2.ModelRef, int, float]] = {
        "shares summing to 0.7": [(second, CANARY, 0.1), (first, CHAMPION, 0.6)],
        "the same model twice": [(second, CANARY, 0.1), (second, CANARY, 0.1), (first, CHAMPION, 0.8)],
        "five arms": [
            (second, CANARY, 0.1),
            (third, CANARY, 0.1),
            (fourth, CANARY, 0.1),
            (fifth, SHADOW, 0),
            (first, CHAMPION, 0.7),
        ],
        "a treatment in a canary": [(second, TREATMENT, 0.1), (first, CHAMPION, 0.9)],
        "two shadows": [(second, CANARY, 0.1), (first, CHAMPION, 0.9), (third, SHADOW, 0), (fourth, SHADOW, 0)],
    }[case]
    with caplog.at_level(logging.ERROR, logger="services.inference.serving"):
        assert served.apply(split_plan(2, arms)) is PlanDecision.REFUSED
    refusals = [
        record for record in caplog.records if record.getMessage() == "rollout plan refused, keeping the plan held"
    ]
    assert len(refusals) == 1 and any(problem in line for line in refusals[0].problems), refusals[0].problems  # type: ignore[attr-defined]
    assert served.pipeline is pipeline and served.serving.pending is None
    assert served.serving.held_revision == 1 and served.metric("michi_inference_plan_revision") == 1
    assert arms_of_devices(served.pipeline, DEVICES[:5_000]) == before
    assert served.metric("michi_inference_plans_total", decision="refused") == 1
    # The same revision, corrected, is applied (it was never held).
    assert served.apply(canary_plan(served, 2, 0.2)) is PlanDecision.APPLY
    assert served.serving.active.revision == 2


def test_float32_shares_are_rounded_before_they_are_checked(served: Serving) -> None:
    # 0.1, 0.2 and 0.7 as float32 sum to 1.0000000149: refused without rounding.
    plan = split_plan(
        1,
        [
            (served.references["2"], TREATMENT, 0.1),
            (served.references["3"], TREATMENT, 0.2),
            (served.references["1"], CHAMPION, 0.7),
        ],
        strategy=operations_pb2.ROLLOUT_STRATEGY_AB,
    )
    assert sum(arm.traffic_share for arm in plan.arms) != 1.0
    assert served.apply(plan) is PlanDecision.APPLY
    assert served.pipeline.routing is not None


def test_a_refused_canary_artifact_keeps_every_model_served(served: Serving) -> None:
    served.apply(canary_plan(served, 1, 0.1))
    pipeline = served.pipeline
    tampered = operations_pb2.ModelRef()
    tampered.CopyFrom(served.references["3"])
    tampered.sha256 = "0" * 64
    assert served.apply(split_plan(2, [(tampered, CANARY, 0.2), (served.references["1"], CHAMPION, 0.8)])) is (
        PlanDecision.APPLY
    )
    assert served.pipeline is pipeline and served.serving.held_revision == 1
    assert served.metric("michi_inference_models_refused_total", reason=SHA256_MISMATCH, variant="canary") == 1


# --- device state across a change of arm


def braking_across_an_upload_boundary(device: str) -> list[upload_pb2.UploadReceived]:
    """Four uploads of 10 s; a brake at 12.3 s, and one at 19.2 s that runs on into the third upload."""
    events = [ScriptedEvent("harsh_braking", 12.3, 1.5, 5.5), ScriptedEvent("harsh_braking", 19.2, 1.5, 5.5)]
    return ScriptedDrive(
        device_id=device, trip_id=f"trip-{device}", duration_s=40.0, origin=(1.0, 1.0), events=events
    ).uploads()


def detections_of(outcomes: list[UploadOutcome]) -> list[tuple[str, int, int, str]]:
    return [(d.event_id, d.event_type, d.variant, d.lineage.model_version) for o in outcomes for d in o.detections]


@pytest.mark.parametrize("direction", ["champion to canary", "canary to champion"])
def test_a_device_moved_to_another_arm_in_the_middle_of_an_event_keeps_one_detection(
    served: Serving, direction: str
) -> None:
    # A device on the champion at 10 % and on the canary at 20 % (ramp up), or the other way (ramp down).
    device = device_between(0.1, 0.2)
    uploads = braking_across_an_upload_boundary(device)
    ramps = (0.1, 0.2) if direction == "champion to canary" else (0.2, 0.1)
    first_arm, second_arm = ((CHAMPION, "1"), (CANARY, "2")) if ramps[0] == 0.1 else ((CANARY, "2"), (CHAMPION, "1"))

    # The brake at 19.2 s goes on into the third upload: processed alone it would be a detection there.
    assert len(process_uploads(uploads[2:3], {}, served.pipeline).uploads[0].detections) == 1

    states: dict[str, DeviceState] = {}
    served.apply(canary_plan(served, 1, ramps[0]))
    before = process_uploads(uploads[:2], states, served.pipeline).uploads
    served.apply(canary_plan(served, 2, ramps[1]))
    assert served.pipeline.route(device)[1] == second_arm[0]
    after = process_uploads(uploads[2:], states, served.pipeline).uploads

    # Two brakes, two detections, both from the arm serving the device when each began.
    assert [(d[1], d[2], d[3]) for d in detections_of(before + after)] == [(BRAKING, *first_arm), (BRAKING, *first_arm)]
    assert [len(outcome.detections) for outcome in after] == [0, 0]
    # The ids are those of a run that never changed arm: the same events, whichever arm saw them.
    alone = process_uploads(uploads, {}, InferencePipeline(served.pipeline.detector_for(first_arm[1]), None)).uploads  # type: ignore[arg-type]
    assert [d[0] for d in detections_of(before + after)] == [d[0] for d in detections_of(alone)]
    # The windows of the third upload that continue the brake point at the detection made before the move.
    carried = before[1].detections[-1].event_id
    assert all(p.variant == second_arm[0] and p.lineage.model_version == second_arm[1] for p in after[0].predictions)
    assert {r.detection_event_id for r in after[0].label_requests} <= {carried, ""}
    assert [o.segment.detection_count for o in before + after] == [0, 2, 0, 0]

    # A redelivery of the second upload after the move is replayed as the arm that first handled it.
    state = states[device]
    assert state.models_used(uploads[1].upload.upload_id) == ModelsUsed(first_arm[1], None, first_arm[0], ROLLOUT)
    saved = state.to_bytes()
    replayed = process_uploads(uploads[1:2], states, served.pipeline).uploads[0]
    assert replayed.replayed and replayed.replay_model_missing is None
    assert [d.SerializeToString() for d in replayed.detections] == [d.SerializeToString() for d in before[1].detections]
    assert [p.SerializeToString() for p in replayed.predictions] == [
        p.SerializeToString() for p in before[1].predictions
    ]
    assert states[device].to_bytes() == saved


def test_state_written_before_arms_were_recorded_replays_as_the_champion() -> None:
    legacy = b'{"version":2,"calibration":{},"open_episode":null,"speeding":null,"recent":[["u1",{"calibration":{}},{"champion":"4","shadow":null}]]}'
    assert DeviceState.from_bytes(legacy).models_used("u1") == ModelsUsed("4", None, CHAMPION, "")
    state = DeviceState()
    state.remember("u2", state.core(), ModelsUsed("5", "6", CANARY, ROLLOUT))
    assert DeviceState.from_bytes(state.to_bytes()).models_used("u2") == ModelsUsed("5", "6", CANARY, ROLLOUT)


def test_a_plan_of_a_shadow_only_is_served_by_the_baseline_on_every_device(served: Serving) -> None:
    plan = split_plan(1, [(served.references["3"], SHADOW, 0.5)], strategy=operations_pb2.ROLLOUT_STRATEGY_SHADOW)
    assert served.apply(plan) is PlanDecision.APPLY
    devices = DEVICES[:20_000]
    assert set(arms_of_devices(served.pipeline, devices)) == {"baseline-1"}
    assert {served.pipeline.route(device)[1] for device in devices} == {CHAMPION}
    covered = sum(served.pipeline.route(device)[2] is not None for device in devices) / len(devices)
    assert abs(covered - 0.5) <= 0.01
