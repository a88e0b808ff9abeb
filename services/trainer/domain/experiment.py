"""Experiment records: purpose, background, method, dataset, results, discussion, next action.

Every run (succeeded, refused by the gate, failed, or a bootstrap) leaves one. The sections are
written from the run's facts (`RunFacts`, gathered by the workflow as it goes) and poured into an
editable Markdown template (`services/trainer/templates/experiment.md`, `$name` placeholders) —
so the record says why the run happened, what it compared against, what it found and what a
person should do next, without anyone typing it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from string import Template
from typing import Any

from services.trainer.domain.evaluation import METRIC_DIRECTIONS

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "templates" / "experiment.md"
SECTIONS = ("purpose", "background", "method", "dataset", "results", "discussion", "next_action")
HEADLINE = (
    "harsh_recall",
    "harsh_precision",
    "harsh_f1",
    "macro_f1",
    "accuracy",
    "false_alerts_per_1000_km",
    "missed_harsh_per_1000_km",
)


@dataclass
class RunFacts:
    run_id: str
    model_name: str
    trigger: str
    trigger_reason: str
    started_at: datetime
    code_version: str
    parameters: dict[str, Any]
    finished_at: datetime | None = None
    status: str = "running"
    status_reason: str = ""
    new_labels: int = 0
    data: dict[str, Any] | None = None
    champion: dict[str, Any] | None = None
    candidate_evaluation: dict[str, Any] | None = None
    champion_evaluation: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    gate_policy: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    # The real recordings: the physics baseline's section (the candidate's and champion's are in their
    # evaluations, under "real_data"), where the recordings came from, and the files skipped.
    real_data: dict[str, Any] | None = None
    registered_version: str | None = None
    stage: str | None = None
    artifacts: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        facts = asdict(self)
        facts["started_at"] = self.started_at.isoformat()
        facts["finished_at"] = self.finished_at.isoformat() if self.finished_at else None
        return facts


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _purpose(facts: RunFacts) -> str:
    what = {
        "bootstrap": "Train a first learned champion from simulator ground truth, because the registry has no "
        f"champion for `{facts.model_name}`: a fresh platform should serve a learned model, not the hand-set baseline.",
        "labels": "Retrain with the labels people added since the last run, so the model learns from the cases "
        "it was unsure about or got wrong.",
        "schedule": "Scheduled retrain: keep the model current with the data and labels gathered since the last run.",
        "alert": "Retrain because the monitor asked for it (drift or degraded accuracy).",
        "manual": "Retrain requested by a person.",
    }.get(facts.trigger, f"Run triggered by {facts.trigger}.")
    return f"{what}\n\nTrigger: {facts.trigger} — {facts.trigger_reason or 'no reason given'}."


def _background(facts: RunFacts) -> str:
    lines = []
    champion = facts.champion
    if champion is None:
        lines.append("No champion was available to compare with.")
    else:
        lines.append(
            f"Champion at the start: **{champion.get('label')}** (data version `{champion.get('data_version') or '-'}`)."
        )
        metrics = champion.get("metrics") or {}
        if metrics:
            shown = ", ".join(f"{key} {_number(metrics[key])}" for key in HEADLINE if key in metrics)
            lines.append(f"Its registered metrics: {shown}.")
    lines.append(f"New human labels since the previous run: {facts.new_labels}.")
    return "\n".join(f"- {line}" for line in lines)


def _method(facts: RunFacts) -> str:
    parameters = facts.parameters
    return "\n".join(
        [
            "- Model: 1D-CNN over the 6 signal channels (25 Hz, 2 s) joined with the 23 summary features; "
            "normalisation baked into the graph; softmax over normal / harsh braking / harsh acceleration / "
            "harsh cornering / confounder.",
            f"- Code version `{facts.code_version}`; parameters: "
            + ", ".join(f"{key}={_number(value)}" for key, value in sorted(parameters.items())),
            "- Deterministic: fixed seeds, `torch.use_deterministic_algorithms(True)`, "
            f"{parameters.get('threads', '?')} pinned thread(s); ONNX opset 17 via the TorchScript exporter.",
            f"- Split by {parameters.get('split_by', 'trip')} hash, {parameters.get('test_percent', '?')} % held out; "
            "the champion is scored by ONNX Runtime on the same test windows.",
            "- Gate policy: `" + json.dumps(facts.gate_policy or {}, sort_keys=True) + "`",
        ]
    )


def _dataset(facts: RunFacts) -> str:
    data = facts.data
    if not data:
        return "No dataset was built (the run stopped earlier)."
    lines = [
        f"- Data version `{data.get('data_version')}` (preprocessing `{str(data.get('preprocessing_version'))[:16]}`)",
        f"- {data.get('windows')} windows: {data.get('train_windows')} train / {data.get('test_windows')} test "
        f"({data.get('train_groups')} / {data.get('test_groups')} {data.get('split_by')}s, {data.get('devices')} devices)",
        f"- Label sources: {json.dumps(data.get('sources', {}), sort_keys=True)}",
        f"- Train classes: {json.dumps(data.get('train_classes', {}))}",
        f"- Test classes: {json.dumps(data.get('test_classes', {}))}",
    ]
    if data.get("unresolved_labels"):
        lines.append(f"- Labels that could not be rebuilt into windows: {json.dumps(data['unresolved_labels'])}")
    if data.get("simulation"):
        lines.append(f"- Simulated fleets: `{json.dumps(data['simulation'], sort_keys=True)}`")
    real_training = data.get("real_training") or {}
    if real_training:
        lines.append(
            f"- Labelled real recordings: {real_training.get('recordings', 0)} "
            f"({real_training.get('windows', 0)} windows, version `{real_training.get('version') or '-'}`)"
            + (
                f"; skipped: {json.dumps(real_training['skipped'], sort_keys=True)}"
                if real_training.get("skipped")
                else ""
            )
        )
    return "\n".join(lines)


REAL_HEADLINE = (
    "real_false_alerts_per_hour",
    "real_false_alerts",
    "real_normal_hours",
    "real_aggressive_recall",
    "real_normal_labels_alerted",
)


def _real_results(facts: RunFacts) -> list[str]:
    """The real-data section: candidate, champion and physics baseline on the same real drives."""
    candidate = (facts.candidate_evaluation or {}).get("real_data")
    if not candidate:
        return []
    champion = (facts.champion_evaluation or {}).get("real_data") or {}
    real = facts.real_data or {}
    physics = real.get("physics") or {}
    reference = real.get("reference", "physics baseline")
    champion_label = (facts.champion or {}).get("label", "champion")
    metrics = candidate.get("metrics") or {}
    if not metrics.get("real_recordings"):
        return ["", "Real recordings: none were evaluated."]
    lines = [
        "",
        f"Real recordings ({metrics['real_recordings']} recording variants, "
        f"{_number(float(metrics['real_hours']) * 60.0)} minutes; detections after the serving rule):",
        "",
        f"| metric | candidate | {champion_label} | {reference} |",
        "|---|---:|---:|---:|",
    ]
    for key in REAL_HEADLINE:
        lines.append(
            f"| {key} | {_number(metrics.get(key))} | {_number((champion.get('metrics') or {}).get(key, '-'))} | "
            f"{_number((physics.get('metrics') or {}).get(key, '-'))} |"
        )
    champion_rows = {row["recording"]: row for row in champion.get("recordings", [])}
    physics_rows = {row["recording"]: row for row in physics.get("recordings", [])}
    lines += [
        "",
        f"| recording | minutes | labels | false alerts: candidate / {champion_label} / {reference} | "
        "aggressive found | normal labels alerted | calibration | yaw error ° |",
        "|---|---:|---|---|---:|---:|---|---:|",
    ]
    for row in candidate.get("recordings", []):
        key = row["recording"]
        alerts = " / ".join(
            str(source.get(key, {}).get("false_alerts", "-")) for source in ({key: row}, champion_rows, physics_rows)
        )
        error = row.get("calibration_error_deg")
        lines.append(
            f"| {key} | {_number(float(row['hours']) * 60.0)} | {row.get('label_source', '-')} | {alerts} | "
            f"{len(row['aggressive_found'])}/{row['aggressive_labels']} | "
            f"{row['normal_labels_alerted']}/{row['normal_labels']} | {row['calibration_state']} | "
            f"{_number(error) if error is not None else '-'} |"
        )
    if real.get("skipped"):
        lines.append(f"\nRecordings skipped: {json.dumps(real['skipped'], sort_keys=True)}")
    return lines


def _results(facts: RunFacts) -> str:
    candidate = (facts.candidate_evaluation or {}).get("metrics")
    if not candidate:
        return "No evaluation (the run stopped earlier)."
    champion = (facts.champion_evaluation or {}).get("metrics") or {}
    champion_label = (facts.champion or {}).get("label", "champion")
    lines = [f"| metric | candidate | {champion_label} (same windows) | better is |", "|---|---:|---:|---|"]
    for key in (*HEADLINE, "kilometres", "alerts", "false_alerts", "harsh_events", "missed_harsh_events"):
        if key in candidate:
            direction = {1: "higher", -1: "lower"}.get(METRIC_DIRECTIONS.get(key, 0), "")
            lines.append(f"| {key} | {_number(candidate[key])} | {_number(champion.get(key, '-'))} | {direction} |")
    per_class = (facts.candidate_evaluation or {}).get("per_class", {})
    if per_class:
        lines += ["", "| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
        for name, figures in per_class.items():
            lines.append(
                f"| {name} | {_number(figures['precision'])} | {_number(figures['recall'])} | "
                f"{_number(figures['f1'])} | {figures['support']} |"
            )
    confusion = (facts.candidate_evaluation or {}).get("confusion")
    if confusion:
        classes = confusion["classes"]
        lines += ["", "Confusion (rows: label, columns: decided):", "", "| | " + " | ".join(classes) + " |"]
        lines.append("|---|" + "---:|" * len(classes))
        for name, row in zip(classes, confusion["matrix"], strict=True):
            lines.append(f"| {name} | " + " | ".join(str(value) for value in row) + " |")
    slices = (facts.candidate_evaluation or {}).get("slices", {})
    if slices:
        lines += [
            "",
            "| slice | windows | harsh events | harsh recall | harsh precision | false alerts / 1000 km |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for slice_name, groups in slices.items():
            for value, figures in groups.items():
                lines.append(
                    f"| {slice_name}={value} | {int(figures['windows'])} | {int(figures['harsh_events'])} | "
                    f"{_number(figures['harsh_recall'])} | "
                    f"{_number(figures['harsh_precision'])} | {_number(figures['false_alerts_per_1000_km'])} |"
                )
    lines += _real_results(facts)
    if facts.export:
        lines += [
            "",
            f"ONNX `{facts.export.get('sha256')}`; parity with PyTorch: max |diff| "
            f"{_number(facts.export.get('parity_max_abs_diff'))} (tolerance {_number(facts.export.get('tolerance'))}).",
        ]
    if facts.training:
        losses = facts.training.get("epoch_losses") or []
        lines.append(
            f"Training: {_number(facts.training.get('seconds', 0.0))} s"
            + (" (reused from the artifact cache)" if facts.training.get("cached") else "")
            + (f", loss {losses[0]:.4f} → {losses[-1]:.4f} over {len(losses)} epochs" if losses else "")
            + "."
        )
    return "\n".join(lines)


def _discussion(facts: RunFacts) -> str:
    lines = []
    if facts.status == "failed":
        lines.append(f"The run failed: {facts.status_reason}. The champion was left untouched.")
    gate = facts.gate
    if gate is not None:
        verdict = "passed" if gate.get("passed") else "refused the candidate"
        compared = gate.get("compared_with") or "no champion"
        lines.append(f"The gate {verdict} (compared with {compared}).")
        for check in gate.get("checks", []):
            mark = (
                "✓" if check["passed"] else ("✗ (advisory: recorded, not refusing)" if check.get("advisory") else "✗")
            )
            compared = check.get("compared_with") or "champion"
            reference = f", {compared} {_number(check['champion'])}" if check.get("champion") is not None else ""
            lines.append(
                f"- {mark} {check['metric']} ({check['rule']}): {_number(check['candidate'])}, "
                f"bound {_number(check['bound'])}{reference}"
            )
        real_checks = [check for check in gate.get("checks", []) if check.get("compared_with")]
        if (facts.candidate_evaluation or {}).get("real_data") and not real_checks:
            lines.append("- No real-data check ran (no real recording, or no policy for it).")
    candidate = (facts.candidate_evaluation or {}).get("metrics") or {}
    champion = (facts.champion_evaluation or {}).get("metrics") or {}
    if candidate and champion:
        deltas = []
        for key in HEADLINE:
            if key in candidate and key in champion:
                change = (float(candidate[key]) - float(champion[key])) * METRIC_DIRECTIONS[key]
                deltas.append((change, key))
        if deltas:
            best, worst = max(deltas), min(deltas)
            gain = (
                f"Largest gain over the champion: {best[1]} ({best[0]:+.4g})"
                if best[0] > 0
                else "No gain over the champion"
            )
            loss = f"largest loss: {worst[1]} ({worst[0]:+.4g})" if worst[0] < 0 else "no loss on any headline metric"
            lines.append(f"{gain}; {loss}.")
    slices = (facts.candidate_evaluation or {}).get("slices", {})
    weakest: tuple[float, str] | None = None
    for slice_name, groups in slices.items():
        for value, figures in groups.items():
            if figures.get("harsh_events", 0) >= 3:
                entry = (float(figures["harsh_recall"]), f"{slice_name}={value}")
                weakest = entry if weakest is None or entry < weakest else weakest
    if weakest is not None and weakest[0] < 1.0:
        lines.append(f"Weakest slice by harsh recall: {weakest[1]} ({weakest[0]:.3g}).")
    if facts.data and facts.data.get("test_windows", 0) < 200:
        lines.append("The test set is small: differences of a few windows move these figures.")
    return "\n".join(lines) if lines else "Nothing to discuss: the run stopped before an evaluation."


def _next_action(facts: RunFacts) -> str:
    name, version = facts.model_name, facts.registered_version
    if facts.status == "failed":
        return f"Fix the failing step ({facts.status_reason}) and run `michi train` again; `michi experiments show {facts.run_id}` has the step log."
    if facts.status == "refused":
        return (
            "Look at the failed gate checks above: gather labels for the weak classes or slices (annotation queues), "
            "or adjust the parameters, then run `michi train --dry-run` to check the dataset and `michi train` again."
        )
    if facts.status == "dry-run":
        return "Nothing was trained; run `michi train` to train with this dataset and these parameters."
    if facts.stage == "champion":
        return f"{name} {version} serves now. Watch the monitor's drift and accuracy alerts; roll back with `michi models rollback {name} --reason ...`."
    if facts.stage == "shadow":
        return (
            f"{name} {version} runs in shadow next to the champion. Compare its live predictions and the annotators' "
            f"disagreement labels; promote with `michi models promote {name} {version} --reason ...` when it holds up."
        )
    return f"Decide whether to put {name} {version} in shadow (`michi models` commands)."


def compose_sections(facts: RunFacts) -> dict[str, str]:
    return {
        "purpose": _purpose(facts),
        "background": _background(facts),
        "method": _method(facts),
        "dataset": _dataset(facts),
        "results": _results(facts),
        "discussion": _discussion(facts),
        "next_action": _next_action(facts),
    }


def render_markdown(facts: RunFacts, sections: dict[str, str], template: str | None = None) -> str:
    """The record as Markdown, from `template` (default: the template file)."""
    text = template if template is not None else TEMPLATE_PATH.read_text(encoding="utf-8")
    titles = {
        "bootstrap": "bootstrap a learned champion",
        "labels": "retrain on new labels",
        "schedule": "scheduled retrain",
        "alert": "retrain on alert",
        "manual": "manual retrain",
    }
    steps = "\n".join(
        f"- {step['name']}: {step['status']}"
        + (f" in {step['seconds']:.2f} s" if step.get("seconds") is not None else "")
        + (f" — {step['error']}" if step.get("error") else "")
        for step in facts.steps
    )
    model = f"{facts.model_name} {facts.registered_version} ({facts.stage})" if facts.registered_version else "-"
    values = {
        "run_id": facts.run_id,
        "title": titles.get(facts.trigger, facts.trigger),
        "status": facts.status,
        "trigger": facts.trigger,
        "started_at": facts.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "finished_at": facts.finished_at.strftime("%Y-%m-%d %H:%M:%S UTC") if facts.finished_at else "-",
        "model": model,
        "steps": steps or "-",
        **sections,
    }
    return Template(text).safe_substitute(values)
