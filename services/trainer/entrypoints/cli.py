"""`michi train` (one workflow run in this process, or `--dry-run`) and `michi experiments list|show`.

    michi train --dry-run                 # trigger due now, labels, dataset size and version, parameters, gate
    michi train --reason "new labels"     # fetch → preprocess → train → evaluate → register → shadow
    michi train --bootstrap               # a first champion from simulator ground truth, if there is none,
                                          # and the physics baseline physics-3 registered, if it is not
    michi experiments list                # past runs, newest first
    michi experiments show RUN_ID         # one run's experiment record (Markdown; --json for everything)

Heavy imports (torch, SQLAlchemy, Kafka) happen inside the commands so `michi --help` stays quick.
"""

from __future__ import annotations

import json
from typing import Any

import typer

experiments_app = typer.Typer(help="Experiment records of training runs.", no_args_is_help=True)


def _fail(message: str) -> None:
    typer.echo(f"michi: {message}", err=True)
    raise typer.Exit(1)


def _settings() -> Any:
    from michi.settings import load_settings
    from services.trainer.settings import TrainerSettings

    return load_settings(TrainerSettings)


def _print_dry_run(report: dict[str, Any]) -> None:
    trigger = report["trigger"]
    labels = report["labels"]
    dataset = report["dataset"]
    gate = report["gate"]
    typer.echo(f"model           {report['model']} (code version {report['code_version']})")
    typer.echo(f"trigger now     {trigger['kind'] or 'none'}: {trigger['reason']}")
    typer.echo(
        f"labels          {labels['stored']} stored ({labels['human']} human), {labels['new_since_last_run']} new since "
        f"the last run (threshold {labels['threshold'] or 'off'}), {labels['windows_rebuilt']} rebuilt into windows"
        + (f", unresolved {json.dumps(labels['unresolved'], sort_keys=True)}" if labels["unresolved"] else "")
    )
    typer.echo(
        f"dataset         {dataset['data_version']}: {dataset['windows']} windows "
        f"({dataset['train_windows']} train / {dataset['test_windows']} test by {dataset['split_by']}), "
        f"{report['simulated_windows']} simulated"
    )
    typer.echo(f"  sources       {json.dumps(dataset['sources'], sort_keys=True)}")
    typer.echo(f"  train classes {json.dumps(dataset['train_classes'])}")
    typer.echo(f"  test classes  {json.dumps(dataset['test_classes'])}")
    typer.echo("parameters      " + ", ".join(f"{key}={value}" for key, value in sorted(report["parameters"].items())))
    typer.echo(f"training        {report['training']} (cache key {report['cache_key']})")
    typer.echo(
        f"gate            {'would run' if gate['would_run'] else 'would NOT run (no train or test windows)'} against "
        f"{gate['compared_with']} on {dataset['test_windows']} test windows ({gate['test_harsh_windows']} harsh)"
    )
    typer.echo(f"  policy        {json.dumps(gate['policy'], sort_keys=True)}")
    real = gate.get("real_data") or {}
    if real:
        typer.echo(
            f"real data       against {real['reference']}: "
            + ("shipped recordings" if real.get("shipped") else "no shipped recordings")
            + (f" + {real['evaluation_folder']}" if real.get("evaluation_folder") else "")
        )
    training = report.get("real_training") or {}
    if training.get("recordings") or training.get("skipped"):
        typer.echo(
            f"  training      {training['recordings']} labelled recordings, {training['windows']} windows "
            f"(version {training['version'] or '-'})"
            + (f", skipped {json.dumps(training['skipped'], sort_keys=True)}" if training.get("skipped") else "")
        )
    typer.echo(f"on pass         {report['on_pass']}")


