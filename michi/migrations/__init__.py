"""Schema migrations (Alembic): each owner of SQL tables brings its own tables to the newest schema.

Six owners keep tables in SQL, each with a migration history of its own next to its tables: the model
registry (`michi/registry/migrations`), annotation, the trainer, the monitor, the rollout controller and
ingest's device registry (`services/<name>/adapters/migrations`). Each records its revision in a version table of its own
(`alembic_version_<owner>`), so owners sharing one database (one `MICHI_DATABASE_URL`, the default)
or each on its own database migrate independently, and a service upgrades only what it owns.

A store's start-up calls `upgrade_to_head`:

- at head already: one read of the version table, no lock, nothing written;
- else, in one transaction that first takes a lock, the upgrade: a PostgreSQL advisory lock keyed by
  the version table (replicas starting at once wait for the first, then find the head and do
  nothing), or SQLite's write lock (`BEGIN IMMEDIATE`, held by the file). DDL is transactional on
  both, so a failed upgrade changes nothing;
- a database made by `create_all` before migrations existed (the owner's tables, no version table) is
  adopted: stamped as the baseline without touching a row (a table an older `create_all` never
  made is created first, as `create_all` would have), then upgraded;
- a database at a revision this code does not know (migrated by a newer Michi) stops the start
  with `SchemaAheadOfCode`.

`michi db upgrade` and `michi db current` run the same code from the command line; `tools/new_migration.py`
writes an owner's next revision from what its models changed.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, Table, create_engine, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url

logger = logging.getLogger(__name__)

# Alembic says "Context impl PostgresqlImpl." at INFO on every start of every store; Michi logs its
# own decisions (below) instead. A logger configured on purpose keeps its level.
if logging.getLogger("alembic").level == logging.NOTSET:
    logging.getLogger("alembic").setLevel(logging.WARNING)

# Where alembic finds the environment script shared by every owner (env.py) and the revision template.
ENVIRONMENT_SCRIPTS = Path(__file__).parent
# Every owner of tables, by the module holding its `MIGRATIONS` (imported on first use).
ENVIRONMENT_MODULES = (
    "michi.registry.migrations",
    "services.ingest.adapters.migrations",
    "services.annotation.adapters.migrations",
    "services.trainer.adapters.migrations",
    "services.monitor.adapters.migrations",
    "services.rollouts.adapters.migrations",
    "services.camera.adapters.migrations",
)
# Alembic installs its `context` and `op` as module-level proxies: one migration at a time per process.
_ALEMBIC_IN_USE = threading.Lock()


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None for another database or an in-memory one)."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(str(parsed.database))
    return None


def with_database_folder(url: str) -> str:
    """`url`, with the folder of its SQLite file made if missing (the default database lives under MICHI_HOME)."""
    file = sqlite_file(url)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    return url


class SchemaAheadOfCode(RuntimeError):
    """The database is at a revision this code does not know: a newer Michi migrated it."""


@dataclass(frozen=True)
class MigrationEnvironment:
    """One owner's migration history: where its revisions are, its version table, its tables."""

    name: str
    version_table: str
    # The folder of revision scripts (shipped as package data, so an installed wheel can migrate).
    versions: Path
    # The tables as `create_all` made them before migrations existed: frozen, never edited.
    baseline: MetaData = field(repr=False)
    # The models' tables now (a function: the models' module may import the store that imports this).
    tables: Callable[[], Sequence[Table]] = field(repr=False)
    baseline_revision: str = "0001"

    def table_names(self) -> frozenset[str]:
        """Every table this owner has or ever had."""
        return frozenset(self.baseline.tables) | {table.name for table in self.tables()}

    def metadata(self) -> MetaData:
        """The models' tables alone, in a metadata of their own (what head must match)."""
        metadata = MetaData()
        for table in self.tables():
            table.to_metadata(metadata)
        return metadata

    def include_name(self, name: str | None, type_: str, _parents: Any) -> bool:
        # Other owners' tables (and version tables) in a shared database are theirs to compare.
        return type_ != "table" or name in self.table_names()


@dataclass(frozen=True)
class SchemaUpgrade:
    """What `upgrade_to_head` did to one owner's tables."""

    environment: str
    from_revision: str | None
    to_revision: str
    # A database made before migrations existed, stamped as the baseline (and the tables it lacked).
    adopted: bool = False
    created: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return self.from_revision != self.to_revision


@dataclass(frozen=True)
class SchemaState:
    """Where one owner's tables are (`michi db current`)."""

    environment: str
    current: str | None
    head: str
    # Owner's tables present without a version table: made before migrations, adopted at the next start.
    unversioned_tables: tuple[str, ...] = ()

    @property
    def at_head(self) -> bool:
        return self.current == self.head


def environments() -> tuple[MigrationEnvironment, ...]:
    """Every owner's environment, in the order `michi db` lists them."""
    return tuple(importlib.import_module(module).MIGRATIONS for module in ENVIRONMENT_MODULES)


def environment_named(name: str) -> MigrationEnvironment:
    for candidate in environments():
        if candidate.name == name:
            return candidate
    known = ", ".join(candidate.name for candidate in environments())
    raise LookupError(f"no migrations named {name!r}; choose one of {known}")


