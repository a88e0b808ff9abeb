"""`michi models list|show|history|diff|promote|rollback|republish|reprofile` and
`michi rollouts start|set-weight|status|pause|resume|promote|rollback|abort|history`: the registry from the
command line.

Reading needs only the database; every command that changes a plan builds an `EventProducer` from the
settings to publish the new rollout plan. The actor recorded in the audit trail is `$USER`.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from michi.settings import MichiSettings, load_settings

models_app = typer.Typer(help="Model registry: versions, stages and rollout plans.", no_args_is_help=True)
rollouts_app = typer.Typer(
    help="Rollouts: a candidate served as a canary, an A/B treatment or a bandit arm to a share of devices, audited.",
    no_args_is_help=True,
)
ROLLOUT_STRATEGIES = ("canary", "ab", "bandit")


def _actor() -> str:
    return os.environ.get("USER") or getpass.getuser()


def _fail(message: str) -> None:
    typer.echo(f"michi: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _registry(*, publishing: bool, settings: MichiSettings | None = None) -> Iterator[Any]:
    """The registry on `settings` (loaded from the environment when not given), publishing plans if asked."""
    from michi.bus.producer import EventProducer
    from michi.registry import ModelRegistry, PlanNotPublished, StageRuleViolation, UnknownModelVersion
    from michi.registry.rollout_status import RolloutRefused

    settings = settings if settings is not None else load_settings(MichiSettings)
    producer = (
        EventProducer(settings.kafka_connection(), settings.topic_prefix, client_id="michi-models")
        if publishing
        else None
    )
    registry = ModelRegistry.from_url(settings.resolved_database_url(), producer)
    try:
        yield registry
    except (StageRuleViolation, UnknownModelVersion, PlanNotPublished, RolloutRefused) as error:
        _fail(str(error))
    finally:
        registry.close()
        if producer is not None:
            producer.close(timeout=10)


def _plan_summary(plan: Any) -> str:
    """`<model> revision <n>: <version> (<arm>[ <share>]), ...`: each arm's variant, and its share when it is not
    the whole fleet (a canary's, a treatment's, a shadow's covering part of the devices)."""
    from michi.contracts.v1 import inference_pb2

    def arm(entry: Any) -> str:
        variant = inference_pb2.Variant.Name(entry.variant).removeprefix("VARIANT_").lower()
        whole = entry.traffic_share == 0 if variant == "shadow" else entry.traffic_share >= 1
        share = "" if whole else f" {entry.traffic_share:.0%}"
        return f"{entry.model.version} ({variant}{share})"

    arms = ", ".join(arm(entry) for entry in plan.arms)
    rollout = f" [rollout {plan.rollout_id}]" if plan.rollout_id else ""
    return f"{plan.model_name} revision {plan.revision}{rollout}: {arms or 'no champion'}"


@models_app.command("list")
def list_models(name: str | None = typer.Option(None, "--name", help="only this model")) -> None:
    """Every registered version with its stage, data version and metrics."""
    with _registry(publishing=False) as registry:
        for version in registry.list(name):
            metrics = json.dumps(version.metrics, sort_keys=True)
            typer.echo(
                f"{version.name:<24} {version.version:>4}  {version.stage:<9}  {version.data_version:<20} "
                f"{version.code_version[:12]:<12}  {metrics}"
            )


@models_app.command("show")
def show_model(name: str, version: str) -> None:
    """One version with its full lineage, as JSON."""
    with _registry(publishing=False) as registry:
        found = registry.get(name, version)
        shown = {key: getattr(found, key) for key in found.__dataclass_fields__}
        shown["created_at"] = found.created_at.isoformat()
        typer.echo(json.dumps(shown, indent=2, sort_keys=True))


@models_app.command("history")
def model_history(
    name: str, as_json: bool = typer.Option(False, "--json", help="one JSON object per stage change")
) -> None:
    """Every stage change of NAME, newest first: plan revision, time, version, from -> to, kind, actor, reason (the
    changes of one decision share its revision: a promotion's two)."""
    with _registry(publishing=False) as registry:
        if not registry.list(name):
            _fail(f"no model named {name}")
        changes = list(reversed(registry.history(name)))
    for change in changes:
        if as_json:
            shown = {key: getattr(change, key) for key in change.__dataclass_fields__}
            shown.update(
                from_stage=str(change.from_stage),
                to_stage=str(change.to_stage),
                kind=str(change.kind),
                changed_at=change.changed_at.isoformat(),
            )
            typer.echo(json.dumps(shown, sort_keys=True))
        else:
            typer.echo(
                f"{change.revision:>5}  {change.changed_at:%Y-%m-%d %H:%M:%S}  {change.version:>10}  "
                f"{change.from_stage + ' -> ' + change.to_stage:<22}  {change.kind:<11}  {change.actor:<20}  "
                f"{change.reason}"
            )


@models_app.command("diff")
def diff_models(name: str, left: str, right: str) -> None:
    """Two versions side by side: parameters, metrics, data and code versions."""
    with _registry(publishing=False) as registry:
        difference = registry.diff(name, left, right)
        typer.echo(f"{'':<28} {left:>16} {right:>16}")
        for label, left_value, right_value in (
            ("data version", difference.left.data_version, difference.right.data_version),
            ("code version", difference.left.code_version, difference.right.code_version),
        ):
            marker = "*" if left_value != right_value else " "
            typer.echo(f"{marker} {label:<26} {left_value:>16} {right_value:>16}")
        for section, changes in (("parameter", difference.parameters), ("metric", difference.metrics)):
            for change in changes:
                marker = "*" if change.changed else " "
                delta = f"  ({change.delta:+.4g})" if change.delta is not None and change.changed else ""
                typer.echo(f"{marker} {section + ' ' + change.key:<26} {change.left!s:>16} {change.right!s:>16}{delta}")


@models_app.command("promote")
def promote_model(name: str, version: str, reason: str = typer.Option(..., "--reason", help="why")) -> None:
    """Make VERSION the champion (the previous champion is retired) and publish the rollout plan."""
    with _registry(publishing=True) as registry:
        typer.echo(_plan_summary(registry.promote(name, version, actor=_actor(), reason=reason)))


@models_app.command("rollback")
def rollback_model(name: str, reason: str = typer.Option(..., "--reason", help="why")) -> None:
    """Retire the champion, restore the previous one, and publish the rollout plan."""
    with _registry(publishing=True) as registry:
        typer.echo(_plan_summary(registry.rollback(name, actor=_actor(), reason=reason)))


@models_app.command("republish")
def republish_model(name: str) -> None:
    """Send the current rollout plan again (after a stage change whose publishing failed)."""
    with _registry(publishing=True) as registry:
        typer.echo(_plan_summary(registry.republish_plan(name)))


@models_app.command("reprofile")
def reprofile_model(
    name: str,
    version: str,
    reason: str = typer.Option(..., "--reason", help="why this period is the new normal"),
    since: str = typer.Option(
        "24h",
        "--since",
        help="start: an ISO 8601 time (UTC unless it says), or a duration before --until (90m, 24h, 7d)",
    ),
    until: str = typer.Option("now", "--until", help="end: an ISO 8601 time, or now"),
    min_windows: int = typer.Option(20_000, "--min-windows", help="refuse fewer calibrated windows than this"),
    min_devices: int = typer.Option(5, "--min-devices", help="refuse windows from fewer devices than this"),
    dry_run: bool = typer.Option(False, "--dry-run", help="say what the profile would hold, write nothing"),
) -> None:
    """Make a period of the fleet's own traffic (its champion predictions in the warehouse) VERSION's reference
    profile; the profile it replaces is kept beside it. The monitor judges the version's next windows against it."""
    from datetime import UTC, datetime

    from services.trainer.reprofile import ReprofileRefused, moment, reprofile

    settings = load_settings(MichiSettings)
    with _registry(publishing=False, settings=settings) as registry:
        registry.get(name, version)  # an unknown version fails here, with the registry's own message
    now = datetime.now(UTC)
    try:
        end = moment(until, now=now)
        start = moment(since, now=now, before=end)
        result = reprofile(
            settings.resolved_blob_url(),
            name,
            version,
            since=start,
            until=end,
            actor=_actor(),
            reason=reason,
            min_windows=min_windows,
            min_devices=min_devices,
            dry_run=dry_run,
            now=now,
        )
    except ReprofileRefused as error:
        _fail(str(error))
        return
    typer.echo(result.describe())


# --- michi rollouts


def _rollout_document(path: Path) -> dict[str, Any]:
    """The rollout document in `path`, checked by `parse_rollout_spec` (every problem printed with its path)."""
    from michi.rollouts.steps import RolloutSpecError, parse_rollout_spec

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        _fail(f"cannot read the rollout document {path}: {error.strerror or error}")
    try:
        parse_rollout_spec(text)
    except RolloutSpecError as error:
        typer.echo(f"michi: invalid rollout document {path}:", err=True)
        for problem in error.problems:
            typer.echo(f"  - {problem}", err=True)
        raise typer.Exit(1) from error
    try:
        import yaml
    except ImportError:  # parse_rollout_spec read it as JSON, so it is JSON
        document = json.loads(text)
    else:
        document = yaml.safe_load(text)
    return dict(document)


def _rollout_summary(rollout: Any) -> str:
    """`<id>  <model>  candidate <v> vs champion <v>  <strategy> <weight>%  step i/n  <status>`, or for a bandit
    over several candidates `candidates <v> <w>%, <v> <w>% vs champion <v> <w>%  bandit  <status>`."""
    step = f"step {rollout.step_index + 1}/{rollout.steps}" if rollout.step_index is not None else "single weight"
    if len(rollout.candidates) > 1:
        candidates = ", ".join(f"{version} {percent:g}%" for version, percent in rollout.weights)
        return (
            f"{rollout.rollout_id}  {rollout.model_name}  candidates {candidates} vs champion "
            f"{rollout.champion_version} {rollout.champion_percent:g}%  {rollout.strategy}  {rollout.status}"
        )
    return (
        f"{rollout.rollout_id}  {rollout.model_name}  candidate {rollout.candidate_version} vs champion "
        f"{rollout.champion_version}  {rollout.strategy} {rollout.weight_percent:g}%  {step}  {rollout.status}"
    )


def _last_bandit_look(rollout: Any, decisions: list[Any]) -> tuple[Any, dict[str, Any]] | None:
    """When and with what evidence (posteriors, rewards, shares) the bandit policy last decided on `rollout`."""
    for decision in decisions:  # newest first
        if decision.rollout_id == rollout.rollout_id and decision.evidence.get("policy") == "bandit":
            return decision.created_at, decision.evidence
    return None


def _bandit_lines(look: tuple[Any, dict[str, Any]] | None) -> list[str]:
    """`bandit at <time>: candidate 2: Beta(46, 6), 45/50 labels agree, P(best) 0.998, share 50% -> 95%`."""
    if look is None:
        return ["bandit: no allocation yet (the shares of the start; the controller publishes once labels move them)"]
    at, evidence = look
    lines = [f"bandit at {at:%Y-%m-%d %H:%M:%S} UTC ({evidence.get('step', '?')}, best {evidence.get('best', '?')}):"]
    for version, arm in evidence.get("arms", {}).items():
        share = arm.get("share", {})
        lines.append(
            f"  {arm.get('arm', 'arm')} {version}: Beta({arm['alpha']:g}, {arm['beta']:g}), "
            f"{arm['correct']}/{arm['labelled']} labels agree, P(best) {arm['probability_best']:.3f}, "
            f"share {share.get('from', 0) * 100:.2f}% -> {share.get('to', 0) * 100:.2f}%"
        )
    return lines


def _awaiting_lines(rollout: Any, awaiting: dict[str, Any] | None) -> list[str]:
    """`awaiting a person's promotion since <time> UTC (promotion: manual): <why>` and what to run, or nothing."""
    if awaiting is None:
        return []
    from datetime import UTC, datetime

    at = awaiting.get("at")
    since = f" since {datetime.fromtimestamp(float(at), UTC):%Y-%m-%d %H:%M:%S} UTC" if at is not None else ""
    reasons = "; ".join(str(reason) for reason in awaiting.get("reasons") or []) or "its end was reached"
    return [
        f"awaiting a person's promotion{since} (policy promotion: manual): {reasons}",
        f"  promote with `michi rollouts promote {rollout.model_name} --reason ...` (or rollback, abort)",
    ]


def _rollout_action(name: str, reason: str, act: str, **options: Any) -> None:
    with _registry(publishing=True) as registry:
        method = getattr(registry, f"{act}_rollout")
        typer.echo(_plan_summary(method(name, actor=_actor(), reason=reason, **options)))


def _arms_text(evidence: dict[str, Any]) -> str:
    """`  [arms 2 25%, 3 25%, 1 50%]` for a decision that set the arms' shares (start, set-weight), else ``."""
    arms = evidence.get("percents")
    if not isinstance(arms, dict) or not arms or not all(isinstance(value, int | float) for value in arms.values()):
        return ""
    return "  [arms " + ", ".join(f"{version} {percent:g}%" for version, percent in arms.items()) + "]"


@rollouts_app.command("start")
def start_rollout(
    name: str,
    versions: list[str] = typer.Argument(
        ...,
        metavar="VERSION",
        help="the candidate; a bandit takes up to 3 (each a candidate or the shadow)",
    ),
    reason: str = typer.Option(..., "--reason", help="why"),
    weight: float | None = typer.Option(
        None,
        "--weight",
        help="percent of devices on the (each) candidate, 0-100 (default 10 for canary, 50 for ab and bandit, "
        "an equal share per arm for a bandit of several candidates)",
    ),
    steps: Path | None = typer.Option(None, "--steps", help="a rollout document (YAML or JSON, docs/rollouts.md)"),
    strategy: str = typer.Option(
        "canary", "--strategy", help="canary, ab or bandit (the rollout controller sets a bandit's shares)"
    ),
) -> None:
    """Serve VERSION (a candidate or the shadow) to a share of the devices beside the champion, and publish the plan.

    With --steps, the document's first set_weight step sets the share; step on with `michi rollouts set-weight`.
    A bandit (--strategy bandit) takes up to 3 versions: Thompson sampling over them and the champion."""
    if strategy not in ROLLOUT_STRATEGIES:
        _fail(f"unknown strategy {strategy!r}; choose one of {', '.join(ROLLOUT_STRATEGIES)}")
    if weight is not None and steps is not None:
        _fail("give --weight or --steps, not both")
    if len(versions) > 1 and strategy != "bandit":
        _fail(f"{len(versions)} versions: only a bandit (--strategy bandit) serves more than one candidate")
    document = _rollout_document(steps) if steps is not None else None
    version, *more = versions
    with _registry(publishing=True) as registry:
        plan = registry.start_rollout(
            name,
            version,
            actor=_actor(),
            reason=reason,
            strategy=strategy,
            weight=weight,
            document=document,
            more_versions=more,
        )
        typer.echo(_plan_summary(plan))


@rollouts_app.command("set-weight")
def set_rollout_weight(
    name: str,
    percent: float = typer.Argument(..., help="percent of devices on the candidate, 0-100"),
    reason: str = typer.Option(..., "--reason", help="why"),
) -> None:
    """Put PERCENT of the devices on the running rollout's candidate (the next step by hand), and publish the plan."""
    with _registry(publishing=True) as registry:
        typer.echo(_plan_summary(registry.set_rollout_weight(name, percent, actor=_actor(), reason=reason)))


@rollouts_app.command("pause")
def pause_rollout(name: str, reason: str = typer.Option(..., "--reason", help="why")) -> None:
    """Hold the running rollout where it is (the shares stay; the plan's reason says paused)."""
    _rollout_action(name, reason, "pause")


@rollouts_app.command("resume")
def resume_rollout(name: str, reason: str = typer.Option(..., "--reason", help="why")) -> None:
    """Let a paused rollout go on (the shares stay)."""
    _rollout_action(name, reason, "resume")


@rollouts_app.command("promote")
def promote_rollout(
    name: str,
    reason: str = typer.Option(..., "--reason", help="why"),
    version: str | None = typer.Option(
        None, "--version", help="the candidate to promote (needed when a bandit serves several)"
    ),
) -> None:
    """End the rollout making its candidate the champion (the previous champion is retired; a bandit's other
    candidates go back to candidate)."""
    _rollout_action(name, reason, "promote", version=version)


@rollouts_app.command("rollback")
def rollback_rollout(name: str, reason: str = typer.Option(..., "--reason", help="why")) -> None:
    """End the rollout because the candidate is worse: back to candidate, the champion serves every device."""
    _rollout_action(name, reason, "rollback")


@rollouts_app.command("abort")
def abort_rollout(name: str, reason: str = typer.Option(..., "--reason", help="why")) -> None:
    """End the rollout without a verdict: back to candidate, the champion serves every device."""
    _rollout_action(name, reason, "abort")


@rollouts_app.command("status")
def rollout_status(
    name: str | None = typer.Argument(None, help="one model (default: every model with a rollout)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per rollout"),
) -> None:
    """The running and paused rollouts: candidate(s) vs champion, strategy, weight(s), step, status, since, the plan,
    and what each arm served so far (windows, devices, hours driven, detections: from the warehouse)."""
    from dataclasses import asdict

    from google.protobuf.json_format import MessageToDict

    from michi.warehouse.reports import describe_arm, rollout_arms
    from services.rollouts.adapters.store import awaiting_promotion

    settings = load_settings(MichiSettings)
    blob_url = settings.resolved_blob_url()

    with _registry(publishing=False, settings=settings) as registry:
        if name is None:
            rollouts = registry.active_rollouts()
        else:
            if not registry.list(name):
                _fail(f"no model named {name}")
            active = registry.active_rollout(name)
            rollouts = [active] if active is not None else []
        # Ends the rollout controller holds for a person (`promotion: manual`), kept in its own table.
        held = awaiting_promotion(settings.resolved_database_url(), [rollout.rollout_id for rollout in rollouts])
        for rollout in rollouts:
            awaiting = held.get(rollout.rollout_id)
            plan = registry.current_plan(rollout.model_name)
            decisions = registry.rollout_history(rollout.model_name)
            since = decisions[0].created_at if decisions else rollout.started_at
            bandit = _last_bandit_look(rollout, decisions)
            if as_json:
                shown = {key: getattr(rollout, key) for key in rollout.__dataclass_fields__}
                shown.update(
                    candidates=list(rollout.candidates),
                    candidate_weights=[list(pair) for pair in rollout.weights],
                    champion_percent=rollout.champion_percent,
                    steps=rollout.steps,
                    started_at=rollout.started_at.isoformat(),
                    ended_at=None,
                    since=since.isoformat(),
                    plan=MessageToDict(plan, preserving_proto_field_name=True),
                    arms=[asdict(arm) for arm in rollout_arms(rollout.rollout_id, blob_url)],
                    bandit=None if bandit is None else {"at": bandit[0].isoformat(), **bandit[1]},
                    awaiting_promotion=awaiting,
                )
                typer.echo(json.dumps(shown, sort_keys=True))
                continue
            typer.echo(f"{_rollout_summary(rollout)} since {since:%Y-%m-%d %H:%M:%S} UTC")
            typer.echo(f"  started {rollout.started_at:%Y-%m-%d %H:%M:%S} UTC by {rollout.started_by}")
            typer.echo(f"  plan: {_plan_summary(plan)}")
            for line in _awaiting_lines(rollout, awaiting):
                typer.echo(f"  {line}")
            if rollout.strategy == "bandit":
                for line in _bandit_lines(bandit):
                    typer.echo(f"  {line}")
            arms = rollout_arms(rollout.rollout_id, blob_url)
            for arm in arms:
                typer.echo(f"  {describe_arm(arm)}")
            if not arms:
                typer.echo("  no window of this rollout in the warehouse yet")
    if not rollouts and not as_json:
        typer.echo("no rollout running or paused" + (f" for {name}" if name else ""), err=True)


@rollouts_app.command("history")
def rollout_history(
    name: str, as_json: bool = typer.Option(False, "--json", help="one JSON object per decision")
) -> None:
    """Every decision of every rollout of NAME, newest first: revision, action, actor, reason."""
    with _registry(publishing=False) as registry:
        if not registry.list(name):
            _fail(f"no model named {name}")
        decisions = registry.rollout_history(name)
    for decision in decisions:
        if as_json:
            shown = {key: getattr(decision, key) for key in decision.__dataclass_fields__}
            shown["created_at"] = decision.created_at.isoformat()
            typer.echo(json.dumps(shown, sort_keys=True))
        else:
            typer.echo(
                f"{decision.revision:>5}  {decision.created_at:%Y-%m-%d %H:%M:%S}  {decision.rollout_id}  "
                f"{decision.action:<10}  {decision.actor:<16}  {decision.reason}{_arms_text(decision.evidence)}"
            )
    if not decisions and not as_json:
        typer.echo(f"no rollout of {name} yet", err=True)
