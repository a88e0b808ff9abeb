"""Schema migrations on SQLite and on a real PostgreSQL (`postgres_url`): every owner of tables in one database.

- an empty database upgraded to head has exactly the schema `create_all` makes of today's models;
- a database made by `create_all` before migrations (the owners' baselines), with rows written by the stores,
  is adopted by the stores: stamped, upgraded, every row as it was, the stores working on it (also one made
  before a table existed);
- stores of every owner starting at once, in separate processes, on one database all succeed;
- a revision written from changed models (`write_revision`) upgrades a database with rows.

Each test gets a database of its own (a file, or a PostgreSQL database created for it).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Column, Engine, Index, MetaData, String, create_engine, inspect, make_url, text
from sqlmodel import Session, SQLModel

from michi.contracts.v1 import common_pb2
from michi.labels.outcomes import QaLabel, QaPrediction
from michi.migrations import (
    MigrationEnvironment,
    alembic_config,
    current_revision,
    environments,
    head_revision,
    schema_differences,
    schema_state,
    upgrade_to_head,
    write_revision,
)
from michi.registry.stages import Stage
from michi.registry.store import ModelRegistry
from services.annotation.adapters.store import AnnotationStore
from services.annotation.domain.consensus import ConsensusPolicy
from services.annotation.domain.credentials import token_hash
from services.annotation.domain.quality import QualityPolicy
from services.annotation.domain.roles import Role
from services.camera.adapters.store import CameraStore
from services.camera.domain.join import GpsPoint, UploadFacts
from services.ingest.adapters.devices import REGISTRY_VERSION_ROW, DeviceRegistry, DeviceRegistryVersion
from services.ingest.domain.tokens import RevokedToken
from services.monitor.adapters.store import MonitorStore
from services.monitor.domain.drift import FeatureDrift
from services.monitor.handlers import FULL, ClosedWindow, DriftEpisode
from services.rollouts.adapters.store import RolloutsStore
from services.trainer.adapters.store import TrainerStore
from services.trainer.adapters.tables import TrainerRunRow
from services.trainer.domain.labels import WindowLabel

from ..fakes import RecordingPlanPublisher
from .annotation_support import make_request

SECRET = b"migration-test-secret"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BRAKING = common_pb2.EVENT_TYPE_HARSH_BRAKING


def _fresh_postgres_database(server_url: str) -> str:
    name = f"migrations_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres])])
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """Makes an empty database on the backend and returns its URL."""
    if request.param == "sqlite":
        return lambda: f"sqlite:///{tmp_path / f'michi-{uuid.uuid4().hex[:8]}.db'}"
    server_url: str = request.getfixturevalue("postgres_url")
    return lambda: _fresh_postgres_database(server_url)


@pytest.fixture
def database_url(new_database: Callable[[], str]) -> str:
    return new_database()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    built = create_engine(database_url)
    try:
        yield built
    finally:
        built.dispose()


def _model_tables() -> list[Any]:
    return [table for environment in environments() for table in environment.tables()]


def _create_all_as_before_migrations(engine: Engine) -> None:
    """What the four stores' `create_tables` did before migrations: `create_all` of the schema each owner's
    `baseline.py` froze, and the devices' version row."""
    for environment in environments():
        environment.baseline.create_all(engine)
    _add_device_version_row(engine)


