"""What this installation's records show, one function per kind of evidence (`michi/maturity/criteria.py` says
which criterion each decides).

Each function reads `InstallationRecords` through the owners' own readers (`ModelRegistry.list`, `history`,
`rollouts`, `rollout_history`; `TrainerStore.runs`, `run`, `run_facts`, `alert`, `labels`;
`MonitorStore.episodes`, `concept_drifts`, `window_series`; `AnnotationStore.status_counts`,
`labeled_by_reason`; `michi.warehouse.query`) and returns a `Finding`: met or not, the evidence in one sentence
with the ids it rests on, and the command that shows it. No table of another owner is queried here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from michi.maturity.records import InstallationRecords
from services.trainer.adapters.store import TRAINER_ACTOR
from services.trainer.domain.triggers import ALERT, LABELS, SCHEDULE

if TYPE_CHECKING:
    from michi.registry import ModelRegistry, ModelVersion, RolloutDecision, StageChange
    from services.annotation.adapters.store import AnnotationStore
    from services.trainer.adapters.store import RunRecord, TrainerStore

# The registry's actors (docs/registry.md): a rollout controller decides as `policy:<name>`, the trainer as
# `TRAINER_ACTOR`, a person as $USER.
POLICY_ACTOR_PREFIX = "policy:"
# The trainer's triggers that start a run without a person.
AUTOMATIC_TRIGGERS = (LABELS, SCHEDULE, ALERT)
# How many of the newest runs, episodes and label ids a report looks at or names.
RUNS_READ = 200
EPISODES_READ = 1000
IDS_NAMED = 5


@dataclass(frozen=True)
class Finding:
    """What the records say about one criterion."""

    met: bool
    evidence: str
    # The command that shows it, with the ids filled in (None: the criterion's own command).
    command: str | None = None
    # The ids the evidence rests on (run, version, revision, alert, label ids), for --json.
    ids: dict[str, Any] = field(default_factory=dict)


def _is_policy(actor: str) -> bool:
    return actor.startswith(POLICY_ACTOR_PREFIX)


def _is_automatic(actor: str) -> bool:
    return actor == TRAINER_ACTOR or _is_policy(actor)


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every owner writes them in UTC.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else "-"


def _named(ids: list[str]) -> str:
    shown = ", ".join(ids[:IDS_NAMED])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > IDS_NAMED else "")


def _counts(counter: Counter[str]) -> str:
    return ", ".join(f"{key} {count}" for key, count in sorted(counter.items())) or "none"


def _runs(records: InstallationRecords) -> list[RunRecord]:
    store = records.trainer
    return [] if store is None else store.runs(limit=RUNS_READ)


def _no_registry(records: InstallationRecords) -> Finding:
    return Finding(False, records.missing("registry") + " (no model was ever registered)")


def _no_trainer(records: InstallationRecords) -> Finding:
    return Finding(False, records.missing("trainer") + " (no training run is recorded)")


def _no_monitor(records: InstallationRecords) -> Finding:
    return Finding(False, records.missing("monitor") + " (no window of live traffic was judged)")


def _runs_with_facts(records: InstallationRecords, key: str) -> Iterable[tuple[RunRecord, dict[str, Any]]]:
    """The runs that recorded `key` in their facts, newest first."""
    store = records.trainer
    if store is None:
        return
    for run in _runs(records):
        facts = store.run_facts(run.run_id)
        if facts.get(key):
            yield run, facts


# --- the registry


def champion_serves(records: InstallationRecords) -> Finding:
    """A model version is the champion: inference serves it to every device."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    champions = [found for name in records.model_names() if (found := registry.champion(name)) is not None]
    if not champions:
        versions = registry.list()
        return Finding(False, f"{len(versions)} versions registered, none of them is a champion: nothing is served")
    served = "; ".join(
        f"{version.name} {version.version} is the champion (data version {version.data_version}, "
        f"registered by {version.created_by} {_when(version.created_at)})"
        for version in champions
    )
    return Finding(
        True,
        served,
        command="michi models list",
        ids={"champions": [{"model": version.name, "version": version.version} for version in champions]},
    )