def alembic_config(environment: MigrationEnvironment, connection: Connection | None = None) -> Config:
    """Alembic's configuration for one owner, without a file: env.py reads the connection from it."""
    config = Config()
    config.set_main_option("script_location", _escaped(ENVIRONMENT_SCRIPTS))
    config.set_main_option("version_locations", _escaped(environment.versions))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "v%%(rev)s_%%(slug)s")
    config.attributes["environment"] = environment
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision(environment: MigrationEnvironment) -> str:
    head = ScriptDirectory.from_config(alembic_config(environment)).get_current_head()
    if head is None:
        raise RuntimeError(f"the {environment.name} migrations have no revision")
    return head


def current_revision(connection: Connection, environment: MigrationEnvironment) -> str | None:
    """The revision recorded in the owner's version table (None: no version table, or empty)."""
    context = MigrationContext.configure(connection, opts={"version_table": environment.version_table})
    return context.get_current_revision()


def schema_state(engine: Engine, environment: MigrationEnvironment) -> SchemaState:
    with engine.connect() as connection:
        current = current_revision(connection, environment)
        present = set(inspect(connection).get_table_names()) & environment.table_names()
    return SchemaState(
        environment=environment.name,
        current=current,
        head=head_revision(environment),
        unversioned_tables=tuple(sorted(present)) if current is None else (),
    )


def upgrade_to_head(engine: Engine, environment: MigrationEnvironment) -> SchemaUpgrade:
    """Bring the owner's tables to head: safe with many replicas starting at once (see the module doc)."""
    head = head_revision(environment)
    with engine.connect() as connection:
        current = current_revision(connection, environment)
    if current == head:
        return SchemaUpgrade(environment.name, current, head)
    with _ALEMBIC_IN_USE, engine.connect() as connection, connection.begin():
        _lock(connection, environment)
        upgrade = _upgrade_locked(connection, environment, head)
    if upgrade.changed:
        logger.info(
            "database schema upgraded",
            extra={
                "migrations": environment.name,
                "from_revision": upgrade.from_revision,
                "to_revision": upgrade.to_revision,
                "adopted": upgrade.adopted,
                "created_tables": list(upgrade.created),
            },
        )
    if upgrade.adopted:
        _warn_about_differences(engine, environment)
    return upgrade


def schema_differences(engine: Engine, environment: MigrationEnvironment) -> list[Any]:
    """What the database's tables lack or have beyond the models (alembic autogenerate; [] when they agree)."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": environment.version_table,
                "include_name": environment.include_name,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        differences: list[Any] = compare_metadata(context, environment.metadata())
        return differences


def write_revision(environment: MigrationEnvironment, message: str) -> Path | None:
    """Write the owner's next revision from what its models changed (autogenerate); None when nothing did.

    The revisions run on a scratch SQLite file first; the new one is `versions/v<NNNN>_<slug>.py`, to be read
    before it is committed (autogenerate takes a rename for a drop and an add, and knows nothing of data).
    """
    with tempfile.TemporaryDirectory() as folder:
        engine = create_engine(f"sqlite:///{Path(folder) / 'scratch.db'}")
        try:
            upgrade_to_head(engine, environment)
            if not schema_differences(engine, environment):
                return None
            with _ALEMBIC_IN_USE, engine.connect() as connection:
                config = alembic_config(environment, connection)
                revision_id = f"{int(head_revision(environment)) + 1:04d}"
                written = command.revision(config, message=message, autogenerate=True, rev_id=revision_id)
        finally:
            engine.dispose()
    scripts = written if isinstance(written, list) else [written]
    return Path(scripts[0].path) if scripts and scripts[0] is not None else None


def _upgrade_locked(connection: Connection, environment: MigrationEnvironment, head: str) -> SchemaUpgrade:
    current = current_revision(connection, environment)  # again: another replica may have just upgraded
    if current == head:
        return SchemaUpgrade(environment.name, current, head)
    config = alembic_config(environment, connection)
    if current is not None and current not in _known_revisions(config):
        raise SchemaAheadOfCode(
            f"the {environment.name} tables are at revision {current}, which this Michi does not know (its newest"
            f" is {head}): a newer Michi migrated this database; run that version or newer"
        )
    adopted = False
    created: tuple[str, ...] = ()
    if current is None:
        existing = set(inspect(connection).get_table_names())
        if existing & environment.table_names():
            # Made by create_all before migrations: the baseline describes it; nothing in it changes.
            adopted = True
            created = tuple(sorted(set(environment.baseline.tables) - existing))
            if created:
                command.upgrade(config, environment.baseline_revision)  # creates only the missing tables
            else:
                command.stamp(config, environment.baseline_revision)
    command.upgrade(config, "head")
    return SchemaUpgrade(environment.name, current, head, adopted=adopted, created=created)


def _lock(connection: Connection, environment: MigrationEnvironment) -> None:
    if connection.dialect.name == "postgresql":
        # Released at commit or rollback; keyed by the version table, so owners migrate side by side.
        digest = hashlib.sha256(f"michi.migrations.{environment.version_table}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    elif connection.dialect.name == "sqlite":
        # pysqlite begins a transaction only before a write: take the write lock before looking.
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _known_revisions(config: Config) -> set[str]:
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


def _warn_about_differences(engine: Engine, environment: MigrationEnvironment) -> None:
    differences = schema_differences(engine, environment)
    if differences:
        logger.warning(
            "adopted tables differ from the models (made by an older create_all?)",
            extra={"migrations": environment.name, "differences": [str(item)[:300] for item in differences[:20]]},
        )


def _escaped(path: Path) -> str:
    # Alembic's configuration interpolates %(name)s.
    return str(path).replace("%", "%%")
