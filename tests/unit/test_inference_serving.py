"""Serving from rollout plans: revision order, duplicates, refused artifacts, shadows, retention, swaps.

`ModelServing` is driven through its public methods with the real artifact cache over a local
`file://` blob store and real ONNX models (built with `onnx.helper`); the agent's swap step is
driven with a fake commit barrier.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from michi.blobs.store import BlobStore
from michi.contracts.v1 import inference_pb2, operations_pb2
from services.inference.adapters.artifacts import (
    INVALID_MODEL,
    INVALID_REFERENCE,
    SHA256_MISMATCH,
    UNAVAILABLE,
    ArtifactCache,
    ModelRefused,
    load_detector,
)
from services.inference.adapters.metrics import InferenceMetrics
from services.inference.adapters.onnx_model import OnnxDetector, build_baseline_model, install_baseline_model
from services.inference.domain.rollout import PlanDecision, RateBudget, arms_of, judge_plan
from services.inference.entrypoints.stream import StreamWiring, swap_if_ready
from services.inference.handlers import Detector, InferencePipeline
from services.inference.serving import ModelServing

from ..model_graphs import build_signals_model, model_key, rollout_plan, store_model

MODEL = "michi-risk"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Served:
    """Everything a test needs around one `ModelServing`."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = BlobStore(f"file://{tmp_path / 'blobs'}")
        self.cache = ArtifactCache(self.store, tmp_path / "cache")
        self.metrics = InferenceMetrics()
        self.clock = Clock()
        self.loads: list[str] = []
        baseline = OnnxDetector(install_baseline_model(tmp_path / "baseline"))
        self.serving = ModelServing(
            model_name=MODEL,
            template=InferencePipeline(baseline, None),
            loader=self.load,
            metrics=self.metrics,
            retain=2,
            clock=self.clock,
        )

    def load(self, reference: operations_pb2.ModelRef) -> Detector:
        self.loads.append(reference.version)
        return load_detector(self.cache, reference, threads=1)

    def model(self, version: str, payload: bytes | None = None) -> operations_pb2.ModelRef:
        return asyncio.run(store_model(self.store, version, payload or build_baseline_model(1.0 + int(version) / 10)))

    def apply(self, plan: operations_pb2.RolloutPlan) -> PlanDecision:
        decision = self.serving.offer(plan)
        self.serving.load_wanted()
        self.serving.activate()
        return decision

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


@pytest.fixture
def served(tmp_path: Path) -> Served:
    return Served(tmp_path)


class FakeFeed:
    def __init__(self, plans: list[operations_pb2.RolloutPlan]) -> None:
        self.plans = plans

    def read_to_end(self, timeout: float = 30.0) -> list[operations_pb2.RolloutPlan]:
        return list(self.plans)

    def poll(self, timeout: float = 1.0) -> list[operations_pb2.RolloutPlan]:
        return []


# --- pure plan rules


def test_plans_apply_only_with_a_higher_revision_of_our_model() -> None:
    plan = rollout_plan(5, None)
    assert judge_plan(plan, model_name=MODEL, held_revision=None) is PlanDecision.APPLY
    assert judge_plan(plan, model_name=MODEL, held_revision=4) is PlanDecision.APPLY
    assert judge_plan(plan, model_name=MODEL, held_revision=5) is PlanDecision.DUPLICATE
    assert judge_plan(plan, model_name=MODEL, held_revision=6) is PlanDecision.STALE
    assert judge_plan(rollout_plan(9, None, name="other"), model_name=MODEL, held_revision=1) is (
        PlanDecision.OTHER_MODEL
    )