def versioned_models(records: InstallationRecords) -> Finding:
    """Every registered version carries its code version, data version and artifact sha256."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    versions = registry.list()
    if not versions:
        return Finding(False, "the registry holds no model version")
    incomplete = [
        f"{version.name} {version.version}"
        for version in versions
        if not (version.code_version and version.data_version and version.artifact_sha256)
    ]
    newest = max(versions, key=lambda version: version.created_at)
    names = {version.name for version in versions}
    summary = (
        f"{len(versions)} versions of {len(names)} model{'s' if len(names) > 1 else ''}; newest {newest.name} "
        f"{newest.version}: code {newest.code_version}, data {newest.data_version}, "
        f"artifact sha256 {newest.artifact_sha256[:16]}"
    )
    ids = {"newest": {"model": newest.name, "version": newest.version}, "incomplete": incomplete}
    command = f"michi models show {newest.name} {newest.version}"
    if incomplete:
        return Finding(
            False, f"{summary}; without a code, data or artifact version: {_named(incomplete)}", command, ids
        )
    return Finding(True, f"{summary}; every version has all three", command, ids)


def _path_to_champion(changes: list[StageChange], version: str, promoted_at: int) -> list[StageChange]:
    return [change for change in changes if change.version == version and change.sequence <= promoted_at]


def staged_path(records: InstallationRecords) -> Finding:
    """A version reached champion through a stage beside production (shadow or canary), not straight from the
    bench."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    straight: list[str] = []
    for name in records.model_names():
        changes = registry.history(name)
        for promotion in reversed([change for change in changes if change.to_stage == "champion"]):
            path = _path_to_champion(changes, promotion.version, promotion.sequence)
            if any(change.to_stage in ("shadow", "canary") for change in path):
                walked = " -> ".join(
                    [str(path[0].from_stage)]
                    + [f"{change.to_stage} (revision {change.revision}, {change.actor})" for change in path]
                )
                return Finding(
                    True,
                    f"{name} {promotion.version}: {walked}",
                    command=f"michi models history {name}",
                    ids={"model": name, "version": promotion.version, "revision": promotion.revision},
                )
            straight.append(f"{name} {promotion.version} (revision {promotion.revision})")
    if straight:
        return Finding(False, f"every champion was promoted straight from candidate: {_named(straight)}")
    return Finding(False, "no version was ever promoted to champion")


