"""The `michi` command line: run the platform, its services, the simulator, and look inside.

michi up --simulate 20        # whole platform on embedded servers with 20 simulated dashcams
michi run inference           # one service against configured infrastructure
michi infra up|down|status    # embedded Kafka and redis-server only
michi simulate --devices 5 --duration 120 --target http://127.0.0.1:8080
michi replay auckland-forward --target http://127.0.0.1:8080 | michi evaluate auckland-forward --labels FILE
michi topics | michi status | michi devices add|list|revoke|rotate | michi trace ID
michi warehouse query "SQL" | michi warehouse tables | michi warehouse shadow-report
michi annotators add NAME [--role lead|admin] | list | disable | enable | reset-password | rebuild
michi db current | michi db upgrade [OWNER...]   # SQL schema migrations of each owner of tables
michi edge export MODEL [VERSION] --output DIR | michi edge verify BUNDLE   # device bundles
michi models list|promote|... | michi rollouts start|set-weight|status|pause|resume|promote|abort|history
michi maturity [--framework google|microsoft] [--unmet] [--json]   # each MLOps maturity criterion, with evidence
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.markup import escape

from michi.cli.database import database_app
from michi.cli.edge import edge_app
from michi.cli.recordings import evaluate_command, replay_command
from michi.kit import resolve, service_names, service_spec, service_specs
from michi.registry.commands import models_app, rollouts_app
from michi.settings import MichiSettings, load_settings

app = typer.Typer(help="Michi: event-driven MLOps for AI dashcams.", no_args_is_help=True, add_completion=False)
infra_app = typer.Typer(help="The embedded infrastructure (Kafka, redis-server, SQLite, blobs).", no_args_is_help=True)
devices_app = typer.Typer(help="Device credentials.", no_args_is_help=True)
app.add_typer(infra_app, name="infra")
app.add_typer(devices_app, name="devices")
app.add_typer(models_app, name="models")
app.add_typer(rollouts_app, name="rollouts")
app.add_typer(database_app, name="db")
app.add_typer(edge_app, name="edge")
warehouse_app = typer.Typer(help="The warehouse of predictions (DuckDB over Parquet).", no_args_is_help=True)
app.add_typer(warehouse_app, name="warehouse")


def _add_service_commands() -> None:
    """The commands services add (annotation's `annotators`, the trainer's `train` and `experiments`).

    A service whose extra is not installed (the trainer without torch) gets stand-ins instead: each says which
    extra to install, whatever arguments follow, and the service's own modules are not even imported.
    """
    for spec in service_specs():
        missing = spec.missing_extra()
        for command in spec.commands:
            if missing is not None:
                # escape: typer reads help as rich markup, where `[training]` would be a style.
                stand_in = app.command(command.name, help=escape(missing), context_settings=_ANY_ARGUMENTS)
                stand_in(_needs_extra(missing))
                continue
            target = resolve(command.target)
            if isinstance(target, typer.Typer):
                app.add_typer(target, name=command.name)
            else:
                app.command(command.name)(target)


# A stand-in command takes whatever follows it (`michi experiments list --limit 3`) and only says what is missing.
_ANY_ARGUMENTS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _needs_extra(message: str) -> Callable[[], None]:
    def needs_extra() -> None:
        _fail(message)

    return needs_extra


_add_service_commands()

SERVICES = service_names()


@app.callback()
def _forget_a_dead_platform() -> None:
    # Before every command: a `michi up` killed without its cleanup left endpoints.json naming dead servers.
    from pydantic import ValidationError

    from michi.cli.running import forget_stale_endpoints

    try:
        home = MichiSettings().home
    except ValidationError:
        return  # the command itself reports the configuration error
    dead = forget_stale_endpoints(home / "endpoints.json")
    if dead is not None:
        typer.echo(
            f"michi: removed {home / 'endpoints.json'}: the michi up (pid {dead}) that wrote it is gone", err=True
        )


def _settings() -> MichiSettings:
    return load_settings(MichiSettings)


def _device_registry() -> Any:
    from services.ingest.settings import IngestSettings
    from services.ingest.wiring import device_registry

    return device_registry(load_settings(IngestSettings))


def _fail(message: str) -> NoReturn:
    typer.echo(f"michi: {message}", err=True)
    raise typer.Exit(1)


@app.command()
def up(
    simulate: int = typer.Option(0, help="number of simulated dashcams to drive (0: none)"),
    duration: float = typer.Option(24 * 3600, help="seconds of simulated driving"),
    seed: int = typer.Option(7, help="simulator seed"),
    speed: float = typer.Option(
        1.0,
        help="simulated seconds per wall-clock second (above 0). Above 1 the run is compressed: the fleet's"
        " clock starts duration x (1 - 1/speed) in the past and catches up with the wall clock when the run"
        " ends, so no upload is ever stamped in the future (a day at --speed 4 takes 6 h, its first uploads"
        " 18 h old). The fleet may lag the wall clock by at most 6 days.",
    ),
    table: bool = typer.Option(True, help="show the live status table"),
    short_first_trips: bool = typer.Option(
        True, help="each simulated dashcam's first trip lasts 60-90 s, so scores show within minutes"
    ),
) -> None:
    """Run the whole platform: embedded infrastructure, every service, optionally a simulated fleet."""
    import time

    from michi.cli.platform import run_platform, up_fleet_start
    from michi.infra.processes import InfrastructureError

    try:
        # Refused here, before anything starts: a speed the fleet cannot keep within ingest's time bounds.
        up_fleet_start(time.time(), duration=duration, speed=speed)
    except ValueError as error:
        _fail(str(error))
    from michi.telemetry import TracingConfigurationError, tracing_setup

    try:
        # Refused here too: each service would stop on it at start, and be restarted, again and again.
        tracing_setup()
    except TracingConfigurationError as error:
        _fail(f"configuration error: {error}")
    try:
        run_platform(
            _settings(),
            simulate=simulate,
            duration=duration,
            seed=seed,
            speed=speed,
            show_table=table,
            short_first_trips=short_first_trips,
        )
    except InfrastructureError as error:
        _fail(str(error))


@app.command("run")
def run_service(service: str = typer.Argument(..., help=f"one of: {', '.join(SERVICES)}")) -> None:
    """Run one service in the foreground against the configured infrastructure."""
    if service not in SERVICES:
        _fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    spec = service_spec(service)
    missing = spec.missing_extra()
    if missing is not None:
        _fail(missing)
    resolve(spec.run)()


@infra_app.command("up")
def infra_up() -> None:
    """Start the embedded Kafka and redis-server in the background (unless MICHI_* points elsewhere)."""
    from michi.bus.admin import ensure_topics
    from michi.infra import EmbeddedInfrastructure, InfrastructureError

    settings = _settings()
    try:
        endpoints = EmbeddedInfrastructure(settings).up(detached=True)
    except InfrastructureError as error:
        _fail(str(error))
        return
    ensure_topics(settings.kafka_connection(endpoints.kafka_bootstrap), settings.topic_prefix)
    typer.echo(json.dumps(endpoints.to_json(), indent=2))


@infra_app.command("down")
def infra_down() -> None:
    """Stop the embedded servers started by `michi infra up`."""
    from michi.infra import EmbeddedInfrastructure

    stopped = EmbeddedInfrastructure(_settings()).down()
    typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@infra_app.command("status")
def infra_status() -> None:
    """Show where each piece of infrastructure is and whether it answers."""
    from michi.infra import EmbeddedInfrastructure

    for name, state in EmbeddedInfrastructure(_settings()).status().items():
        typer.echo(f"{name:9} {state}")


@app.command()
def topics(create: bool = typer.Option(False, help="create the missing topics on the configured broker")) -> None:
    """List the topic catalog (name, key, value type, partitions, retention)."""
    from michi.bus.admin import ensure_topics
    from michi.bus.catalog import CATALOG

    settings = _settings()
    if create:
        created = ensure_topics(settings.kafka_connection(), settings.topic_prefix)
        typer.echo(f"created {len(created)} topics", err=True)
    typer.echo(f"{'topic':32} {'key':12} {'value':28} {'parts':>5} retention")
    for spec in CATALOG:
        retention = (
            "compacted"
            if spec.compacted
            else ("forever" if spec.retention_ms in (None, -1) else f"{spec.retention_ms // 86_400_000}d")
        )
        typer.echo(
            f"{spec.name(settings.topic_prefix):32} {spec.key:12} {spec.schema:28} {spec.partitions:>5} {retention}"
        )


@app.command()
def status() -> None:
    """Topic sizes and consumer lag of the running platform."""
    from michi.cli.status import collect_status

    settings = _settings()
    snapshot = collect_status(settings.kafka_connection(), settings.topic_prefix)
    for name, size in snapshot.topic_sizes.items():
        typer.echo(f"{name:22} {size:>10}")
    for service, lag in snapshot.lag.items():
        typer.echo(f"lag {service:18} {lag:>10}")


@app.command()
def simulate(
    devices: int = typer.Option(5, help="number of dashcams"),
    duration: float = typer.Option(300.0, help="seconds of driving per device"),
    target: str = typer.Option("http://127.0.0.1:8080", help="ingest base URL"),
    seed: int = typer.Option(7, help="seed: the same seed gives the same fleet and uploads"),
    sample_rate: int = typer.Option(50, help="IMU sample rate in Hz (25-100)"),
    speed: float = typer.Option(
        0.0, help="simulated seconds per wall-clock second; 0 sends as fast as ingest takes them"
    ),
    scenario: str | None = typer.Option(None, help="drift scenario name (see --list-scenarios)"),
    ground_truth: Path | None = typer.Option(None, help="write the injected events' ground truth here (JSON lines)"),
    register: bool = typer.Option(True, help="register the simulated devices in the device registry first"),
) -> None:
    """Drive a simulated fleet against an ingest endpoint.

    The fleet's clock ends at the wall clock (as fast as ingest takes them: it starts `duration` ago; at `--speed`
    as `michi up --speed` starts it), so ingest, which refuses uploads older than its window, takes every upload."""
    import time

    from michi.cli.platform import simulate_fleet, simulate_start
    from michi.simulator import SimulationConfig

    try:
        start_time = simulate_start(time.time(), duration=duration, speed=speed)
    except ValueError as error:
        _fail(str(error))
    config = SimulationConfig(
        devices=devices,
        duration_s=duration,
        seed=seed,
        sample_rate_hz=sample_rate,
        scenario=scenario,
        start_time=start_time,
    )
    report = simulate_fleet(
        _settings(), config, target=target, speed=speed or None, ground_truth=ground_truth, register=register
    )
    typer.echo(json.dumps(dict(report.by_outcome)))
    if report.by_outcome.get("failed") or report.by_outcome.get("refused"):
        raise typer.Exit(1)


# Next to `simulate` in `michi --help`: real recordings instead of a simulated fleet (michi/cli/recordings.py).
app.command("replay")(replay_command)
app.command("evaluate")(evaluate_command)
app.command("maturity")(resolve("michi.cli.maturity.maturity_command"))


@devices_app.command("add")
def devices_add(device_id: str, label: str = typer.Option("", help="free text, e.g. the vehicle plate")) -> None:
    """Register a device and print its token (shown once; only a hash is stored).

    The label is at most 200 printable characters."""
    try:
        token = _device_registry().add_device(device_id, label=label)
    except ValueError as error:  # an invalid id or label, or a device that already holds a token
        _fail(str(error))
    typer.echo(token)


@devices_app.command("list")
def devices_list() -> None:
    """List registered devices."""
    for device in _device_registry().list_devices():
        revoked = f"revoked {device.revoked_at:%Y-%m-%d %H:%M}" if device.revoked_at else "active"
        if device.revoked_at and device.active:  # a rotated-out token, still inside its overlap
            revoked = f"active until {device.revoked_at:%Y-%m-%d %H:%M}"
        typer.echo(f"{device.device_id:24} {revoked:24} {device.label}")


@devices_app.command("revoke")
def devices_revoke(device_id: str) -> None:
    """Revoke a device's token (effective within seconds on every ingest process)."""
    _device_registry().revoke(device_id)
    typer.echo(f"revoked {device_id}")