def test_arms_name_champion_and_shadow_and_report_the_rest() -> None:
    champion = operations_pb2.ModelRef(name=MODEL, version="3", sha256="a" * 64, artifact_uri="file:///x")
    shadow = operations_pb2.ModelRef(name=MODEL, version="4", sha256="b" * 64, artifact_uri="file:///y")
    plan = rollout_plan(2, champion, shadow)
    plan.arms.append(operations_pb2.RolloutArm(model=shadow, variant=inference_pb2.VARIANT_CANARY, traffic_share=0.1))
    arms = arms_of(plan)
    assert (arms.champion, arms.shadow) == (champion, shadow)
    assert arms.unsupported == ["VARIANT_CANARY 4 (share 0.1)"]
    # A plan with only the `champion` field (no arms) still names it; an empty plan names nothing.
    bare = operations_pb2.RolloutPlan(event_id="e", model_name=MODEL, revision=1, champion=champion)
    assert arms_of(bare).champion == champion
    assert arms_of(rollout_plan(3, None)) == arms_of(operations_pb2.RolloutPlan(model_name=MODEL))


def test_rate_budget_admits_a_burst_then_refills_over_time() -> None:
    budget = RateBudget(60.0, burst=3)
    assert [budget.allow(0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.allow(0.5) is False  # half a token
    assert budget.allow(1.0) is True
    assert budget.allow(1.0) is False


# --- ModelServing


def test_without_plans_the_baseline_is_served(served: Served) -> None:
    served.serving.start(FakeFeed([]))
    assert served.serving.pipeline.detector.model_version == "baseline-1"
    assert served.serving.active.revision == 0
    assert served.metric("michi_inference_model_served", model=MODEL, version="baseline-1", variant="champion") == 1
    assert served.metric("michi_inference_plan_revision") == 0


def test_start_serves_the_latest_plan_on_the_topic_whatever_the_order(served: Served) -> None:
    first, second = served.model("1"), served.model("2")
    # A reader from the beginning may see an older plan after a newer one (two partitions, a re-send).
    served.serving.start(FakeFeed([rollout_plan(2, first), rollout_plan(3, second), rollout_plan(2, first)]))
    assert served.serving.pipeline.detector.model_version == "2"
    assert served.serving.active.revision == 3
    assert served.loads == ["2"]  # the stale plan loaded nothing
    assert served.metric("michi_inference_model_swaps_total") == 0  # the first load is not a swap
    assert served.metric("michi_inference_plans_total", decision="stale") == 1


def test_at_start_a_refused_champion_falls_back_to_the_previous_plans(served: Served) -> None:
    previous = served.model("1")
    refused = served.model("2")
    refused.sha256 = "e" * 64
    served.serving.start(FakeFeed([rollout_plan(1, previous), rollout_plan(2, refused)]))
    assert served.serving.pipeline.detector.model_version == "1"  # what the fleet served before, not the baseline
    assert served.serving.active.revision == 1 and served.serving.held_revision is None
    assert served.metric("michi_inference_models_refused_total", reason=SHA256_MISMATCH, variant="champion") == 1
    # The registry re-sends revision 2 once the artifact is fixed: accepted, since it was never held.
    fixed = served.model("2")
    assert served.apply(rollout_plan(2, fixed)) is PlanDecision.APPLY
    assert served.serving.pipeline.detector.model_version == "2"


def test_new_plan_is_loaded_then_swapped_and_duplicates_change_nothing(served: Served) -> None:
    served.serving.start(FakeFeed([]))
    plan = rollout_plan(4, served.model("1"))
    assert served.serving.offer(plan) is PlanDecision.APPLY
    assert served.serving.load_wanted() is True
    # Loaded but not served until the agent activates it between batches.
    assert served.serving.pipeline.detector.model_version == "baseline-1"
    assert served.serving.pending is not None
    served.serving.activate()
    assert served.serving.pipeline.detector.model_version == "1"
    assert served.metric("michi_inference_model_swaps_total") == 1
    assert served.metric("michi_inference_model_served", model=MODEL, version="1", variant="champion") == 1
    assert served.metric("michi_inference_model_served", model=MODEL, version="baseline-1", variant="champion") == 0
    # The same plan again (at-least-once publishing) and an older one: ignored, nothing loaded.
    assert served.apply(plan) is PlanDecision.DUPLICATE
    assert served.apply(rollout_plan(3, served.model("2"))) is PlanDecision.STALE
    assert served.loads == ["1"]
    assert served.serving.pipeline.detector.model_version == "1"
    assert served.metric("michi_inference_model_swaps_total") == 1


def test_sha256_mismatch_is_refused_and_the_current_model_kept(served: Served) -> None:
    served.serving.start(FakeFeed([rollout_plan(1, served.model("1"))]))
    good = served.model("2")
    tampered = operations_pb2.ModelRef()
    tampered.CopyFrom(good)
    tampered.sha256 = hashlib.sha256(b"something else").hexdigest()
    assert served.apply(rollout_plan(2, tampered)) is PlanDecision.APPLY
    assert served.serving.pipeline.detector.model_version == "1"
    assert served.serving.pending is None
    assert served.metric("michi_inference_models_refused_total", reason=SHA256_MISMATCH, variant="champion") == 1
    assert not served.cache.path_for(tampered).exists()  # nothing unverified stays in the cache
    # The revision was not taken: the registry re-sending the same revision (fixed) is applied.
    assert served.serving.held_revision == 1
    fixed = rollout_plan(2, good)
    assert served.apply(fixed) is PlanDecision.APPLY
    assert served.serving.pipeline.detector.model_version == "2"
    assert served.serving.held_revision == 2


def test_a_tampered_cache_file_is_fetched_again_and_a_tampered_blob_refused(served: Served) -> None:
    reference = served.model("1")
    artifact = served.cache.fetch(reference)
    artifact.path.write_bytes(b"not the model")
    assert served.cache.fetch(reference).path.read_bytes() == build_baseline_model(1.1)
    # The blob itself changed after registration: refused, whatever the cache held.
    artifact.path.unlink()
    asyncio.run(served.store.put_bytes(model_key("1"), build_baseline_model(3.0)))
    with pytest.raises(ModelRefused) as refused:
        served.cache.fetch(reference)
    assert refused.value.reason == SHA256_MISMATCH and not refused.value.transient


def test_unreachable_artifact_is_retried_with_backoff(served: Served) -> None:
    served.serving.start(FakeFeed([]))
    payload = build_signals_model()
    reference = operations_pb2.ModelRef(
        name=MODEL,
        version="7",
        artifact_uri=served.store.uri(model_key("7")),
        sha256=hashlib.sha256(payload).hexdigest(),
    )
    served.serving.offer(rollout_plan(1, reference))
    assert served.serving.load_wanted() is False
    assert served.metric("michi_inference_models_refused_total", reason=UNAVAILABLE, variant="champion") == 1
    assert served.serving.load_wanted() is False  # not before the backoff
    assert served.loads == ["7"]
    asyncio.run(served.store.put_bytes(model_key("7"), payload))
    served.clock.now += 5.0
    assert served.serving.load_wanted() is True
    served.serving.activate()
    assert served.serving.pipeline.detector.model_version == "7"


def test_invalid_references_and_graphs_are_refused(served: Served, tmp_path: Path) -> None:
    outside = operations_pb2.ModelRef(
        name=MODEL, version="1", artifact_uri=f"file://{tmp_path}/elsewhere/model.onnx", sha256="0" * 64
    )
    with pytest.raises(ModelRefused) as refused:
        served.cache.fetch(outside)
    assert refused.value.reason == INVALID_REFERENCE
    escaping = operations_pb2.ModelRef(name=MODEL, version="../x", artifact_uri="file:///x", sha256="0" * 64)
    with pytest.raises(ModelRefused, match="version"):
        served.cache.fetch(escaping)
    # A valid ONNX file that is not a contract graph (a text file is not even a graph).
    not_a_graph = served.model("5", b"hello")
    with pytest.raises(ModelRefused) as refused:
        served.load(not_a_graph)
    assert refused.value.reason == INVALID_MODEL


def test_shadow_arm_is_served_next_to_the_champion_and_a_refused_shadow_dropped(served: Served) -> None:
    champion, shadow = served.model("1"), served.model("2", build_signals_model())
    served.serving.start(FakeFeed([rollout_plan(1, champion, shadow)]))
    assert served.serving.pipeline.detector.model_version == "1"
    assert served.serving.pipeline.shadow is not None and served.serving.pipeline.shadow.model_version == "2"
    assert served.metric("michi_inference_model_served", model=MODEL, version="2", variant="shadow") == 1
    # Promote the shadow: it becomes the champion without being loaded again.
    assert served.apply(rollout_plan(2, shadow)) is PlanDecision.APPLY
    assert served.serving.pipeline.detector.model_version == "2" and served.serving.pipeline.shadow is None
    assert served.loads == ["1", "2"]
    # A new shadow whose artifact is bad: the champion stays, no shadow is served, the refusal is counted.
    bad = served.model("3")
    bad.sha256 = "f" * 64
    assert served.apply(rollout_plan(3, shadow, bad)) is PlanDecision.APPLY
    assert served.serving.pipeline.detector.model_version == "2" and served.serving.pipeline.shadow is None
    assert served.metric("michi_inference_models_refused_total", reason=SHA256_MISMATCH, variant="shadow") == 1


def test_plan_naming_the_served_models_moves_the_revision_without_a_swap(served: Served) -> None:
    champion = served.model("1")
    served.serving.start(FakeFeed([rollout_plan(1, champion)]))
    assert served.apply(rollout_plan(2, champion)) is PlanDecision.APPLY
    assert served.serving.active.revision == 2
    assert served.loads == ["1"]
    assert served.metric("michi_inference_model_swaps_total") == 0
    assert served.metric("michi_inference_plan_revision") == 2


def test_a_newer_plan_for_the_pending_models_moves_the_pending_revision(served: Served) -> None:
    served.serving.start(FakeFeed([]))
    reference = served.model("1")
    served.serving.offer(rollout_plan(1, reference))
    assert served.serving.load_wanted() is True
    served.serving.offer(rollout_plan(2, reference))  # e.g. another version retired: same champion
    assert served.serving.load_wanted() is False
    assert served.serving.active.revision == 0
    activated = served.serving.activate()
    assert activated is not None and activated.revision == 2
    assert served.metric("michi_inference_plan_revision") == 2


def test_earlier_versions_stay_loaded_for_replays_and_can_be_loaded_again(served: Served) -> None:
    served.serving.start(FakeFeed([]))
    references = {version: served.model(version) for version in ("1", "2", "3", "4")}
    for revision, version in enumerate(("1", "2", "3", "4"), start=1):
        served.apply(rollout_plan(revision, references[version]))
    pipeline = served.serving.pipeline
    assert pipeline.detector.model_version == "4"
    # retain=2: the baseline, the champion and the two most recent others stay loaded.
    assert sorted(pipeline.earlier) == ["2", "3", "4", "baseline-1"]
    assert served.serving.missing(["1", "2", "baseline-1"]) == {"1"}
    # A replay recorded with version 1: loaded again from what the plans said (the cache holds it).
    served.serving.ensure_loaded({"1", "unknown-version"})
    assert "1" in served.serving.pipeline.earlier
    assert served.serving.missing(["1", "unknown-version"]) == {"unknown-version"}


# --- the agent's swap step


def test_swap_waits_for_the_commit_barrier(served: Served) -> None:
    served.serving.start(FakeFeed([]))
    served.serving.offer(rollout_plan(1, served.model("1")))
    served.serving.load_wanted()
    committed: list[Mapping[int, int]] = []
    answer = {"value": False}

    async def barrier(processed: Mapping[int, int]) -> bool:
        committed.append(dict(processed))
        return answer["value"]

    wiring = StreamWiring(
        producer=cast(Any, None),
        publisher=cast(Any, None),
        serving=served.serving,
        table=None,
        metrics=served.metrics,
        batch_size=64,
        within=0.05,
        commit_barrier=barrier,
        budget=RateBudget(60.0),
        processed={0: 42, 1: 7},
    )
    assert asyncio.run(swap_if_ready(wiring)) is False
    assert served.serving.pipeline.detector.model_version == "baseline-1"
    assert served.metric("michi_inference_model_swaps_postponed_total") == 1
    answer["value"] = True
    assert asyncio.run(swap_if_ready(wiring)) is True
    assert served.serving.pipeline.detector.model_version == "1"
    assert committed == [{0: 42, 1: 7}, {0: 42, 1: 7}]
    # Nothing pending: the barrier is not even asked.
    assert asyncio.run(swap_if_ready(wiring)) is False
    assert len(committed) == 2