def automatic_shadow(records: InstallationRecords) -> Finding:
    """A trained candidate was put beside the champion (shadow or canary) by the trainer or a policy, no person."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    found: list[StageChange] = []
    by_people = 0
    for name in records.model_names():
        for change in registry.history(name):
            if change.to_stage in ("shadow", "canary"):
                if _is_automatic(change.actor):
                    found.append(change)
                else:
                    by_people += 1
    if not found:
        return Finding(
            False,
            f"no version went to shadow or canary without a person ({by_people} such changes were made by people)",
        )
    last = max(found, key=lambda change: change.changed_at)
    return Finding(
        True,
        f"{last.model_name} {last.version} went {last.from_stage} -> {last.to_stage} by {last.actor} at plan "
        f"revision {last.revision} ({_when(last.changed_at)}): {last.reason}",
        command=f"michi models history {last.model_name}",
        ids={"model": last.model_name, "version": last.version, "revision": last.revision},
    )


def _policy_decisions(records: InstallationRecords) -> tuple[list[RolloutDecision], int]:
    """Every rollout decision a policy took, and how many decisions there are in all."""
    registry = records.registry
    if registry is None:
        return [], 0
    decisions = [decision for name in records.model_names() for decision in registry.rollout_history(name)]
    return [decision for decision in decisions if _is_policy(decision.actor)], len(decisions)


def _candidate_of(registry: ModelRegistry, decision: RolloutDecision) -> str | None:
    rollout = next(
        (found for found in registry.rollouts(decision.model_name) if found.rollout_id == decision.rollout_id), None
    )
    return rollout.candidate_version if rollout is not None else None


def policy_promotion(records: InstallationRecords) -> Finding:
    """The last promotion a policy decided (the rollout controller, after the rollout's analyses), no person."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    decisions, total = _policy_decisions(records)
    promotions = [decision for decision in decisions if decision.action == "promote"]
    if not promotions:
        return Finding(
            False,
            f"no promotion decided by a policy ({total} rollout decisions, {len(decisions)} by a policy; "
            "promotions were by people or none happened)",
        )
    last = max(promotions, key=lambda decision: decision.created_at)
    candidate = _candidate_of(registry, last)
    return Finding(
        True,
        f"{last.model_name} {candidate or '?'} promoted by {last.actor} at plan revision {last.revision} "
        f"(rollout {last.rollout_id}, {_when(last.created_at)}): {last.reason}",
        command=f"michi rollouts history {last.model_name}",
        ids={
            "model": last.model_name,
            "version": candidate,
            "revision": last.revision,
            "rollout_id": last.rollout_id,
            "actor": last.actor,
        },
    )


def rollout_analysis(records: InstallationRecords) -> Finding:
    """A rollout compared the candidate with the champion on live traffic and a policy decided on that evidence
    (a canary's analysis, an A/B test's sequential test, a bandit's allocation)."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    decisions, total = _policy_decisions(records)
    decided = [decision for decision in decisions if decision.action != "start" and decision.evidence]
    if not decided:
        return Finding(False, f"no rollout decision a policy took on an analysis ({total} rollout decisions in all)")
    last = max(decided, key=lambda decision: decision.created_at)
    strategy = next(
        (found.strategy for found in registry.rollouts(last.model_name) if found.rollout_id == last.rollout_id), "?"
    )
    return Finding(
        True,
        f"rollout {last.rollout_id} ({strategy}): {last.action} by {last.actor} at plan revision {last.revision} on "
        f"its evidence ({', '.join(sorted(last.evidence))}): {last.reason}",
        command=f"michi rollouts history {last.model_name} --json",
        ids={"rollout_id": last.rollout_id, "revision": last.revision, "strategy": strategy},
    )


# --- the trainer


def pipeline_run(records: InstallationRecords) -> Finding:
    """The last successful training run went through the workflow's steps, each recorded."""
    store = records.trainer
    if store is None:
        return _no_trainer(records)
    runs = _runs(records)
    succeeded = next((run for run in runs if run.status == "succeeded"), None)
    if succeeded is None:
        last = runs[0] if runs else None
        why = f"the last, {last.run_id}, {last.status}: {last.status_reason}" if last else "no run at all"
        return Finding(False, f"no training run succeeded ({why})")
    full = store.run(succeeded.run_id) or succeeded
    steps = ", ".join(f"{step.name} {step.status}" for step in full.steps)
    names = {step.name for step in full.steps}
    command = f"michi experiments show {succeeded.run_id}"
    ids = {"run_id": succeeded.run_id, "steps": [step.name for step in full.steps]}
    if not {"train", "evaluate"} <= names:
        return Finding(
            False, f"run {succeeded.run_id} recorded no train and evaluate steps ({steps or 'none'})", command, ids
        )
    return Finding(
        True, f"run {succeeded.run_id} ({succeeded.trigger}, {_when(succeeded.started_at)}): {steps}", command, ids
    )


def triggered_training(records: InstallationRecords) -> Finding:
    """A run started by new labels, the schedule or a retrain alert (not by a person) succeeded."""
    store = records.trainer
    if store is None:
        return _no_trainer(records)
    runs = _runs(records)
    by_trigger = Counter(run.trigger for run in runs)
    settings = f"triggers set: {records.triggers.describe()}"
    automatic = [run for run in runs if run.trigger in AUTOMATIC_TRIGGERS and run.status == "succeeded"]
    if not automatic:
        return Finding(
            False,
            f"no run started by new labels, the schedule or a retrain alert succeeded (runs by trigger: "
            f"{_counts(by_trigger)}); {settings}",
            ids={"runs_by_trigger": dict(by_trigger)},
        )
    last = automatic[0]
    registered = f", registered {last.registered_version} ({last.stage})" if last.registered_version else ""
    return Finding(
        True,
        f"run {last.run_id} started by {last.trigger} ({last.trigger_reason}) succeeded {_when(last.finished_at)}"
        f"{registered}; runs by trigger: {_counts(by_trigger)}; {settings}",
        command=f"michi experiments show {last.run_id}",
        ids={"run_id": last.run_id, "trigger": last.trigger, "runs_by_trigger": dict(by_trigger)},
    )


def gated_registration(records: InstallationRecords) -> Finding:
    """Every run that registered a version passed the evaluation gate, and the gate's decision is recorded."""
    store = records.trainer
    if store is None:
        return _no_trainer(records)
    runs = _runs(records)
    gated = [run for run in runs if run.gate]
    if not gated:
        return Finding(False, f"no run recorded a gate decision ({len(runs)} runs)")
    ungated = [run.run_id for run in runs if run.registered_version and not run.gate.get("passed")]
    refused = [run.run_id for run in runs if run.status == "refused"]
    last = gated[0]
    checks = last.gate.get("checks", [])
    failed = [check.get("name", "?") for check in checks if not check.get("passed") and not check.get("advisory")]
    summary = (
        f"run {last.run_id}: gate {'passed' if last.gate.get('passed') else 'refused'} against "
        f"{last.gate.get('compared_with', '?')} ({len(checks)} checks, {len(failed)} failed); "
        f"{len(refused)} candidates refused in the last {len(runs)} runs"
    )
    ids = {"run_id": last.run_id, "refused_runs": refused[:IDS_NAMED], "registered_without_passing": ungated}
    command = f"michi experiments show {last.run_id}"
    if ungated:
        return Finding(False, f"{summary}; registered without passing the gate: {_named(ungated)}", command, ids)
    return Finding(True, summary, command, ids)


def run_metadata(records: InstallationRecords) -> Finding:
    """The last successful run recorded its code version, data version, parameters and metrics."""
    store = records.trainer
    if store is None:
        return _no_trainer(records)
    run = next((found for found in _runs(records) if found.status == "succeeded"), None)
    if run is None:
        return Finding(False, "no training run succeeded: no run's metadata to show")
    missing = [
        name
        for name, value in (
            ("code version", run.code_version),
            ("data version", run.data_version),
            ("parameters", run.parameters),
            ("metrics", run.metrics),
        )
        if not value
    ]
    headline = ", ".join(f"{key} {run.metrics[key]:.3f}" for key in ("harsh_f1", "macro_f1") if key in run.metrics)
    summary = (
        f"run {run.run_id}: code {run.code_version or '-'}, data {run.data_version or '-'}, "
        f"{len(run.parameters)} parameters (seed {run.parameters.get('seed', '-')}), {len(run.metrics)} metrics"
        + (f" ({headline})" if headline else "")
    )
    ids = {"run_id": run.run_id, "code_version": run.code_version, "data_version": run.data_version}
    command = f"michi experiments show {run.run_id} --json"
    if missing:
        return Finding(False, f"{summary}; missing: {', '.join(missing)}", command, ids)
    return Finding(True, summary, command, ids)


def experiment_records(records: InstallationRecords) -> Finding:
    """Training runs leave experiment records (purpose, method, dataset, results, discussion, next action)."""
    store = records.trainer
    if store is None:
        return _no_trainer(records)
    runs = _runs(records)
    kept = [run for run in runs if run.experiment_markdown]
    if not kept:
        return Finding(False, f"no run left an experiment record ({len(runs)} runs)")
    last = kept[0]
    where = last.experiment_uri or "SQL only (the blob store write failed)"
    return Finding(
        True,
        f"{len(kept)} of the last {len(runs)} runs have an experiment record; the newest, run {last.run_id} "
        f"({last.status}), at {where}",
        command=f"michi experiments show {last.run_id}",
        ids={"run_id": last.run_id, "experiment_uri": last.experiment_uri},
    )


def training_converges(records: InstallationRecords) -> Finding:
    """The last run that trained: its loss per epoch (`facts.training.epoch_losses`) ends below where it began."""
    if records.trainer is None:
        return _no_trainer(records)
    for run, facts in _runs_with_facts(records, "training"):
        losses = [float(loss) for loss in facts["training"].get("epoch_losses") or []]
        if not losses:
            continue
        command = f"michi experiments show {run.run_id} --json"
        lowest = min(range(len(losses)), key=losses.__getitem__)
        cached = " (reused from the training cache)" if facts["training"].get("cached") else ""
        curve = (
            f"run {run.run_id}{cached}: loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} epochs "
            f"(lowest {losses[lowest]:.4f} at epoch {lowest + 1})"
        )
        ids = {"run_id": run.run_id, "epoch_losses": losses}
        if len(losses) < 2:
            return Finding(False, f"{curve}: one epoch is no curve", command, ids)
        if losses[-1] >= losses[0]:
            return Finding(False, f"{curve}: the loss did not go down", command, ids)
        return Finding(True, curve, command, ids)
    return Finding(False, "no recorded run trained a model (no loss curve in any run's facts)")


def export_parity(records: InstallationRecords) -> Finding:
    """The last exported model computes what the trained one does: ONNX Runtime against PyTorch on held-out
    windows, within the tolerance (`facts.export`)."""
    if records.trainer is None:
        return _no_trainer(records)
    for run, facts in _runs_with_facts(records, "export"):
        export = facts["export"]
        difference, tolerance = export.get("parity_max_abs_diff"), export.get("tolerance")
        if difference is None or tolerance is None:
            continue
        text = (
            f"run {run.run_id}: ONNX vs PyTorch max |difference| {float(difference):.3g} on "
            f"{export.get('parity_windows', '?')} held-out windows (tolerance {float(tolerance):.3g}), "
            f"ONNX sha256 {str(export.get('sha256', ''))[:16]}"
        )
        ids = {"run_id": run.run_id, "parity_max_abs_diff": difference, "tolerance": tolerance}
        return Finding(float(difference) <= float(tolerance), text, f"michi experiments show {run.run_id} --json", ids)
    return Finding(False, "no recorded run exported a model (no parity check in any run's facts)")


def _human_label_ids(store: TrainerStore, watermark: int) -> list[str]:
    from services.trainer.domain.labels import HUMAN_SOURCES

    return [label.event_id for label in store.labels(up_to=watermark) if label.source in HUMAN_SOURCES]


def served_lineage(records: InstallationRecords) -> Finding:
    """The served model back to its data: the champion's data version, the run that trained it (its code version
    and parameters) and the ids of the human labels its dataset could include (the run's label watermark)."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    champion: ModelVersion | None = next(
        (found for name in records.model_names() if (found := registry.champion(name)) is not None), None
    )
    if champion is None:
        return Finding(False, "no champion is served: no lineage to follow")
    head = f"champion {champion.name} {champion.version} <- data {champion.data_version}"
    ids: dict[str, Any] = {
        "model": champion.name,
        "version": champion.version,
        "data_version": champion.data_version,
        "code_version": champion.code_version,
    }
    command = f"michi models show {champion.name} {champion.version}"
    run_id = champion.parameters.get("run_id")
    if not run_id:
        if champion.data_version.startswith("rules-"):
            # A rule set (physics-3): its data version names its thresholds and the preprocessing; it learned nothing.
            return Finding(
                True,
                f"{head}: a rule set, its data version naming its thresholds and preprocessing (code "
                f"{champion.code_version}); it was trained on no labels",
                command,
                ids,
            )
        return Finding(False, f"{head}: no run id in its parameters, the lineage stops there", command, ids)
    ids["run_id"] = run_id
    store = records.trainer
    run = store.run(str(run_id)) if store is not None else None
    if run is None or store is None:
        return Finding(False, f"{head} <- run {run_id}, which the trainer's records do not hold", command, ids)
    labels = _human_label_ids(store, run.label_watermark)
    ids.update(label_watermark=run.label_watermark, label_ids=labels[:20], labels=len(labels))
    same = "" if run.data_version == champion.data_version else f" (the run recorded data {run.data_version}!)"
    text = f"{head} <- run {run.run_id} ({run.trigger}, code {run.code_version}){same} <- " + (
        f"{len(labels)} human labels up to label row {run.label_watermark}: {_named(labels)}"
        if labels
        else "no human label (simulator ground truth and labelled recordings only)"
    )
    return Finding(not same, text, f"michi experiments show {run.run_id} --json", ids)


# --- the monitor and the loop back to training


def _retrain_run(store: TrainerStore | None, retrain_event_id: str) -> tuple[bool, str | None]:
    """Whether the trainer received the retrain request, and the run it started."""
    alert = store.alert(retrain_event_id) if store is not None else None
    return (alert is not None, alert.run_id if alert is not None else None)


def retrain_from_production(records: InstallationRecords) -> Finding:
    """Production figures asked for a retrain and the trainer ran it: the last drift episode (or concept-drift
    change) whose retrain request started a training run."""
    monitor = records.monitor
    if monitor is None:
        return _no_monitor(records)
    asked: list[tuple[datetime, str, str, dict[str, Any]]] = []
    episodes = monitor.episodes(limit=EPISODES_READ)
    for episode in episodes:
        if episode.retrain_event_id:
            text = (
                f"drift alert {episode.firing_event_id} (episode {episode.episode_id}, {episode.model_name} "
                f"{episode.model_version}, cohort {episode.cohort}, {len(episode.windows)} windows, features "
                f"{', '.join(episode.features) or '-'})"
            )
            ids = {"alert_id": episode.firing_event_id, "episode": episode.episode_id}
            asked.append((episode.opened_at, episode.retrain_event_id, text, ids))
    changes = monitor.concept_drifts(limit=EPISODES_READ)
    for change in changes:
        if change.retrain_event_id:
            text = (
                f"concept-drift alert {change.event_id} ({change.model_name} {change.model_version}, error rate "
                f"{change.error_rate_before:.3f} -> {change.error_rate_after:.3f})"
            )
            asked.append((change.detected_at, change.retrain_event_id, text, {"alert_id": change.event_id}))
    if not asked:
        return Finding(
            False,
            f"no drift or concept drift asked for a retrain ({len(episodes)} drift episodes, {len(changes)} "
            "concept-drift changes recorded)",
        )
    _, retrain_id, text, ids = max(asked, key=lambda item: item[0])
    ids = {**ids, "retrain_id": retrain_id}
    received, run_id = _retrain_run(records.trainer, retrain_id)
    if not received:
        return Finding(
            False, f"{text} asked for retrain {retrain_id}, which the trainer has not received", "michi alerts", ids
        )
    if run_id is None:
        return Finding(
            False, f"{text} asked for retrain {retrain_id}: received, no run started yet", "michi alerts", ids
        )
    run = records.trainer.run(run_id) if records.trainer is not None else None
    outcome = "not found" if run is None else run.status
    if run is not None and run.registered_version:
        outcome += f", registered {run.registered_version} ({run.stage})"
    return Finding(
        True,
        f"{text} asked for retrain {retrain_id}, which started run {run_id} ({outcome})",
        "michi alerts --kind retrain",
        {**ids, "run_id": run_id},
    )


def closed_loop(records: InstallationRecords) -> Finding:
    """A model retrained without a person (new labels, schedule, a production alert) was promoted by a policy."""
    registry = records.registry
    if registry is None:
        return _no_registry(records)
    decisions, _ = _policy_decisions(records)
    promotions = sorted(
        (decision for decision in decisions if decision.action == "promote"),
        key=lambda decision: decision.created_at,
        reverse=True,
    )
    if not promotions:
        return Finding(False, "no promotion decided by a policy, so no retrained model was promoted by one")
    seen: list[str] = []
    for decision in promotions:
        candidate = _candidate_of(registry, decision)
        if candidate is None:
            continue
        version = registry.get(decision.model_name, candidate)
        trigger = str(version.parameters.get("trigger", ""))
        run_id = version.parameters.get("run_id")
        if trigger in AUTOMATIC_TRIGGERS:
            return Finding(
                True,
                f"{version.name} {version.version}, trained by run {run_id} on trigger {trigger}, promoted by "
                f"{decision.actor} at plan revision {decision.revision} ({_when(decision.created_at)})",
                f"michi rollouts history {version.name}",
                {"model": version.name, "version": version.version, "run_id": run_id, "revision": decision.revision},
            )
        seen.append(f"{version.name} {version.version} ({trigger or 'not trained by a run'})")
    return Finding(
        False,
        f"the policy promoted only models no automatic retrain produced: {_named(seen)}",
        f"michi rollouts history {promotions[0].model_name}",
    )


def monitored_windows(records: InstallationRecords) -> Finding:
    """The monitor judged windows of live traffic against each served version's reference."""
    monitor = records.monitor
    if monitor is None:
        return _no_monitor(records)
    series = monitor.window_series(limit=50)
    if not series:
        return Finding(False, "the monitor closed no window of live traffic yet")
    windows = sum(item.windows for item in series)
    latest = series[0]
    episodes = monitor.episodes(limit=EPISODES_READ)
    open_episodes = sum(1 for episode in episodes if episode.status == "open")
    return Finding(
        True,
        f"{windows} closed windows over {len(series)} (model, version, cohort) series; latest {latest.model_name} "
        f"{latest.model_version} cohort {latest.cohort} at {_when(_utc(latest.last_closed_at))}; {len(episodes)} drift "
        f"episodes ({open_episodes} open)",
        "michi drift",
        {"windows": windows, "drift_episodes": len(episodes)},
    )


# --- labels, the warehouse and traces


def _labels_by_reason(annotation: AnnotationStore) -> Counter[str]:
    """Windows labelled in annotation per reason they were asked for, by the reason's name (`random-qa`): a
    window asked for under two reasons counts under each."""
    from michi.contracts.v1 import labels_pb2

    counts: Counter[str] = Counter()
    for reason, count in annotation.labeled_by_reason().items():
        name = labels_pb2.LabelReason.Name(reason) if reason in labels_pb2.LabelReason.values() else str(reason)
        counts[name.removeprefix("LABEL_REASON_").lower().replace("_", "-")] += int(count)
    return counts


def production_labels(records: InstallationRecords) -> Finding:
    """People label windows of production traffic (random QA, uncertain, drift samples), and the trainer holds
    their labels for the next run."""
    annotation, trainer = records.annotation, records.trainer
    if annotation is None and trainer is None:
        return Finding(False, records.missing("annotation") + " (no window was labelled)")
    parts: list[str] = []
    ids: dict[str, Any] = {}
    labelled = 0
    if annotation is not None:
        from services.annotation.domain.tasks import TaskStatus

        statuses = annotation.status_counts()
        labelled = statuses.get(TaskStatus.LABELED.value, 0)
        by_reason = _labels_by_reason(annotation)
        ids["labels_by_reason"] = dict(by_reason)
        parts.append(
            f"{labelled} windows labelled in annotation ({statuses.get(TaskStatus.OPEN.value, 0)} open); by reason: "
            f"{_counts(by_reason)}"
        )
    human = 0
    if trainer is not None:
        human = trainer.human_labels_above(0)
        ids["trainer_human_labels"] = human
        parts.append(f"the trainer holds {human} human labels")
    return Finding(labelled > 0 or human > 0, "; ".join(parts), "michi train --dry-run", ids)


def warehouse_lineage(records: InstallationRecords) -> Finding:
    """Predictions are kept in the warehouse with when, who, where, what, and the model and data version (4w2v)."""
    from michi.warehouse import query

    rows = query(
        "SELECT count(*) AS predictions,"
        " count(*) FILTER (WHERE coalesce(model_version, '') <> '' AND coalesce(data_version, '') <> '') AS versioned,"
        " count(*) FILTER (WHERE latitude IS NOT NULL) AS located,"
        " count(DISTINCT device_id) AS devices, max(occurred_at) AS latest FROM predictions",
        records.blob_url,
    )
    figures = rows[0] if rows else {"predictions": 0}
    predictions = int(figures.get("predictions") or 0)
    command = 'michi warehouse query "SELECT model_version, data_version, count(*) FROM predictions GROUP BY 1, 2"'
    if predictions == 0:
        return Finding(False, f"no prediction in the warehouse ({records.blob_url})", command)
    versioned = int(figures.get("versioned") or 0)
    text = (
        f"{predictions} predictions from {figures.get('devices')} devices, {versioned} with model and data version, "
        f"{figures.get('located')} with a GPS position; latest {figures.get('latest')}"
    )
    ids = {"predictions": predictions, "versioned": versioned}
    return Finding(versioned == predictions, text, command, ids)


def traces_recorded(records: InstallationRecords) -> Finding:
    """Services record traces of what they did (the span files `michi trace` reads)."""
    folder = records.home / "traces"
    files = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    written = [path for path in files if path.stat().st_size > 0]
    if not written:
        return Finding(
            False,
            f"no span file in {folder} (with OTEL_EXPORTER_OTLP_ENDPOINT set, traces go to the collector: look there)",
        )
    size = sum(path.stat().st_size for path in written)
    return Finding(
        True,
        f"span files of {len(written)} services in {folder} ({size / 1e6:.1f} MB): "
        + ", ".join(path.stem for path in written),
        "michi trace UPLOAD_ID",
        {"services": [path.stem for path in written]},
    )