@devices_app.command("rotate")
def devices_rotate(
    device_id: str,
    overlap: float = typer.Option(3600, help="seconds the current token keeps working next to the new one"),
) -> None:
    """Issue a new token (printed once); the current one keeps working for the overlap, then stops."""
    from services.ingest.adapters.devices import UnknownDevice

    try:
        token = _device_registry().rotate(device_id, overlap_s=overlap)
    except (UnknownDevice, ValueError) as error:
        _fail(str(error))
    typer.echo(token)


@app.command()
def alerts(
    kind: str = typer.Option(None, help="only alerts of this kind (drift, retrain, ...)"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new alerts until Ctrl-C"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per alert"),
) -> None:
    """The alerts the platform raised on michi.alerts.v1, oldest first, each with its evidence."""
    from michi.cli.alerts import show_alerts

    settings = _settings()
    try:
        printed = show_alerts(
            settings.kafka_connection(),
            settings.topic_prefix,
            kind=kind,
            follow=follow,
            as_json=as_json,
            echo=typer.echo,
            note=lambda line: typer.echo(line, err=True),
        )
    except KeyboardInterrupt:
        return
    if not printed and not as_json:
        typer.echo("no alerts" + (f" of kind {kind}" if kind else ""), err=True)


@app.command()
def drift(
    model: str = typer.Option(None, "--model", help="only this model version"),
    feature: str = typer.Option(None, "--feature", help="only this input feature"),
    cohort: str = typer.Option(
        "all", "--cohort", help="the devices: all, vehicle:<type>, rate:<Hz> or firmware:<version>"
    ),
    url: str = typer.Option(None, "--url", help="the monitor (default: from michi up, or MICHI_MONITOR_HOST/PORT)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per model version and feature"),
) -> None:
    """The monitor's drift figures per feature (PSI, Jensen-Shannon, Wasserstein, KS) of each version's last window."""
    from michi.cli.drift import as_json as row_json
    from michi.cli.drift import monitor_url, read_figures, render
    from services.monitor.settings import MonitorSettings

    settings = load_settings(MonitorSettings)
    address = url or monitor_url(settings.endpoints_path, settings.monitor_host, settings.monitor_port)
    try:
        rows = read_figures(address, model=model, feature=feature, cohort=cohort)
    except Exception as error:
        _fail(f"the monitor at {address} did not answer ({type(error).__name__}): is it running? (michi up)")
    if not rows:
        typer.echo(f"no drift figures yet (no window of cohort {cohort} closed)", err=True)
        return
    typer.echo("\n".join(row_json(row) for row in rows) if as_json else render(rows))


