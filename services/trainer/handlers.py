"""The trainer's workflow: fetch → preprocess → train → evaluate → register → shadow, each step recorded.

    outcome = run_workflow(wiring, Trigger("manual", "new parameters"))   # one run, in this thread
    outcome = bootstrap_champion(wiring)                                   # only when there is no champion
    report = dry_run(wiring)                                               # what a run would do now

Steps (rows in `trainer_step`, with timing, status and error):

1. fetch — the stored labels (newest per window wins) and the simulated ground-truth windows of the
   recipe (from the on-disk cache when present);
2. preprocess — labelled windows rebuilt from the raw archive, one dataset (data version, split),
   its member list written to `datasets/<data version>/members.jsonl`;
3. train — `RiskNet` trained reproducibly, exported to ONNX, parity with PyTorch checked on held-out
   windows (fails above the tolerance), reference profile computed; or all of it reused from the
   model cache when code version, data version and parameters match;
4. evaluate — candidate and champion (the registry's champion ONNX file, or the hand-set baseline
   when there is none) scored by ONNX Runtime on the same test windows; candidate, champion and the
   physics baseline `physics-3` on the real recordings (`domain/real_data.py`); the gate decides. A
   refused candidate ends the run as `refused`: nothing is registered;
5. register — the model folder written to the blob store, the version registered as `candidate`;
6. shadow — the version moved to `shadow`, which publishes the rollout plan. The bootstrap promotes
   it to `champion` instead — unless it is behind the physics baseline on the real recordings (the
   gate's advisory checks failed): then `physics-3` is registered if needed and promoted, and the
   learned candidate shadows it.

Any failure ends the run as `failed` with the step's error in the step row, the run's reason and a log
line; the champion is only ever changed by step 6, so it stays untouched. Every run ends with its
experiment record (SQL and `experiments/<run id>/experiment.md`, plus the model folder's copy).

`register_physics_model(wiring)` registers the physics baseline `physics-3` (`michi.windows.physics`)
once per registry, as a candidate a person may promote or put in shadow, with its evaluation as metrics.

`EventHandler` is what the trainer does with the labels and alerts it consumes (the consumer's kit loop
decodes, calls it and commits): a label missing what a dataset needs is refused `schema-violation`, the
others are stored at the end of their batch; every alert is counted by kind and a retrain alert stored
once; new labels or a new retrain alert wake the worker. It stores through the `EventStore` port.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from google.protobuf.message import Message
from opentelemetry import trace

from michi.blobs import BlobError
from michi.bus.headers import links_to
from michi.contracts.v1 import labels_pb2, operations_pb2
from michi.kit.consumer import Rejected
from michi.registry import ModelRegistry, Stage, UnknownModelVersion, VersionAlreadyRegistered
from michi.registry.layout import REFERENCE_PROFILE_FILE, model_folder
from michi.windows.features import DATA_VERSION
from michi.windows.model_spec import BASELINE_MODEL_VERSION, CLASS_EVENT_TYPES, DECISION_THRESHOLD
from michi.windows.physics import (
    PHYSICS_DATA_VERSION,
    PHYSICS_MODEL_VERSION,
    PHYSICS_RULES_VERSION,
    build_physics_model,
    physics_parameters,
)
from services.trainer.adapters.archive import ArchiveWindowSource
from services.trainer.adapters.artifacts import ArtifactStore, ModelCache
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.adapters.onnx_model import (
    OnnxRiskModel,
    ParityFailure,
    export_onnx,
    parity_max_abs_diff,
    sha256_hex,
    signature,
)
from services.trainer.adapters.recordings import RealRecordings
from services.trainer.adapters.simulation import (
    CALIBRATION,
    DEVICE,
    REFERENCE_TRAFFIC,
    TRAFFIC_DIMENSIONS,
    SimulationRecipe,
    simulated_windows,
    traffic_windows,
)
from services.trainer.adapters.store import TRAINER_ACTOR, TrainerStore
from services.trainer.adapters.tables import TrainerRunRow
from services.trainer.domain.dataset import Dataset, LabeledWindows, build_dataset
from services.trainer.domain.evaluation import evaluate
from services.trainer.domain.experiment import RunFacts, compose_sections, render_markdown
from services.trainer.domain.gate import PHYSICS_RULE, GatePolicy, decide
from services.trainer.domain.labels import (
    CLASS_NAMES,
    HUMAN_SOURCES,
    WindowLabel,
    is_camera_label,
    label_from_message,
    label_problem,
    source_name,
)
from services.trainer.domain.profile import LIVE, reference_profile, traffic_profile
from services.trainer.domain.real_data import RealWindows, real_data_section
from services.trainer.domain.training import TrainingParameters, train_model
from services.trainer.domain.triggers import (
    BOOTSTRAP,
    RETRAIN_ALERT_KIND,
    Trigger,
    TriggerPolicy,
    TriggerState,
    due_trigger,
)
from services.trainer.domain.versions import code_version

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

STEPS = ("fetch", "preprocess", "train", "evaluate", "register", "shadow")
BOOTSTRAP_STEPS = ("fetch", "preprocess", "train", "evaluate", "register", "promote")


class RunMetrics(Protocol):
    def run_finished(self, trigger: str, status: str, seconds: float) -> None: ...

    def step_finished(self, step: str, status: str, seconds: float) -> None: ...


class StepFailed(RuntimeError):
    """A step could not do its work; the run fails with this message."""


@dataclass
class TrainerWiring:
    """Everything the workflow uses (built by `wiring.build_wiring`; tests swap adapters there)."""

    model_name: str
    store: TrainerStore
    registry: ModelRegistry
    artifacts: ArtifactStore
    archive: ArchiveWindowSource
    cache: ModelCache
    simulation: SimulationRecipe
    parameters: TrainingParameters
    gate: GatePolicy
    triggers: TriggerPolicy
    baseline: Callable[[], bytes]
    parity_tolerance: float = 1e-4
    evaluation_threads: int = 1
    metrics: RunMetrics | None = None
    recordings: RealRecordings = field(default_factory=RealRecordings)
    physics: Callable[[], bytes] = build_physics_model
    # The traffic every registered model's reference profile describes (no fleets: its training windows).
    reference_traffic: SimulationRecipe = REFERENCE_TRAFFIC
    started_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def datasets_cache(self) -> Path:
        return self.cache.folder.parent / "datasets"


@dataclass
class RunOutcome:
    run_id: str
    status: str  # succeeded, refused, failed
    reason: str
    version: str | None
    stage: str | None
    facts: RunFacts
    experiment_uri: str
    plan: operations_pb2.RolloutPlan | None = None


@dataclass
class _Trained:
    payload: bytes
    profile: dict[str, Any]
    training: dict[str, Any]
    export: dict[str, Any]


@dataclass
class _Champion:
    label: str
    detector: OnnxRiskModel
    version: str | None  # None for the baseline
    data_version: str
    metrics: dict[str, Any]


class _Steps:
    """Records each step as it runs (start, then status, seconds, error, details)."""

    def __init__(self, store: TrainerStore, facts: RunFacts, metrics: RunMetrics | None) -> None:
        self.store = store
        self.facts = facts
        self.metrics = metrics
        self.sequence = 0

    @contextmanager
    def step(self, name: str) -> Iterator[dict[str, Any]]:
        self.sequence += 1
        sequence = self.sequence
        started = datetime.now(UTC)
        self.store.start_step(self.facts.run_id, sequence, name, started)
        details: dict[str, Any] = {}
        began = time.perf_counter()
        # A child of the run's span; what the step publishes (a rollout plan) continues from it.
        with tracer.start_as_current_span(f"trainer {name}", attributes={"michi.trainer.step": name}) as span:
            try:
                yield details
            except Exception as error:
                seconds = time.perf_counter() - began
                message = f"{type(error).__name__}: {error}"[:2000]
                self.store.finish_step(
                    self.facts.run_id, sequence, "failed", seconds=seconds, error=message, details=details
                )
                self._note(name, "failed", seconds, message)
                span.set_attribute("michi.trainer.step_status", "failed")
                raise
            seconds = time.perf_counter() - began
            status = str(details.pop("status", "succeeded"))
            self.store.finish_step(self.facts.run_id, sequence, status, seconds=seconds, details=details)
            self._note(name, status, seconds, "")
            span.set_attribute("michi.trainer.step_status", status)

    def skip(self, name: str, reason: str) -> None:
        trace.get_current_span().add_event("step skipped", {"michi.trainer.step": name, "michi.trainer.reason": reason})
        self.sequence += 1
        now = datetime.now(UTC)
        self.store.start_step(self.facts.run_id, self.sequence, name, now)
        self.store.finish_step(self.facts.run_id, self.sequence, "skipped", seconds=None, details={"reason": reason})
        self.facts.steps.append({"name": name, "status": "skipped", "seconds": None, "error": reason})

    def _note(self, name: str, status: str, seconds: float, error: str) -> None:
        self.facts.steps.append({"name": name, "status": status, "seconds": seconds, "error": error})
        if self.metrics is not None:
            self.metrics.step_finished(name, status, seconds)


def new_run_id() -> str:
    return f"run-{datetime.now(UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


def training_key(code: str, data_version: str, parameters: TrainingParameters, tolerance: float) -> str:
    """Cache key of a training result: code version, data version, parameters (and the parity tolerance)."""
    payload = json.dumps(
        {"code": code, "data": data_version, "parameters": parameters.to_dict(), "parity_tolerance": tolerance},
        sort_keys=True,
    )
    return "train-" + hashlib.sha256(payload.encode()).hexdigest()[:32]


def bootstrap_key(wiring: TrainerWiring, baseline_sha256: str) -> str:
    """Cache key of a whole bootstrap result (dataset recipe, parameters, gate, the baseline it beats,
    and the real recordings and physics baseline of its real-data checks)."""
    payload = json.dumps(
        {
            "code": code_version(),
            "simulation": wiring.simulation.cache_key(),
            "parameters": wiring.parameters.to_dict(),
            "gate": wiring.gate.to_dict(),
            "baseline": baseline_sha256,
            "parity_tolerance": wiring.parity_tolerance,
            "physics": sha256_hex(wiring.physics()),
            "real_recordings": wiring.recordings.fingerprint(),
        },
        sort_keys=True,
    )
    return "bootstrap-" + hashlib.sha256(payload.encode()).hexdigest()[:32]


# ------------------------------------------------------------------ building blocks


def gather_windows(
    wiring: TrainerWiring, *, with_labels: bool, up_to: int | None = None
) -> tuple[LabeledWindows, LabeledWindows, dict[str, Any]]:
    """Simulated ground-truth windows and windows of the stored labels (rebuilt from the archive)."""
    simulated = simulated_windows(wiring.simulation, cache_dir=wiring.datasets_cache)
    if not with_labels:
        return simulated, LabeledWindows.empty(), {"labels": 0, "human_labels": 0, "unresolved": {}}
    labels = wiring.store.labels(up_to)
    labelled, unresolved = wiring.archive.labeled_windows(labels)
    # Labelled real recordings (imported label files) are members like any labelled window.
    real, real_summary = wiring.recordings.training_windows()
    return (
        simulated,
        LabeledWindows.concatenate([labelled, real]),
        {
            "labels": len(labels),
            "human_labels": sum(1 for label in labels if label.source in HUMAN_SOURCES),
            "unresolved": unresolved,
            "label_windows": labelled.count,
            "real_training": real_summary,
        },
    )


def assemble_dataset(
    wiring: TrainerWiring,
    simulated: LabeledWindows,
    labelled: LabeledWindows,
    unresolved: dict[str, int],
    real_version: str = "",
) -> Dataset:
    origin = f"simulation {wiring.simulation.cache_key()}" if simulated.count else ""
    if real_version:
        origin = f"{origin} real {real_version}".strip()
    return build_dataset(
        [simulated, labelled],
        split_by=wiring.parameters.split_by,
        test_percent=wiring.parameters.test_percent,
        unresolved=unresolved,
        origin=origin,
    )


def dataset_manifest(dataset: Dataset) -> bytes:
    windows = dataset.windows
    lines = [
        json.dumps(
            {
                "window_id": windows.window_ids[row],
                "label": CLASS_NAMES[int(windows.labels[row])],
                "event_type": int(CLASS_EVENT_TYPES[int(windows.labels[row])]),
                "source": source_name(windows.sources[row]),
                "upload_id": windows.upload_ids[row],
                "trip_id": windows.trip_ids[row],
                "device_id": windows.device_ids[row],
                "split": "test" if dataset.test[row] else "train",
            },
            sort_keys=True,
        )
        for row in range(windows.count)
    ]
    return ("\n".join(lines) + "\n").encode() if lines else b""


def train_candidate(wiring: TrainerWiring, dataset: Dataset, details: dict[str, Any]) -> _Trained:
    """Train, export and check parity — or reuse the cached result of the same code, data and parameters."""
    code = code_version()
    key = training_key(code, dataset.data_version, wiring.parameters, wiring.parity_tolerance)
    cached = wiring.cache.load(key)
    if cached is not None and {"model.onnx", "training.json", "reference_profile.json"} <= set(cached):
        stored = json.loads(cached["training.json"])
        details.update({"cache": "hit", "cache_key": key})
        stored["training"]["cached"] = True
        return _Trained(
            cached["model.onnx"], json.loads(cached["reference_profile.json"]), stored["training"], stored["export"]
        )
    train = dataset.train()
    if train.count == 0:
        raise StepFailed("the dataset has no training windows")
    result = train_model(train, wiring.parameters)
    payload = export_onnx(result.model)
    test = dataset.test_windows()
    check = test if test.count else train
    difference = parity_max_abs_diff(result.model, payload, check.features[:2048], check.signals[:2048])
    export = {
        "sha256": sha256_hex(payload),
        "parity_max_abs_diff": difference,
        "parity_windows": int(min(check.count, 2048)),
        "tolerance": wiring.parity_tolerance,
        "signature": signature(payload),
    }
    if not difference <= wiring.parity_tolerance:
        raise ParityFailure(
            f"ONNX and PyTorch disagree by {difference:.3g} on held-out windows (tolerance {wiring.parity_tolerance:g})"
        )
    training = {
        "seconds": result.seconds,
        "epoch_losses": result.epoch_losses,
        "steps": result.steps,
        "class_weights": result.class_weights,
        "train_windows": train.count,
        "cached": False,
    }
    profile = reference_profile(train.features, train.signals, data_version=dataset.data_version)
    wiring.cache.store(
        key,
        {
            "model.onnx": payload,
            "training.json": json.dumps({"training": training, "export": export}, sort_keys=True).encode(),
            "reference_profile.json": json.dumps(profile, sort_keys=True).encode(),
        },
    )
    details.update({"cache": "miss", "cache_key": key})
    return _Trained(payload, profile, training, export)


def current_champion(wiring: TrainerWiring) -> _Champion:
    """The registry's champion as an ONNX Runtime model, or the hand-set baseline when there is none."""
    champion = wiring.registry.champion(wiring.model_name)
    if champion is None:
        return _Champion(
            label=BASELINE_MODEL_VERSION,
            detector=OnnxRiskModel(
                wiring.baseline(), model_version=BASELINE_MODEL_VERSION, threads=wiring.evaluation_threads
            ),
            version=None,
            data_version=DATA_VERSION,
            metrics={},
        )
    payload = wiring.artifacts.read_model(champion.artifact_uri, champion.artifact_sha256)
    return _Champion(
        label=f"{champion.name} {champion.version}",
        detector=OnnxRiskModel(
            payload,
            model_name=champion.name,
            model_version=champion.version,
            data_version=champion.data_version,
            threads=wiring.evaluation_threads,
        ),
        version=champion.version,
        data_version=champion.data_version,
        metrics=dict(champion.metrics),
    )