def train_command(
    dry_run: bool = typer.Option(False, "--dry-run", help="show what a run would do now; train nothing"),
    bootstrap: bool = typer.Option(
        False, "--bootstrap", help="train and promote a first champion from simulator ground truth if there is none"
    ),
    reason: str = typer.Option("run from the command line", help="why this run (recorded in its experiment)"),
    epochs: int | None = typer.Option(None, help="override the number of training epochs"),
    seed: int | None = typer.Option(None, help="override the training seed"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead of text"),
) -> None:
    """Run the training workflow once in this process (fetch, preprocess, train, evaluate, register, shadow)."""
    from michi.bus.producer import EventProducer
    from services.trainer.domain.triggers import MANUAL, Trigger
    from services.trainer.handlers import bootstrap_champion, register_physics_model, run_workflow
    from services.trainer.handlers import dry_run as plan_run
    from services.trainer.wiring import build_wiring, training_parameters

    settings = _settings()
    try:
        parameters = training_parameters(settings).with_overrides(epochs=epochs, seed=seed)
    except ValueError as error:
        _fail(str(error))
        return
    producer = (
        None if dry_run else EventProducer(settings.kafka_connection(), settings.topic_prefix, client_id="michi-train")
    )
    wiring = build_wiring(settings, producer=producer, parameters=parameters)
    try:
        if dry_run:
            report = plan_run(wiring)
            if as_json:
                typer.echo(json.dumps(report, indent=2, sort_keys=True, default=str))
            else:
                _print_dry_run(report)
            return
        outcome = bootstrap_champion(wiring) if bootstrap else run_workflow(wiring, Trigger(MANUAL, reason))
        physics = register_physics_model(wiring) if bootstrap and settings.trainer_register_physics else None
    finally:
        wiring.registry.close()
        wiring.store.close()
        if producer is not None:
            producer.close(timeout=10)
    if physics is not None:
        typer.echo(f"physics baseline {settings.trainer_model_name} {physics} registered as a candidate")
    if outcome is None:
        champion = "a champion"
        typer.echo(f"{settings.trainer_model_name} already has {champion}: nothing to bootstrap")
        return
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "run_id": outcome.run_id,
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "version": outcome.version,
                    "stage": outcome.stage,
                    "experiment_uri": outcome.experiment_uri,
                },
                indent=2,
            )
        )
    else:
        typer.echo(f"run {outcome.run_id}: {outcome.status}" + (f" — {outcome.reason}" if outcome.reason else ""))
        if outcome.version:
            typer.echo(f"model {settings.trainer_model_name} {outcome.version} is now {outcome.stage}")
        typer.echo(f"experiment record: {outcome.experiment_uri or '(not written)'}")
        typer.echo(f"  michi experiments show {outcome.run_id}")
    if outcome.status == "failed":
        raise typer.Exit(1)


def _store() -> Any:
    from services.trainer.adapters.store import TrainerStore
    from services.trainer.wiring import database_url

    return TrainerStore.from_url(database_url(_settings()))


@experiments_app.command("list")
def list_experiments(
    limit: int = typer.Option(20, help="how many runs, newest first"),
    model: str | None = typer.Option(None, help="only runs of this model"),
) -> None:
    """Past training runs: id, trigger, status, data version, version registered, headline metrics."""
    store = _store()
    try:
        runs = store.runs(model_name=model, limit=limit)
    finally:
        store.close()
    for run in runs:
        metrics = run.metrics
        figures = (
            f"harsh_recall={metrics['harsh_recall']:.3f} harsh_precision={metrics['harsh_precision']:.3f} "
            f"macro_f1={metrics['macro_f1']:.3f}"
            if metrics
            else ""
        )
        registered = f"{run.registered_version} ({run.stage})" if run.registered_version else "-"
        typer.echo(
            f"{run.run_id:<30} {run.started_at:%Y-%m-%d %H:%M}  {run.trigger:<9} {run.status:<9} "
            f"{run.data_version or '-':<28} {registered:<14} {figures}"
        )


@experiments_app.command("show")
def show_experiment(
    run_id: str, as_json: bool = typer.Option(False, "--json", help="everything recorded, as JSON")
) -> None:
    """One run's experiment record (Markdown), or all its facts and steps as JSON."""
    store = _store()
    try:
        found = store.run(run_id)
    finally:
        store.close()
    if found is None:
        _fail(f"no run {run_id}")
        return
    if as_json:
        typer.echo(json.dumps(found.to_json(with_record=True), indent=2, sort_keys=True, default=str))
    else:
        typer.echo(found.experiment_markdown or f"run {run_id} is {found.status}: no experiment record yet")