@app.command()
def trace(identifier: str = typer.Argument(..., help="an upload_id or a 32-hex trace id")) -> None:
    """Show the spans of one upload's trace across every service (from .michi/traces)."""
    from michi.cli.tracing import find_trace, render_trace

    spans = find_trace(_settings().home / "traces", identifier)
    if not spans:
        _fail(f"no spans found for {identifier}")
    typer.echo(render_trace(spans))


@warehouse_app.command("query")
def warehouse_query(
    sql: str = typer.Argument(..., help="DuckDB SQL over the views predictions and detections"),
) -> None:
    """Run SQL over the warehouse and print one JSON object per row."""
    import duckdb

    from michi.warehouse import query

    try:
        rows = query(sql, _settings().resolved_blob_url())
    except duckdb.Error as error:
        _fail(str(error))
    for row in rows:
        typer.echo(json.dumps(row, default=str))


@warehouse_app.command("tables")
def warehouse_tables() -> None:
    """List the warehouse views and their row counts."""
    from michi.warehouse import table_counts

    for table, count in table_counts(_settings().resolved_blob_url()).items():
        typer.echo(f"{table}\t{count}")


@warehouse_app.command("shadow-report")
def warehouse_shadow_report(
    model: str = typer.Option("michi-risk", help="registry model name"),
) -> None:
    """Compare the shadow model with the champion on the windows both scored (agreement, disagreements)."""
    from michi.warehouse.reports import shadow_comparison

    reports = shadow_comparison(model, _settings().resolved_blob_url())
    if not reports:
        typer.echo(f"no window of {model} was scored by both a champion and a shadow")
        return
    for report in reports:
        typer.echo(
            f"champion {report.champion_version} vs shadow {report.shadow_version}: {report.windows} windows, "
            f"agreement {report.agreement:.3f}, harsh only in shadow {report.shadow_only_risky}, "
            f"harsh only in champion {report.champion_only_risky}"
        )
        for (champion_class, shadow_class), windows in sorted(report.disagreements.items(), key=lambda item: -item[1]):
            typer.echo(f"  {champion_class:>20} -> {shadow_class:<20} {windows}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
