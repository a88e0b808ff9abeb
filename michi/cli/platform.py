"""`michi up` and `michi simulate`: the whole platform on one machine, and a fleet to drive it."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from michi.bus.admin import ensure_topics
from michi.bus.catalog import LABEL_REQUESTS
from michi.bus.producer import EventProducer
from michi.cli.running import remove_owned_endpoints, write_owned_endpoints
from michi.cli.status import PlatformStatus, collect_status
from michi.contracts import timestamp_to_seconds
from michi.device_client import SendReport, UploadClient, send_fleet
from michi.infra import EmbeddedInfrastructure, InfrastructureError
from michi.infra.processes import wait_until
from michi.infra.supervisor import Supervisor
from michi.kit import service_spec, service_specs
from michi.settings import MichiSettings
from michi.telemetry import configure_logging

if TYPE_CHECKING:
    from michi.simulator import SimulationConfig

logger = logging.getLogger(__name__)
console = Console()

# service -> (port variable, default port), in the order `michi up` starts them; from services/<name>/spec.py.
# The trainer is last: ready once a champion exists (on a fresh home it trains, or takes from the cache, the
# bootstrap model).
SERVICE_PORTS: dict[str, tuple[str, int]] = {spec.name: (spec.port_variable, spec.port) for spec in service_specs()}


# Share of the simulated fleet's judgeable events offered to annotators as gold tasks (known answers).
SIMULATED_GOLD_RATE = 0.3
# How long each simulated dashcam's first trip lasts under `michi up` (seconds, drawn in this range): the
# first trip scores arrive about a minute after the fleet starts instead of 5-15 min.
UP_FIRST_TRIP_SECONDS = (60.0, 90.0)


# How far behind the wall clock the simulated fleet's clock may be: a day inside the 7 days after which ingest
# refuses an upload as too old (`MICHI_INGEST_MAX_AGE_S`).
MAX_FLEET_LAG_S = 6 * 86_400.0


def simulate_start(now: float, *, duration: float, speed: float, upload_seconds: float = 10.0) -> float:
    """When `michi simulate`'s fleet clock starts: `up_fleet_start` at a speed, and for a fleet sent as fast as
    ingest takes it (speed 0) `duration` (and one upload) before `now`, so its last upload ends now. Raises
    `ValueError` when that is further back than ingest accepts (`MAX_FLEET_LAG_S`)."""
    if speed:
        return up_fleet_start(now, duration=duration, speed=speed, upload_seconds=upload_seconds)
    if duration + upload_seconds > MAX_FLEET_LAG_S:
        raise ValueError(
            f"--duration {duration:.0f} s sent at once starts the fleet {duration / 86_400:.1f} days ago, more than "
            f"the {MAX_FLEET_LAG_S / 86_400:.0f} days ingest accepts"
        )
    return now - duration - upload_seconds


def up_fleet_start(now: float, *, duration: float, speed: float, upload_seconds: float = 10.0) -> float:
    """When the simulated fleet's clock starts, so that no device of `michi up --speed` sends from the future.

    The fleet drives `duration` simulated seconds at `speed` simulated seconds per wall-clock second and
    each upload leaves once its slice has passed on the fleet's clock. Started at `now`, a fleet faster than
    real time ran ahead of the wall clock by (speed - 1) s every second, so after 100-300 s ingest refused
    its uploads as `started-at-in-future` / `sample-in-future` and the fleet stopped counting. Instead its
    clock starts `duration x (1 - 1/speed)` in the past (plus one upload of margin: the pacer starts its clock
    at the first device's first slice) and catches up with the wall clock when the run ends: the whole run is
    compressed `speed` times, every upload is stamped in the past, none in the future. A slower fleet
    (speed < 1) starts now and falls behind. Raises `ValueError` for a speed that is not above 0, or when the
    fleet would lag the wall clock by over `MAX_FLEET_LAG_S` (ingest would refuse its uploads as too old).
    """
    if not math.isfinite(speed) or speed <= 0:
        raise ValueError(f"--speed must be a number above 0, not {speed}")
    lag_s = duration * abs(1.0 - 1.0 / speed)
    if lag_s > MAX_FLEET_LAG_S:
        longest = MAX_FLEET_LAG_S / abs(1.0 - 1.0 / speed)
        raise ValueError(
            f"--speed {speed:g} over --duration {duration:.0f} s keeps the simulated fleet {lag_s / 86_400:.1f} days"
            f" behind the wall clock, more than the {MAX_FLEET_LAG_S / 86_400:.0f} days ingest accepts; "
            f"at this speed use --duration {math.floor(longest)} or less"
        )
    if speed <= 1:
        return now
    return now - duration * (1.0 - 1.0 / speed) - upload_seconds


def _service_url(name: str) -> str:
    return service_spec(name).url()


def _ready(url: str) -> bool:
    """Whether the readiness URL `url` answers 200."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def register_simulated_devices(settings: MichiSettings, device_ids: list[str]) -> dict[str, str]:
    """A fresh token for each simulated device, on a fresh home and on one that ran before.

    A device registered by an earlier run gets a new token and its old one is revoked at once (a rotation
    without overlap): the old token was only ever in that run's memory, so nothing can still be using it.
    Tokens are never written to the home or logged; the registry keeps their hashes.
    """
    from services.ingest.adapters.devices import DeviceAlreadyRegistered
    from services.ingest.settings import IngestSettings
    from services.ingest.wiring import device_registry

    registry = device_registry(IngestSettings(**settings.model_dump()))
    tokens: dict[str, str] = {}
    rotated = 0
    try:
        for device_id in device_ids:
            try:
                tokens[device_id] = registry.add_device(device_id, label="simulated")
            except DeviceAlreadyRegistered:
                tokens[device_id] = registry.rotate(device_id, overlap_s=0)
                rotated += 1
    finally:
        registry.close()
    if rotated:
        logger.info("simulated devices re-issued tokens", extra={"devices": rotated})
    return tokens


class GoldPublisher:
    """Publishes a sample of the simulated fleet's events as gold label requests, once their uploads are in."""

    def __init__(self, producer: EventProducer, rate: float) -> None:
        self.producer = producer
        self.rate = rate
        self.upload_starts: dict[str, float] = {}
        self._accepted: set[str] = set()
        self._decided: set[str] = set()
        self.published = 0

    def accepted(self, outcome: Any, events: list[Any], upload_seconds: float) -> None:
        from michi.simulator.gold import gold_request, sampled_for_gold

        if outcome.outcome not in ("accepted", "duplicate"):
            return
        self._accepted.add(outcome.upload_id)
        for event in list(events):
            if event.event_id in self._decided or not all(upload in self._accepted for upload in event.upload_ids):
                continue
            self._decided.add(event.event_id)
            if not sampled_for_gold(event.event_id, self.rate):
                continue
            request = gold_request(event, self.upload_starts, upload_seconds)
            if request is not None:
                self.producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
                self.published += 1


def up_simulation_config(
    *, devices: int, duration: float, seed: int, start_time: float, short_first_trips: bool = True
) -> SimulationConfig:
    """The simulated fleet `michi up --simulate N` (and so `make run`) drives.

    With `short_first_trips` every dashcam's first trip lasts `UP_FIRST_TRIP_SECONDS`, so the first trip
    and driver scores show within minutes; every later trip is drawn like any simulated fleet's (5-15 min).
    """
    from michi.simulator import SimulationConfig

    return SimulationConfig(
        devices=devices,
        duration_s=duration,
        seed=seed,
        start_time=start_time,
        first_trip_seconds=UP_FIRST_TRIP_SECONDS if short_first_trips else None,
    )


def simulate_fleet(
    settings: MichiSettings,
    config: SimulationConfig,
    *,
    target: str,
    speed: float | None = None,
    ground_truth: Path | None = None,
    register: bool = True,
    stop: threading.Event | None = None,
    on_result: Any = None,
    gold: GoldPublisher | None = None,
) -> SendReport:
    """Drive the fleet `config` describes against ingest at `target`, each upload once its slice has passed
    at `speed` x real time (None: as fast as ingest takes them)."""
    from michi.roads import RoadMap
    from michi.simulator import FleetSimulator

    simulator = FleetSimulator(config, road_map=RoadMap.default())
    device_ids = [profile.device_id for profile in simulator.devices]
    tokens = register_simulated_devices(settings, device_ids) if register else {}

    def uploads() -> Any:
        for upload in simulator.uploads():
            if stop is not None and stop.is_set():
                return
            if gold is not None:
                gold.upload_starts[upload.upload_id] = timestamp_to_seconds(upload.started_at)
            yield upload

    def result(outcome: Any) -> None:
        if gold is not None:
            gold.accepted(outcome, simulator.ground_truth, simulator.config.upload_seconds)
        if on_result is not None:
            on_result(outcome)

    async def drive() -> SendReport:
        client = UploadClient(target)
        try:
            return await send_fleet(
                uploads(),
                client,
                tokens,
                speed=speed,
                upload_seconds=simulator.config.upload_seconds,
                on_result=result,
            )
        finally:
            await client.close()

    report = asyncio.run(drive())
    if ground_truth is not None:
        simulator.write_ground_truth(ground_truth)
    return report


def _status_table(
    previous: PlatformStatus | None,
    current: PlatformStatus,
    supervisor: Supervisor,
    simulated: dict[str, int],
    infrastructure: Supervisor | None = None,
) -> Table:
    table = Table(title="michi up — Ctrl-C stops everything", expand=False)
    table.add_column("what")
    table.add_column("total", justify="right")
    table.add_column("per s", justify="right")
    elapsed = (current.taken_at - previous.taken_at) if previous else 0.0
    for name in (
        "uploads.v1",
        "predictions.v1",
        "detections.v1",
        "scored-events.v1",
        "trip-scores.v1",
        "driver-scores.v1",
        "dead-letters.v1",
    ):
        total = current.topic_sizes.get(name, 0)
        rate = (total - previous.topic_sizes.get(name, 0)) / elapsed if previous and elapsed > 0 else 0.0
        table.add_row(name, str(total), f"{rate:.1f}")
    for service, lag in current.lag.items():
        table.add_row(f"lag {service}", str(lag), "")
    for kind, watched in (("server", infrastructure), ("service", supervisor)):
        for name, process in watched.services.items() if watched is not None else ():
            state = "up" if process.alive else "restarting"
            table.add_row(f"{kind} {name}", state, f"restarts {process.restarts}")
    if simulated:
        table.add_row(
            "simulator sent",
            str(sum(simulated.values())),
            ", ".join(f"{key} {value}" for key, value in sorted(simulated.items())),
        )
    return table


def run_platform(
    settings: MichiSettings,
    *,
    simulate: int,
    duration: float,
    seed: int,
    speed: float,
    show_table: bool,
    short_first_trips: bool = True,
) -> None:
    configure_logging("michi", "WARNING")
    home = settings.home.resolve()
    infrastructure = EmbeddedInfrastructure(settings)
    # The embedded Kafka and redis-server, restarted like the services when they die; stopped after them.
    servers = Supervisor()
    supervisor = Supervisor()
    stop = threading.Event()
    previous_handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum: int, frame: Any) -> None:
        stop.set()

    for sig in previous_handlers:
        signal.signal(sig, request_stop)
    simulator_thread: threading.Thread | None = None
    try:
        console.print("[bold]michi[/]: starting embedded infrastructure")
        endpoints = infrastructure.up()
        # From here the endpoints file names this process: readers tell a live platform from a dead one's file.
        write_owned_endpoints(settings.endpoints_path, endpoints.to_json())
        infrastructure.supervise(servers)
        servers.start()
        kafka = settings.kafka_connection(endpoints.kafka_bootstrap)
        ensure_topics(kafka, settings.topic_prefix)
        environment = {
            "MICHI_HOME": str(home),
            "MICHI_KAFKA_BOOTSTRAP": endpoints.kafka_bootstrap,
            "MICHI_REDIS_URL": endpoints.redis_url,
            "MICHI_DATABASE_URL": endpoints.database_url,
            "MICHI_BLOB_URL": endpoints.blob_url,
            "MICHI_TOPIC_PREFIX": settings.topic_prefix,
        }
        # A service this install cannot run (the trainer without its `training` extra) is left out, said once;
        # inference then serves its built-in baseline, as it does until a trainer registers a champion.
        specs = [spec for spec in service_specs() if spec.missing_extra() is None]
        for spec in service_specs():
            missing = spec.missing_extra()
            if missing is not None:
                console.print(f"[bold]michi[/]: not starting the {spec.name}: {escape(missing)}")
        for spec in specs:
            supervisor.add(spec.name, spec.module, environment, home / "logs" / f"{spec.name}.log")
        names = ", ".join(spec.name for spec in specs)
        console.print(f"[bold]michi[/]: starting services ({names}); logs in {home / 'logs'}")
        supervisor.start()
        for spec in specs:
            url = spec.readiness_url()
            if not wait_until(lambda url=url: stop.is_set() or _ready(url), spec.ready_within_s, 0.5):  # type: ignore[misc]
                log = home / "logs" / f"{spec.name}.log"
                raise InfrastructureError(f"service {spec.name} did not become ready; see {log}")
        endpoints.services = {spec.name: spec.endpoints() for spec in specs}
        write_owned_endpoints(settings.endpoints_path, endpoints.to_json())
        console.print(f"[bold]michi[/]: ready — endpoints in {settings.endpoints_path}")
        console.print(
            f"[bold]michi[/]: label queues at {_service_url('annotation')}/ "
            "(create a sign-in with `michi annotators add NAME --role lead`)"
        )
        simulated: dict[str, int] = {}
        if simulate > 0 and not stop.is_set():

            def count(result: Any) -> None:
                simulated[result.outcome] = simulated.get(result.outcome, 0) + 1

            gold = GoldPublisher(
                EventProducer(kafka, settings.topic_prefix, client_id="michi-simulator-gold"),
                SIMULATED_GOLD_RATE,
            )

            def drive() -> None:
                try:
                    simulate_fleet(
                        settings,
                        up_simulation_config(
                            devices=simulate,
                            duration=duration,
                            seed=seed,
                            start_time=up_fleet_start(time.time(), duration=duration, speed=speed),
                            short_first_trips=short_first_trips,
                        ),
                        target=_service_url("ingest"),
                        speed=speed,
                        stop=stop,
                        on_result=count,
                        gold=gold,
                    )
                except Exception:
                    logger.exception("simulator stopped")
                finally:
                    gold.producer.close()

            simulator_thread = threading.Thread(target=drive, name="michi-simulator", daemon=True)
            simulator_thread.start()
            console.print(f"[bold]michi[/]: driving {simulate} simulated dashcams")
        previous: PlatformStatus | None = None
        if show_table:
            with Live(console=console, refresh_per_second=1, transient=False) as live:
                while not stop.is_set():
                    current = collect_status(kafka, settings.topic_prefix)
                    live.update(_status_table(previous, current, supervisor, simulated, servers))
                    previous = current
                    stop.wait(2.0)
        else:
            stop.wait()
    finally:
        console.print("[bold]michi[/]: stopping")
        # First: from now on no other command takes the platform for running.
        remove_owned_endpoints(settings.endpoints_path)
        stop.set()
        if simulator_thread is not None:
            simulator_thread.join(timeout=15)
        supervisor.stop()
        servers.stop(timeout=30.0)
        infrastructure.down()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        console.print("[bold]michi[/]: stopped")