def evaluate_on_test(
    wiring: TrainerWiring, payload: bytes, champion: _Champion, test: LabeledWindows
) -> tuple[dict[str, Any], dict[str, Any]]:
    if test.count == 0:
        raise StepFailed("the dataset has no test windows")
    candidate = OnnxRiskModel(payload, threads=wiring.evaluation_threads)
    candidate_evaluation = evaluate(candidate.predict_in_batches(test.features, test.signals), test)
    champion_evaluation = evaluate(champion.detector.predict_in_batches(test.features, test.signals), test)
    return candidate_evaluation, champion_evaluation


def evaluate_on_real(
    wiring: TrainerWiring, payload: bytes, champion: _Champion, recordings: list[RealWindows]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Real-data sections of candidate, champion and the physics baseline on the same recordings."""
    candidate = OnnxRiskModel(payload, threads=wiring.evaluation_threads)
    physics = OnnxRiskModel(wiring.physics(), model_version=PHYSICS_MODEL_VERSION, threads=wiring.evaluation_threads)
    return (
        real_data_section(candidate.predict_in_batches, recordings),
        real_data_section(champion.detector.predict_in_batches, recordings),
        real_data_section(physics.predict_in_batches, recordings),
    )


def registered_metrics(evaluation: dict[str, Any] | None) -> dict[str, Any]:
    """Headline metrics on the test windows, with the real-data figures beside them (`real_*`)."""
    evaluation = evaluation or {}
    return {**(evaluation.get("metrics") or {}), **((evaluation.get("real_data") or {}).get("metrics") or {})}


def next_version(registry: ModelRegistry, name: str) -> str:
    """The version the registry will give the next unnamed registration (named ones take numbers too)."""
    return str(max((version.number for version in registry.list(name)), default=0) + 1)


def manifest(
    name: str,
    version: str,
    payload: bytes,
    data_version: str,
    code: str,
    export: dict[str, Any],
    parameters: dict[str, Any],
    run_id: str,
) -> dict[str, Any]:
    described = export.get("signature") or signature(payload)
    return {
        "name": name,
        "version": version,
        "sha256": sha256_hex(payload),
        "data_version": data_version,
        "preprocessing_version": DATA_VERSION,
        "code_version": code,
        "inputs": described["inputs"],
        "outputs": described["outputs"],
        "opset": described.get("opset", 17),
        "classes": list(CLASS_NAMES),
        "class_event_types": [int(event_type) for event_type in CLASS_EVENT_TYPES],
        "decision_threshold": DECISION_THRESHOLD,
        "parameters": parameters,
        "run_id": run_id,
        "parity_max_abs_diff": export.get("parity_max_abs_diff"),
    }


# ------------------------------------------------------------------ the workflow


def _start(wiring: TrainerWiring, trigger: Trigger, watermark: int, new_labels: int) -> RunFacts:
    facts = RunFacts(
        run_id=trigger.run_id or new_run_id(),
        model_name=wiring.model_name,
        trigger=trigger.kind,
        trigger_reason=trigger.reason,
        started_at=datetime.now(UTC),
        code_version=code_version(),
        parameters=wiring.parameters.to_dict(),
        new_labels=new_labels,
        gate_policy=wiring.gate.to_dict(),
    )
    wiring.store.start_run(
        TrainerRunRow(
            run_id=facts.run_id,
            model_name=wiring.model_name,
            trigger=trigger.kind,
            trigger_reason=trigger.reason[:2000],
            status="running",
            started_at=facts.started_at,
            code_version=facts.code_version,
            parameters=facts.parameters,
            label_watermark=watermark,
        )
    )
    if trigger.alert_event_id:
        wiring.store.claim_alert(trigger.alert_event_id, facts.run_id)
    logger.info(
        "training run started",
        extra={"run_id": facts.run_id, "trigger": trigger.kind, "reason": trigger.reason, "model": wiring.model_name},
    )
    return facts


def _finish(
    wiring: TrainerWiring,
    facts: RunFacts,
    status: str,
    reason: str,
    began: float,
    *,
    version: str | None = None,
    stage: str | None = None,
) -> str:
    facts.status, facts.status_reason = status, reason
    facts.finished_at = datetime.now(UTC)
    sections = compose_sections(facts)
    markdown = render_markdown(facts, sections)
    experiment_uri = ""
    try:
        experiment_uri = wiring.artifacts.put(f"experiments/{facts.run_id}/experiment.md", markdown.encode())
        if version is not None:
            wiring.artifacts.put(f"{model_folder(wiring.model_name, version)}/experiment.md", markdown.encode())
    except Exception:
        logger.exception("experiment record not written to the blob store", extra={"run_id": facts.run_id})
    candidate = registered_metrics(facts.candidate_evaluation)
    champion = registered_metrics(facts.champion_evaluation)
    wiring.store.update_run(
        facts.run_id,
        status=status,
        status_reason=reason[:4000],
        finished_at=facts.finished_at,
        data_version=(facts.data or {}).get("data_version", ""),
        metrics=candidate,
        champion_metrics=champion,
        gate=facts.gate or {},
        registered_version=version,
        stage=stage,
        artifact_uri=facts.artifacts.get("model", ""),
        experiment_uri=experiment_uri,
        facts=json.loads(json.dumps(facts.to_dict(), default=str)),
        experiment=sections,
        experiment_markdown=markdown,
    )
    seconds = time.perf_counter() - began
    if wiring.metrics is not None:
        wiring.metrics.run_finished(facts.trigger, status, seconds)
    log = logger.error if status == "failed" else logger.info
    log(
        "training run finished",
        extra={
            "run_id": facts.run_id,
            "status": status,
            "reason": reason,
            "version": version,
            "stage": stage,
            "seconds": round(seconds, 2),
            "experiment": experiment_uri,
        },
    )
    return experiment_uri


def run_workflow(wiring: TrainerWiring, trigger: Trigger, *, bootstrap: bool = False) -> RunOutcome:
    """One run of the workflow, start to end (the caller holds no lock; runs are serialised here).

    Traced as one `trainer run` span (a trace of its own from the worker; linked to the retrain alert's trace
    when an alert triggered it) with a child span per step that ran, `trainer <step>`.
    """
    # The lock first: a run waiting for another is not timed.
    with (
        wiring.lock,
        tracer.start_as_current_span(
            "trainer run",
            links=links_to(trigger.traceparent),
            attributes={"michi.trainer.trigger": trigger.kind, "michi.trainer.model_name": wiring.model_name},
        ) as span,
    ):
        outcome = _run_locked(wiring, trigger, bootstrap=bootstrap)
        span.set_attribute("michi.trainer.outcome", outcome.status)
        if outcome.version is not None:
            span.set_attribute("michi.trainer.version", outcome.version)
        if outcome.status == "failed":
            span.set_status(trace.Status(trace.StatusCode.ERROR, outcome.reason[:200]))
        return outcome


def _run_locked(wiring: TrainerWiring, trigger: Trigger, *, bootstrap: bool) -> RunOutcome:
    began = time.perf_counter()
    store = wiring.store
    watermark = store.label_watermark()
    last = store.last_run(wiring.model_name)
    new_labels = store.human_labels_above(last.label_watermark if last else 0)
    facts = _start(wiring, trigger, watermark, new_labels)
    trace.get_current_span().set_attribute("michi.trainer.run_id", facts.run_id)
    steps = _Steps(store, facts, wiring.metrics)
    version: str | None = None
    stage: str | None = None
    plan = None
    current = "fetch"
    try:
        reused = None
        if bootstrap:
            baseline_sha = sha256_hex(wiring.baseline())
            key = bootstrap_key(wiring, baseline_sha)
            reused = wiring.cache.load(key)
            if reused is not None and "bootstrap.json" not in reused:
                reused = None
        if reused is not None:
            payload, profile = _replay_bootstrap(wiring, facts, steps, reused)
        else:
            with steps.step("fetch") as details:
                simulated, labelled, fetched = gather_windows(wiring, with_labels=not bootstrap, up_to=watermark)
                details.update({"simulated_windows": simulated.count, **fetched})
            current = "preprocess"
            with steps.step("preprocess") as details:
                real_training = fetched.get("real_training") or {}
                dataset = assemble_dataset(
                    wiring, simulated, labelled, fetched["unresolved"], str(real_training.get("version", ""))
                )
                summary = dataset.summary()
                if simulated.count:
                    summary["simulation"] = wiring.simulation.to_dict()
                if real_training.get("recordings") or real_training.get("skipped"):
                    summary["real_training"] = real_training
                facts.data = summary
                manifest_bytes = dataset_manifest(dataset)
                facts.artifacts["dataset"] = wiring.artifacts.put(
                    f"datasets/{dataset.data_version}/members.jsonl", manifest_bytes
                )
                details.update({"data_version": dataset.data_version, "windows": dataset.windows.count})
            current = "train"
            with steps.step("train") as details:
                trained = train_candidate(wiring, dataset, details)
                facts.training, facts.export = trained.training, trained.export
                payload, profile = trained.payload, trained.profile
                details.update(
                    {"sha256": trained.export["sha256"], "parity_max_abs_diff": trained.export["parity_max_abs_diff"]}
                )
                if trained.training.get("cached"):
                    details["status"] = "cached"
            current = "evaluate"
            with steps.step("evaluate") as details:
                champion = _baseline_champion(wiring) if bootstrap else current_champion(wiring)
                facts.champion = {
                    "label": champion.label,
                    "version": champion.version,
                    "data_version": champion.data_version,
                    "metrics": champion.metrics,
                }
                candidate_evaluation, champion_evaluation = evaluate_on_test(
                    wiring, payload, champion, dataset.test_windows()
                )
                recordings, skipped = wiring.recordings.evaluation_windows()
                real_candidate, real_champion, real_physics = evaluate_on_real(wiring, payload, champion, recordings)
                candidate_evaluation["real_data"] = real_candidate
                champion_evaluation["real_data"] = real_champion
                facts.real_data = {
                    "reference": PHYSICS_MODEL_VERSION,
                    "reference_data_version": PHYSICS_DATA_VERSION,
                    "physics": real_physics,
                    "sources": wiring.recordings.describe(),
                    "skipped": skipped,
                }
                facts.candidate_evaluation, facts.champion_evaluation = candidate_evaluation, champion_evaluation
                decision = decide(
                    wiring.gate,
                    candidate_evaluation["metrics"],
                    champion_evaluation["metrics"],
                    champion.label,
                    real_candidate=real_candidate,
                    real_reference=real_physics,
                    reference_label=PHYSICS_MODEL_VERSION,
                    real_data_advisory=bootstrap and not wiring.gate.enforce_real_data_at_bootstrap,
                )
                facts.gate = decision.to_dict()
                advisory = [check.describe() for check in decision.checks if check.advisory and not check.passed]
                if advisory:
                    logger.warning(
                        "the bootstrap candidate is behind the physics baseline on real recordings (advisory)",
                        extra={"run_id": facts.run_id, "checks": advisory},
                    )
                details.update(
                    {
                        "gate_passed": decision.passed,
                        "compared_with": champion.label,
                        "real_recordings": len(recordings),
                        "real_false_alerts_per_hour": real_candidate["metrics"]["real_false_alerts_per_hour"],
                    }
                )
            if bootstrap:
                _store_bootstrap(wiring, facts, payload, profile)
        gate = facts.gate or {}
        if not gate.get("passed"):
            reason = "gate refused the candidate: " + "; ".join(
                f"{check['metric']} {check['rule']} (candidate {check['candidate']:.4g}, bound {check['bound']:.4g})"
                for check in gate.get("checks", [])
                if not check["passed"] and not check.get("advisory")
            )
            steps.skip("register", "the gate refused the candidate")
            refused = [check for check in gate.get("checks", []) if not check["passed"] and not check.get("advisory")]
            if bootstrap and refused and all(check["rule"] == PHYSICS_RULE for check in refused):
                # Refused for real data alone (enforced at bootstrap): the physics baseline serves.
                current = "promote"
                with steps.step("promote") as details:
                    register_physics_model(wiring)
                    plan = wiring.registry.promote(
                        wiring.model_name,
                        PHYSICS_MODEL_VERSION,
                        actor=TRAINER_ACTOR,
                        reason=f"bootstrap ({facts.run_id}): {reason}",
                    )
                    details.update({"stage": Stage.CHAMPION.value, "version": PHYSICS_MODEL_VERSION})
            else:
                steps.skip("promote" if bootstrap else "shadow", "the gate refused the candidate")
            uri = _finish(wiring, facts, "refused", reason, began)
            return RunOutcome(facts.run_id, "refused", reason, None, None, facts, uri, plan)
        # At bootstrap the real-data checks choose the first champion, never whether there is one: a
        # candidate behind the physics baseline on real drives shadows it instead of serving.
        behind_physics = [
            check for check in gate.get("checks", []) if check.get("advisory") and not check.get("passed")
        ]
        current = "register"
        with steps.step("register") as details:
            version = _register(wiring, facts, payload, profile)
            details.update({"version": version, "artifact_uri": facts.artifacts["model"]})
        current = "promote" if bootstrap else "shadow"
        with steps.step(current) as details:
            if bootstrap and behind_physics:
                register_physics_model(wiring)
                wiring.registry.promote(
                    wiring.model_name,
                    PHYSICS_MODEL_VERSION,
                    actor=TRAINER_ACTOR,
                    reason=(
                        f"bootstrap ({facts.run_id}): the learned candidate {version} is behind the physics baseline "
                        "on real recordings: "
                        + "; ".join(f"{check['metric']} {check['rule']}" for check in behind_physics)
                    ),
                )
                shadow_reason = (
                    f"bootstrap ({facts.run_id}): shadows {PHYSICS_MODEL_VERSION} until it holds up on real drives"
                )
            else:
                shadow_reason = f"{facts.trigger}: {facts.trigger_reason} ({facts.run_id})"
            if bootstrap and not behind_physics:
                plan = wiring.registry.promote(
                    wiring.model_name,
                    version,
                    actor=TRAINER_ACTOR,
                    reason=f"bootstrap from simulator ground truth ({facts.run_id})",
                )
                stage = Stage.CHAMPION.value
            else:
                plan = wiring.registry.transition(
                    wiring.model_name, version, Stage.SHADOW, actor=TRAINER_ACTOR, reason=shadow_reason
                )
                stage = Stage.SHADOW.value
            facts.stage = stage
            details.update({"stage": stage, "plan_revision": plan.revision})
        uri = _finish(wiring, facts, "succeeded", "", began, version=version, stage=stage)
        return RunOutcome(facts.run_id, "succeeded", "", version, stage, facts, uri, plan)
    except Exception as error:
        reason = f"{current} failed: {type(error).__name__}: {error}"
        logger.error(
            "training run step failed",
            extra={"run_id": facts.run_id, "step": current, "error": str(error)[:500]},
            exc_info=True,
        )
        logger.debug("%s", traceback.format_exc())
        done = {step["name"] for step in facts.steps}
        for name in BOOTSTRAP_STEPS if bootstrap else STEPS:
            if name not in done:
                steps.skip(name, f"not run: {current} failed")
        uri = _finish(wiring, facts, "failed", reason, began, version=version, stage=stage)
        return RunOutcome(facts.run_id, "failed", reason, version, stage, facts, uri)


def _baseline_champion(wiring: TrainerWiring) -> _Champion:
    return _Champion(
        label=BASELINE_MODEL_VERSION,
        detector=OnnxRiskModel(
            wiring.baseline(), model_version=BASELINE_MODEL_VERSION, threads=wiring.evaluation_threads
        ),
        version=None,
        data_version=DATA_VERSION,
        metrics={},
    )


def _store_bootstrap(wiring: TrainerWiring, facts: RunFacts, payload: bytes, profile: dict[str, Any]) -> None:
    key = bootstrap_key(wiring, sha256_hex(wiring.baseline()))
    recorded = {
        "data": facts.data,
        "training": facts.training,
        "export": facts.export,
        "champion": facts.champion,
        "candidate_evaluation": facts.candidate_evaluation,
        "champion_evaluation": facts.champion_evaluation,
        "gate": facts.gate,
        "real_data": facts.real_data,
        "dataset_uri": facts.artifacts.get("dataset", ""),
    }
    wiring.cache.store(
        key,
        {
            "model.onnx": payload,
            "reference_profile.json": json.dumps(profile, sort_keys=True).encode(),
            "bootstrap.json": json.dumps(recorded, default=float).encode(),
        },
    )


def _replay_bootstrap(
    wiring: TrainerWiring, facts: RunFacts, steps: _Steps, cached: dict[str, bytes]
) -> tuple[bytes, dict[str, Any]]:
    """Fill the run from a cached bootstrap (same code, recipe, parameters, gate and baseline)."""
    recorded = json.loads(cached["bootstrap.json"])
    for name in ("fetch", "preprocess", "train", "evaluate"):
        with steps.step(name) as details:
            details.update({"status": "cached", "source": "bootstrap cache"})
    facts.data = recorded["data"]
    facts.training = {**recorded["training"], "cached": True}
    facts.export = recorded["export"]
    facts.champion = recorded["champion"]
    facts.candidate_evaluation = recorded["candidate_evaluation"]
    facts.champion_evaluation = recorded["champion_evaluation"]
    facts.gate = recorded["gate"]
    facts.real_data = recorded.get("real_data")
    if recorded.get("dataset_uri"):
        facts.artifacts["dataset"] = recorded["dataset_uri"]
    return cached["model.onnx"], json.loads(cached["reference_profile.json"])


def _register(wiring: TrainerWiring, facts: RunFacts, payload: bytes, profile: dict[str, Any]) -> str:
    name = wiring.model_name
    version = next_version(wiring.registry, name)
    folder = model_folder(name, version)
    data_version = (facts.data or {}).get("data_version", "")
    export = facts.export or {}
    parameters = {**facts.parameters, "run_id": facts.run_id, "trigger": facts.trigger}
    described = manifest(
        name, version, payload, data_version, facts.code_version, export, facts.parameters, facts.run_id
    )
    model_uri = wiring.artifacts.put(f"{folder}/model.onnx", payload)
    wiring.artifacts.put(f"{folder}/model.json", json.dumps(described, indent=2, sort_keys=True).encode())
    profile = accepted_live_profile(wiring) or served_traffic_profile(wiring) or profile
    wiring.artifacts.put(f"{folder}/{REFERENCE_PROFILE_FILE}", json.dumps(profile, sort_keys=True).encode())
    facts.artifacts["model"] = model_uri
    champion = facts.champion or {}
    metrics = registered_metrics(facts.candidate_evaluation)
    registered = wiring.registry.register(
        name,
        model_uri,
        sha256_hex(payload),
        facts.code_version,
        data_version,
        parameters,
        metrics,
        parent_version=champion.get("version"),
        created_by=TRAINER_ACTOR,
    )
    if registered.version != version:
        raise StepFailed(
            f"another writer registered {name} {version} first (this one became {registered.version}, "
            f"its files are under {folder}): run one trainer per registry"
        )
    facts.registered_version = version
    return version


def bootstrap_champion(wiring: TrainerWiring) -> RunOutcome | None:
    """Train (or reuse) a learned model from simulator ground truth and promote it, when there is no champion."""
    if wiring.registry.champion(wiring.model_name) is not None:
        return None
    return run_workflow(
        wiring,
        Trigger(BOOTSTRAP, f"no champion for {wiring.model_name}: train one from simulator ground truth"),
        bootstrap=True,
    )


def physics_evaluation(wiring: TrainerWiring, payload: bytes) -> dict[str, Any]:
    """physics-3 on the default dataset's test windows (when the recipe simulates fleets) and on real data."""
    detector = OnnxRiskModel(payload, model_version=PHYSICS_MODEL_VERSION, threads=wiring.evaluation_threads)
    evaluation: dict[str, Any] = {}
    simulated = simulated_windows(wiring.simulation, cache_dir=wiring.datasets_cache)
    if simulated.count:
        dataset = assemble_dataset(wiring, simulated, LabeledWindows.empty(), {})
        test = dataset.test_windows()
        if test.count:
            evaluation = evaluate(detector.predict_in_batches(test.features, test.signals), test)
            evaluation["data_version"] = dataset.data_version
    recordings, skipped = wiring.recordings.evaluation_windows()
    evaluation["real_data"] = real_data_section(detector.predict_in_batches, recordings)
    evaluation["real_data"]["skipped"] = skipped
    evaluation["recordings"] = recordings
    return evaluation


_TRAFFIC_PROFILES: dict[str, dict[str, Any]] = {}
_TRAFFIC_LOCK = threading.Lock()


def accepted_live_profile(wiring: TrainerWiring) -> dict[str, Any] | None:
    """The champion's reference profile when a person replaced it with the fleet's own traffic (`source` `live`,
    `michi models reprofile`), for a new version of the same model: it serves the same fleet, whose accepted normal
    would otherwise read as drift again the day the new version is promoted. None otherwise, or when unreadable."""
    champion = wiring.registry.champion(wiring.model_name)
    if champion is None:
        return None
    key = f"{model_folder(wiring.model_name, champion.version)}/{REFERENCE_PROFILE_FILE}"
    try:
        document = json.loads(wiring.artifacts.read(key))
    except (BlobError, ValueError):  # absent, unreadable or not JSON: the served traffic's profile then
        return None
    if not isinstance(document, dict) or document.get("source") != LIVE:
        return None
    return {**document, "inherited_from": champion.version}


def served_traffic_profile(wiring: TrainerWiring) -> dict[str, Any] | None:
    """The reference profile of the traffic models serve (`wiring.reference_traffic`), or None without one.

    A model's training windows are enriched with events and mix sample rates: a healthy served fleet differs from
    them by design, and a rules model has none. What the monitor compares live predictions with is the traffic
    the model serves, with its cohorts (`domain/profile.py::traffic_profile`). Simulated once per recipe and code
    (the windows cached under the datasets cache), kept in memory for the process's next registration.
    """
    recipe = wiring.reference_traffic
    if not recipe.fleets or recipe.devices <= 0 or recipe.duration_s <= 0:
        return None
    key = recipe.cache_key()
    with _TRAFFIC_LOCK:  # one simulation per process: a second caller waits for the first one's profile
        return _traffic_profile(wiring, recipe, key)


def _traffic_profile(wiring: TrainerWiring, recipe: SimulationRecipe, key: str) -> dict[str, Any] | None:
    known = _TRAFFIC_PROFILES.get(key)
    if known is None:
        traffic = traffic_windows(recipe, cache_dir=wiring.datasets_cache)
        if not traffic.count:
            return None
        known = traffic_profile(
            traffic.features,
            traffic.signals,
            {dimension: traffic.cohorts[dimension] for dimension in TRAFFIC_DIMENSIONS},
            data_version=f"traffic-{key}",
            calibration=traffic.cohorts[CALIBRATION],
            devices=traffic.cohorts[DEVICE],
        )
        _TRAFFIC_PROFILES.clear()
        _TRAFFIC_PROFILES[key] = known
    return known


def register_physics_model(wiring: TrainerWiring) -> str | None:
    """Register the physics baseline `physics-3` as a candidate, once per registry; its version, or None if there.

    Its folder is written like a trained model's (`model.onnx`, `model.json`, `reference_profile.json`: the
    served traffic's (`served_traffic_profile`), or without one the real recordings' windows, what its thresholds
    were measured on); `parameters` are its thresholds,
    `metrics` its evaluation (test windows of the default dataset, `real_*` on the real recordings).
    """
    name = wiring.model_name
    try:
        wiring.registry.get(name, PHYSICS_MODEL_VERSION)
        return None
    except UnknownModelVersion:
        pass
    payload = wiring.physics()
    evaluation = physics_evaluation(wiring, payload)
    recordings: list[RealWindows] = evaluation.pop("recordings")
    parameters: dict[str, Any] = {**physics_parameters(), "rules_version": PHYSICS_RULES_VERSION}
    code = code_version()
    folder = model_folder(name, PHYSICS_MODEL_VERSION)
    described = manifest(name, PHYSICS_MODEL_VERSION, payload, PHYSICS_DATA_VERSION, code, {}, parameters, "")
    described["evaluation"] = {key: value for key, value in evaluation.items() if key != "slices"}
    measured = [windows for windows in recordings if windows.count]
    features = LabeledWindows.empty().features
    signals = LabeledWindows.empty().signals
    if measured:
        features = np.concatenate([windows.features for windows in measured])
        signals = np.concatenate([windows.signals for windows in measured])
    profile = served_traffic_profile(wiring) or reference_profile(features, signals, data_version=PHYSICS_DATA_VERSION)
    model_uri = wiring.artifacts.put(f"{folder}/model.onnx", payload)
    wiring.artifacts.put(f"{folder}/model.json", json.dumps(described, indent=2, sort_keys=True, default=str).encode())
    wiring.artifacts.put(f"{folder}/{REFERENCE_PROFILE_FILE}", json.dumps(profile, sort_keys=True).encode())
    try:
        registered = wiring.registry.register(
            name,
            model_uri,
            sha256_hex(payload),
            code,
            PHYSICS_DATA_VERSION,
            parameters,
            registered_metrics(evaluation),
            created_by=TRAINER_ACTOR,
            version=PHYSICS_MODEL_VERSION,
        )
    except VersionAlreadyRegistered:
        return None  # another trainer registered it first: same rules, same bytes
    logger.info(
        "physics baseline registered",
        extra={
            "model": name,
            "version": registered.version,
            "stage": registered.stage.value,
            "real_false_alerts_per_hour": evaluation["real_data"]["metrics"]["real_false_alerts_per_hour"],
        },
    )
    return registered.version


# ------------------------------------------------------------------ triggers and dry runs


def trigger_state(wiring: TrainerWiring) -> TriggerState:
    last = wiring.store.last_run(wiring.model_name)
    return TriggerState(
        new_labels=wiring.store.human_labels_above(last.label_watermark if last else 0),
        last_run_started_at=last.started_at.timestamp() if last else None,
        service_started_at=wiring.started_at,
        pending_alert=wiring.store.pending_alert(),
    )


def due(wiring: TrainerWiring, now: float | None = None) -> Trigger | None:
    return due_trigger(wiring.triggers, trigger_state(wiring), time.time() if now is None else now)


def dry_run(wiring: TrainerWiring) -> dict[str, Any]:
    """What a run started now would do: trigger, labels, dataset size and version, parameters, gate, cache."""
    state = trigger_state(wiring)
    trigger = due_trigger(wiring.triggers, state, time.time())
    simulated, labelled, fetched = gather_windows(wiring, with_labels=True)
    real_training = fetched.get("real_training") or {}
    dataset = assemble_dataset(
        wiring, simulated, labelled, fetched["unresolved"], str(real_training.get("version", ""))
    )
    summary = dataset.summary()
    key = training_key(code_version(), dataset.data_version, wiring.parameters, wiring.parity_tolerance)
    champion = wiring.registry.champion(wiring.model_name)
    test_classes = summary["test_classes"]
    gate_would_run = summary["train_windows"] > 0 and summary["test_windows"] > 0
    return {
        "model": wiring.model_name,
        "trigger": (
            {"kind": trigger.kind, "reason": trigger.reason}
            if trigger
            else {"kind": None, "reason": "no trigger is due (a manual run would still train)"}
        ),
        "labels": {
            "stored": fetched["labels"],
            "human": fetched["human_labels"],
            "new_since_last_run": state.new_labels,
            "threshold": wiring.triggers.label_count,
            "windows_rebuilt": fetched.get("label_windows", 0),
            "unresolved": fetched["unresolved"],
        },
        "simulated_windows": simulated.count,
        "dataset": summary,
        "parameters": wiring.parameters.to_dict(),
        "code_version": code_version(),
        "training": "reuse cached artifacts" if wiring.cache.load(key) is not None else "train",
        "cache_key": key,
        "gate": {
            "would_run": gate_would_run,
            "compared_with": f"{champion.name} {champion.version}" if champion else BASELINE_MODEL_VERSION,
            "policy": wiring.gate.to_dict(),
            "test_harsh_windows": int(sum(test_classes[name] for name in CLASS_NAMES[1:4])),
            "real_data": {"reference": PHYSICS_MODEL_VERSION, **wiring.recordings.describe()},
        },
        "real_training": real_training,
        "on_pass": "register as candidate, then shadow (rollout plan published)",
    }


# ------------------------------------------------------------------ consumed labels and alerts


class EventStore(Protocol):
    """The port consumed labels and retrain alerts are kept through (`adapters/store.TrainerStore`); both are
    idempotent by event id."""

    def add_labels(self, labels: Sequence[WindowLabel]) -> int:
        """Store labels not seen before (by event id); returns how many were new."""
        ...

    def add_alert(self, event_id: str, kind: str, message: str) -> bool:
        """Store a retrain alert once; False when its event id was already stored."""
        ...


@dataclass
class EventHandler:
    """What the trainer does with each label and alert it consumes, a batch at a time.

    The consumer calls `start_batch()`, `handle(message)` for each decoded record and `end_batch()` before it
    commits, and `dead_lettered()` for each dead letter the broker acknowledged. Labels are stored at the end
    of their batch (one write); a retrain alert is stored when read. The worker is woken once per batch that
    stored a new label or a new retrain alert.
    """

    store: EventStore
    metrics: TrainerMetrics
    wake: Callable[[], None]
    _labels: list[WindowLabel] = field(default_factory=list, init=False, repr=False)
    _alert_arrived: bool = field(default=False, init=False, repr=False)

    def start_batch(self) -> None:
        self._labels, self._alert_arrived = [], False

    def handle(self, message: Message) -> None:
        """A label missing what a dataset needs (window id, upload id, device id, window start, event type) is
        `Rejected` with `schema-violation`; a camera review's label (`is_camera_label`) is counted and left out.
        Every alert is counted by kind; only kind `retrain` is stored."""
        if isinstance(message, labels_pb2.Label):
            if is_camera_label(message):
                # A verdict on camera frames, not on the window's motion: never an IMU training label.
                self.metrics.labels.labels(outcome="camera").inc()
                return
            problem = label_problem(message)
            if problem is not None:
                raise Rejected("schema-violation", problem)
            self._labels.append(label_from_message(message))
        elif isinstance(message, operations_pb2.Alert):
            self.metrics.alerts.labels(kind=message.kind or "unknown").inc()
            if message.kind == RETRAIN_ALERT_KIND and self.store.add_alert(
                message.event_id, message.kind, message.message
            ):
                logger.info(
                    "retrain alert received", extra={"event_id": message.event_id, "message": message.message[:300]}
                )
                self._alert_arrived = True

    def end_batch(self) -> None:
        """Store the batch's labels (counted stored or duplicate); wake the worker if anything new arrived."""
        labels, self._labels = self._labels, []
        stored = self.store.add_labels(labels) if labels else 0
        if labels:
            self.metrics.labels.labels(outcome="stored").inc(stored)
            self.metrics.labels.labels(outcome="duplicate").inc(len(labels) - stored)
        if stored or self._alert_arrived:
            self.wake()

    def dead_lettered(self) -> None:
        self.metrics.labels.labels(outcome="dead-letter").inc()
