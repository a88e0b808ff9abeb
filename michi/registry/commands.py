"""`michi models list|show|diff|promote|rollback|republish|reprofile`: the registry from the command line.

Reading needs only the database; promote and rollback build an `EventProducer` from the
settings to publish the new rollout plan. The actor recorded in the audit trail is `$USER`.
"""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from michi.settings import MichiSettings, load_settings

models_app = typer.Typer(help="Model registry: versions, stages and rollout plans.", no_args_is_help=True)


def _actor() -> str:
    return os.environ.get("USER") or getpass.getuser()


def _fail(message: str) -> None:
    typer.echo(f"michi: {message}", err=True)
    raise typer.Exit(1)


@contextmanager
def _registry(*, publishing: bool) -> Iterator[Any]:
    from michi.bus.producer import EventProducer
    from michi.registry import ModelRegistry, PlanNotPublished, StageRuleViolation, UnknownModelVersion

    settings = load_settings(MichiSettings)
    producer = (
        EventProducer(settings.kafka_connection(), settings.topic_prefix, client_id="michi-models")
        if publishing
        else None
    )
    registry = ModelRegistry.from_url(settings.resolved_database_url(), producer)
    try:
        yield registry
    except (StageRuleViolation, UnknownModelVersion, PlanNotPublished) as error:
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
    with _registry(publishing=False) as registry:
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