def _add_device_version_row(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(DeviceRegistryVersion(id=REGISTRY_VERSION_ROW, version=0))
        session.commit()


def _made_before_migrations_with_rows(engine: Engine) -> dict[str, Any]:
    """A database as `create_all` made it before migrations, with rows today's stores wrote: made with today's
    models, written, then taken back to each owner's baseline by its revisions' downgrades (rows kept) and
    left without version tables. Returns the devices' tokens (`_write_rows_with_the_stores`)."""
    SQLModel.metadata.create_all(engine, tables=_model_tables())
    _add_device_version_row(engine)
    tokens = _write_rows_with_the_stores(engine)
    for environment in environments():
        with engine.connect() as connection, connection.begin():
            config = alembic_config(environment, connection)
            command.stamp(config, "head")
            command.downgrade(config, environment.baseline_revision)
            connection.execute(text(f"DROP TABLE {environment.version_table}"))
    return tokens


def _reflected_schema(engine: Engine, tables: set[str]) -> dict[str, Any]:
    """Columns (type, nullability, default), primary key, indexes and unique constraints of `tables`, by name."""
    inspector = inspect(engine)
    schema: dict[str, Any] = {}
    for table in sorted(tables):
        schema[table] = {
            "columns": [
                (column["name"], str(column["type"]), column["nullable"], str(column.get("default")))
                for column in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            "indexes": sorted(
                (index["name"], tuple(index["column_names"]), bool(index["unique"]))
                for index in inspector.get_indexes(table)
            ),
            "unique": sorted(
                (constraint["name"] or "", tuple(constraint["column_names"]))
                for constraint in inspector.get_unique_constraints(table)
            ),
        }
    return schema


def _rows(engine: Engine, names: list[str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every owner's table (or of `names`), in primary key order: the baseline's columns, which a
    database made before migrations has (columns added since are new, empty in the rows it had)."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    baseline = [table for environment in environments() for table in environment.baseline.tables.values()]
    with engine.connect() as connection:
        for table in sorted(baseline, key=lambda table: table.name):
            if names is not None and table.name not in names:
                continue
            columns = ", ".join(column.name for column in table.columns)
            order = ", ".join(column.name for column in table.primary_key.columns)
            selected = connection.execute(text(f"SELECT {columns} FROM {table.name} ORDER BY {order}"))
            rows[table.name] = [tuple(row) for row in selected]
    return rows


def _label(number: int) -> WindowLabel:
    return WindowLabel(
        event_id=f"label-{number}",
        window_id=f"window-{number}",
        upload_id="upload-1",
        device_id="device-1",
        trip_id="trip-1",
        driver_id="driver-1",
        event_type=BRAKING,
        source=1,
        occurred_at_s=1_700_000_000.0 + number,
        window_started_at_s=1_700_000_000.0 + number,
        window_ended_at_s=1_700_000_002.0 + number,
    )


def _write_rows_with_the_stores(engine: Engine) -> dict[str, Any]:
    """A few rows in every table, written by the stores' own methods (on an engine: nothing migrates)."""
    registry = ModelRegistry(engine, RecordingPlanPublisher())
    first = registry.register(
        "risk", "file:///1", "a" * 64, "code-1", "data-1", {"lr": 0.1}, {"f1": 0.8}, created_by="t"
    )
    registry.register("risk", "file:///2", "b" * 64, "code-2", "data-1", {"lr": 0.2}, {"f1": 0.9}, created_by="t")
    registry.promote("risk", first.version, actor="test", reason="bootstrap")

    trainer = TrainerStore(engine)
    assert trainer.add_labels([_label(1), _label(2)]) == 2
    assert trainer.add_alert("alert-1", "drift", "retrain please")
    trainer.start_run(
        TrainerRunRow(
            run_id="run-1",
            model_name="risk",
            trigger="alert",
            status="running",
            started_at=NOW,
            code_version="code-1",
            parameters={"epochs": 3},
        )
    )
    trainer.claim_alert("alert-1", "run-1")
    trainer.start_step("run-1", 1, "fetch", NOW)
    trainer.finish_step("run-1", 1, "succeeded", seconds=1.5, details={"windows": 10})
    trainer.update_run("run-1", status="succeeded", finished_at=NOW + timedelta(minutes=1), metrics={"f1": 0.9})

    annotation = AnnotationStore(engine)
    annotation.add_annotator("alice", Role.LEAD, "scrypt$not-a-real-hash", actor="admin", now=NOW)
    annotation.create_session("alice", token_hash("mas1.alice-session"), now=NOW, expires_at=NOW + timedelta(days=365))
    annotation.record_request(make_request("window-a"), now=NOW, location=(35.0, 139.0))
    annotation.record_request(make_request("window-b"), now=NOW)
    for annotator in ("ann-1", "ann-2"):
        annotation.record_vote(
            "window-a",
            annotator,
            BRAKING,
            lease_id=uuid.uuid4().hex,
            counted=True,
            late=False,
            now=NOW,
            consensus=ConsensusPolicy(),
            quality=QualityPolicy(),
        )
    annotation.record_skip("window-b", "ann-1", "blurry", lease_id="lease-1", now=NOW, max_skips=5)

    devices = DeviceRegistry(engine, SECRET, cache_ttl_s=0)
    kept = devices.add_device("device-kept", label="bus 7")
    revoked = devices.add_device("device-revoked")
    devices.revoke("device-revoked")

    monitor = MonitorStore(engine)
    episode = DriftEpisode("e-1", "risk", "1", "all", ["w-1"], ["speed"], "alert-1", samples=3)
    monitor.record_close(_closed_window("w-1"), NOW.timestamp(), episode)

    rollouts = RolloutsStore(engine)
    rollouts.record_prediction(QaPrediction("w-qa", "risk", "2", int(BRAKING), 0.9, NOW.timestamp()))
    rollouts.record_label(QaLabel("w-qa", "risk", "2", int(BRAKING), "label-qa"))
    rollouts.save("ro-risk-2-00000000", "risk", {"progress": {"step_index": 1}})

    camera = CameraStore(engine)
    camera.keep_upload(
        UploadFacts("upload-c", "device-1", "driver-1", "trip-1", 0, 1_700_000_000_000, "", (GpsPoint(0, 12.5, 1, 2),)),
        NOW,
    )
    for name in ("inward_0.jpg", "inward_1.jpg"):
        camera.keep_media(
            event_id=f"media-{name}",
            upload_id="upload-c",
            device_id="device-1",
            name=name,
            message=b"\x01",
            topic="michi.media.v1",
            partition=0,
            offset=1,
            now=NOW,
        )
    camera.finish(
        "media-inward_0.jpg",
        detections=1,
        now=NOW,
        stream="inward:driver:driver-1",
        state={"version": 1},
        last_frame_ms=1_700_000_000_100,
    )
    return {"kept": kept, "revoked": revoked}


def _closed_window(window_id: str) -> ClosedWindow:
    speed = FeatureDrift("speed", "drift", 1000, psi=0.4, jensen_shannon=0.2, wasserstein=0.5, ks_statistic=0.3)
    return ClosedWindow(
        "risk",
        "1",
        "all",
        window_id,
        1000,
        FULL,
        (speed,),
        ("speed",),
        "reference-profile-2",
        False,
        None,
        ends={("michi.predictions.v1", 0): 1000},
    )


def test_an_empty_database_upgraded_to_head_has_the_schema_create_all_made(
    engine: Engine, new_database: Callable[[], str]
) -> None:
    for environment in environments():
        upgrade = upgrade_to_head(engine, environment)
        assert (upgrade.from_revision, upgrade.to_revision, upgrade.adopted) == (
            None,
            head_revision(environment),
            False,
        )
        assert schema_differences(engine, environment) == [], environment.name
        assert not upgrade_to_head(engine, environment).changed
    reference = create_engine(new_database())
    try:
        SQLModel.metadata.create_all(reference, tables=_model_tables())
        owned = {table.name for table in _model_tables()}
        # Beyond autogenerate's comparison: identical reflected schemas, names of indexes and constraints too.
        assert _reflected_schema(engine, owned) == _reflected_schema(reference, owned)
    finally:
        reference.dispose()
    version_tables = set(inspect(engine).get_table_names()) - owned
    assert version_tables == {environment.version_table for environment in environments()}


def test_a_database_made_by_create_all_is_adopted_with_every_row(database_url: str, engine: Engine) -> None:
    tokens = _made_before_migrations_with_rows(engine)
    before = _rows(engine)
    assert all(before[name] for name in before), {name: len(rows) for name, rows in before.items()}
    for environment in environments():
        state = schema_state(engine, environment)
        assert state.current is None and set(state.unversioned_tables) == set(environment.baseline.tables)

    publisher = RecordingPlanPublisher()
    registry = ModelRegistry.from_url(database_url, publisher)
    trainer = TrainerStore.from_url(database_url)
    annotation = AnnotationStore.from_url(database_url)
    annotation.create_tables()
    devices = DeviceRegistry.from_url(database_url, SECRET, cache_ttl_s=0)
    devices.create_tables()
    monitor = MonitorStore.from_url(database_url)
    rollouts = RolloutsStore.from_url(database_url)
    camera = CameraStore.from_url(database_url)
    try:
        for environment in environments():
            with engine.connect() as connection:
                assert current_revision(connection, environment) == head_revision(environment)
            assert schema_differences(engine, environment) == [], environment.name
        assert _rows(engine) == before

        # The stores read what they wrote before, and write on.
        assert [(version.version, version.stage) for version in registry.list("risk")] == [
            ("1", Stage.CHAMPION),
            ("2", Stage.CANDIDATE),
        ]
        registry.promote("risk", "2", actor="test", reason="better")
        champion = registry.champion("risk")
        assert champion is not None and champion.version == "2"
        assert publisher.plans[-1].revision == registry.history("risk")[-1].revision
        assert [label.event_id for label in trainer.labels()] == ["label-1", "label-2"]
        assert trainer.add_labels([_label(2), _label(3)]) == 1
        run = trainer.run("run-1")
        assert run is not None and run.status == "succeeded" and [step.name for step in run.steps] == ["fetch"]
        assert annotation.annotator("alice") is not None
        assert annotation.session(token_hash("mas1.alice-session"), NOW) is not None
        assert [vote.annotator for vote in annotation.votes_of("window-a")] == ["ann-1", "ann-2"]
        assert annotation.record_request(make_request("window-c"), now=NOW).new_task
        assert devices.verify(tokens["kept"]) == "device-kept"
        with pytest.raises(RevokedToken):
            devices.verify(tokens["revoked"])
        assert devices.verify(devices.add_device("device-new")) == "device-new"
        assert monitor.open_episode("risk", "1", "all") is not None
        assert [window.window_id for window in monitor.windows()] == ["w-1"]
        assert rollouts.arm_counts("risk", "2", 0.0).correct == 1
        assert rollouts.load("ro-risk-2-00000000") == {"progress": {"step_index": 1}}
        assert camera.media("media-inward_1.jpg") is not None and camera.waiting_count() == 1
        stream = camera.stream("inward:driver:driver-1")
        assert stream is not None and stream.state == {"version": 1}
        upload = camera.upload("upload-c")
        assert upload is not None and upload.speed_at(1_700_000_000_000) == 12.5
    finally:
        for store in (registry, trainer, annotation, devices, monitor, rollouts, camera):
            store.close()


def test_a_database_made_before_a_table_existed_gets_it_and_keeps_its_rows(database_url: str, engine: Engine) -> None:
    # The device registry's version row table came after `ingest_device`: older databases lack it.
    _create_all_as_before_migrations(engine)
    token = DeviceRegistry(engine, SECRET, cache_ttl_s=0).add_device("device-old")
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE ingest_device_registry"))
    before = _rows(engine, ["ingest_device"])

    environment = _environment("ingest")
    upgrade = upgrade_to_head(engine, environment)
    assert (upgrade.adopted, upgrade.created, upgrade.to_revision) == (True, ("ingest_device_registry",), "0001")
    assert _rows(engine, ["ingest_device"]) == before
    assert schema_differences(engine, environment) == []
    trainer = upgrade_to_head(engine, _environment("trainer"))
    assert (trainer.adopted, trainer.created) == (True, ())
    devices = DeviceRegistry.from_url(database_url, SECRET, cache_ttl_s=0)
    try:
        devices.create_tables()  # and the version row the dropped table held
        assert devices.verify(token) == "device-old"
        assert devices.revoke("device-old")
        with pytest.raises(RevokedToken):
            devices.verify(token)
    finally:
        devices.close()


STARTER = """
import sys
from michi.registry.store import ModelRegistry
from services.annotation.adapters.store import AnnotationStore
from services.ingest.adapters.devices import DeviceRegistry
from services.monitor.adapters.store import MonitorStore
from services.rollouts.adapters.store import RolloutsStore
from services.camera.adapters.store import CameraStore
from services.trainer.adapters.store import TrainerStore

url, first = sys.argv[1], int(sys.argv[2])

def registry():
    ModelRegistry.from_url(url).close()

def trainer():
    TrainerStore.from_url(url).close()

def annotation():
    store = AnnotationStore.from_url(url)
    store.create_tables()
    store.close()

def devices():
    store = DeviceRegistry.from_url(url, b"secret")
    store.create_tables()
    store.close()

def monitor():
    MonitorStore.from_url(url).close()

def rollouts():
    RolloutsStore.from_url(url).close()

def camera():
    CameraStore.from_url(url).close()

starts = [registry, trainer, annotation, devices, monitor, rollouts, camera]
print("ready", flush=True)
sys.stdin.readline()
for start in starts[first:] + starts[:first]:
    start()
print("started", flush=True)
"""


def test_stores_starting_at_once_on_one_database_all_succeed(database_url: str, engine: Engine) -> None:
    # Separate processes, as replicas are: in one process alembic's own lock would serialise them anyway.
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, database_url, str(index % 7)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for index in range(8)
    ]
    try:
        for starter in starters:
            assert starter.stdout is not None and starter.stdout.readline().strip() == "ready"
        for starter in starters:  # every one is waiting: let them all go at once
            assert starter.stdin is not None
            starter.stdin.write("go\n")
            starter.stdin.flush()
        outcomes = [starter.communicate(timeout=120) for starter in starters]
    finally:
        for starter in starters:
            if starter.poll() is None:
                starter.kill()
                starter.wait()
    failures = [(starter.returncode, errors[-2000:]) for starter, (_, errors) in zip(starters, outcomes, strict=True)]
    assert [code for code, _ in failures] == [0] * len(starters), failures
    assert all(output.strip() == "started" for output, _ in outcomes)
    for environment in environments():
        with engine.connect() as connection:
            versions = connection.execute(text(f"SELECT version_num FROM {environment.version_table}")).all()
        assert [row[0] for row in versions] == [head_revision(environment)]
        assert schema_differences(engine, environment) == [], environment.name
    with Session(engine) as session:
        assert session.get(DeviceRegistryVersion, REGISTRY_VERSION_ROW) is not None


def _environment(name: str) -> MigrationEnvironment:
    return next(environment for environment in environments() if environment.name == name)


def test_a_revision_written_from_changed_models_upgrades_a_database_with_rows(engine: Engine, tmp_path: Path) -> None:
    # The trainer's models as if someone changed them: a column added, a column longer, an index added.
    trainer = _environment("trainer")
    changed = MetaData()
    for table in trainer.tables():
        copy = table.to_metadata(changed)
        if copy.name == "trainer_run":
            copy.append_column(Column("notes", String(length=200), nullable=True))
            Index("ix_trainer_run_status", copy.c.status)
        if copy.name == "trainer_alert":
            copy.c.kind.type = String(length=256)
    versions = tmp_path / "versions"
    shutil.copytree(trainer.versions, versions)
    edited = dataclasses.replace(trainer, versions=versions, tables=lambda: tuple(changed.tables.values()))

    upgrade_to_head(engine, trainer)
    store = TrainerStore(engine)
    store.add_labels([_label(1)])
    store.add_alert("alert-1", "drift", "retrain")
    before = _rows(engine, ["trainer_label"])

    head = head_revision(trainer)
    following = f"{int(head) + 1:04d}"
    written = write_revision(edited, "trainer_run notes")
    assert written is not None and written.parent == versions and written.name.startswith(f"v{following}_")
    assert "sqlmodel" not in written.read_text()  # plain SQLAlchemy types: runs wherever alembic does
    upgrade = upgrade_to_head(engine, edited)
    assert (upgrade.from_revision, upgrade.to_revision) == (head, following)
    assert schema_differences(engine, edited) == []
    assert _rows(engine, ["trainer_label"]) == before
    with engine.connect() as connection:
        alerts = connection.execute(text("SELECT event_id, kind FROM trainer_alert")).all()
    assert [tuple(row) for row in alerts] == [("alert-1", "drift")]
    assert write_revision(edited, "nothing more") is None
