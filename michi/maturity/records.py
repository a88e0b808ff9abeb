"""`InstallationRecords`: this installation's records, read through the stores that own them.

Every store is opened on the one database (`MichiSettings.resolved_database_url()`) without migrating it: a
report writes nothing, and a SQLite file that does not exist is not created (everything then reads as empty).
A store whose tables are missing is `None` (its service never ran against this database). The blob store (the
warehouse) and the trace files are read only by the criteria that need them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from michi.registry import ModelRegistry
    from services.annotation.adapters.store import AnnotationStore
    from services.monitor.adapters.store import MonitorStore
    from services.trainer.adapters.store import TrainerStore

# One table each owner always creates: present means the owner's migrations ran on this database.
REGISTRY_TABLE = "registry_model_version"
TRAINER_TABLE = "trainer_run"
MONITOR_TABLE = "monitor_drift_episode"
ANNOTATION_TABLE = "annotation_task"


class StoresUnavailable(RuntimeError):
    """The database cannot be opened: nothing can be read (the CLI exits 1 with this message)."""


@dataclass(frozen=True)
class TrainingTriggers:
    """The trainer's trigger settings of this installation (`MICHI_TRAINER_LABEL_TRIGGER`, `_SCHEDULE_S`)."""

    label_count: int
    schedule_s: float

    def describe(self) -> str:
        labels = f"every {self.label_count} new human labels" if self.label_count else "new labels off"
        schedule = f"every {self.schedule_s / 86_400:g} d" if self.schedule_s else "schedule off"
        return f"{labels}, {schedule}, on retrain alerts"


class InstallationRecords:
    """The registry, trainer, monitor and annotation stores over one engine, plus where blobs and traces are."""

    def __init__(
        self,
        engine: Engine | None,
        *,
        database: str,
        blob_url: str,
        home: Path,
        triggers: TrainingTriggers,
        model_name: str,
    ) -> None:
        self.engine = engine
        self.database = database
        self.blob_url = blob_url
        self.home = home
        self.triggers = triggers
        # The model the trainer trains (`MICHI_TRAINER_MODEL_NAME`): preferred where one model must be chosen.
        self.model_name = model_name
        self.tables: frozenset[str] = frozenset()
        if engine is not None:
            try:
                self.tables = frozenset(inspect(engine).get_table_names())
            except SQLAlchemyError as error:
                engine.dispose()
                raise StoresUnavailable(f"cannot open the database {database}: {_first_line(error)}") from error

    @classmethod
    def open(
        cls, database_url: str, *, blob_url: str, home: Path, triggers: TrainingTriggers, model_name: str
    ) -> InstallationRecords:
        """The records of the installation on `database_url`; `StoresUnavailable` when it cannot be opened."""
        try:
            url = make_url(database_url)
        except Exception as error:  # sqlalchemy raises ArgumentError, or ValueError for a bad port
            raise StoresUnavailable(f"cannot read the database URL: {error}") from error
        shown = url.render_as_string(hide_password=True)
        file = url.database if url.drivername.startswith("sqlite") and url.database not in ("", ":memory:") else None
        if file is not None and not Path(file).exists():
            # Not created by reading it: an installation that never ran has no records.
            return cls(None, database=shown, blob_url=blob_url, home=home, triggers=triggers, model_name=model_name)
        try:
            engine = create_engine(database_url, pool_pre_ping=True)
        except Exception as error:  # a driver that is not installed, an unknown dialect
            raise StoresUnavailable(f"cannot open the database {shown}: {_first_line(error)}") from error
        return cls(engine, database=shown, blob_url=blob_url, home=home, triggers=triggers, model_name=model_name)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()

    def missing(self, owner: str) -> str:
        """Why an owner's records are absent: no database at all, or none of its tables in it."""
        if self.engine is None:
            return f"no database at {self.database}: nothing ran in this installation yet"
        return f"no {owner} tables in {self.database}: the {owner} never wrote here"

    @cached_property
    def registry(self) -> ModelRegistry | None:
        if self.engine is None or REGISTRY_TABLE not in self.tables:
            return None
        from michi.registry import ModelRegistry

        return ModelRegistry(self.engine)  # no producer: read-only for stages

    @cached_property
    def trainer(self) -> TrainerStore | None:
        if self.engine is None or TRAINER_TABLE not in self.tables:
            return None
        from services.trainer.adapters.store import TrainerStore

        return TrainerStore(self.engine)

    @cached_property
    def monitor(self) -> MonitorStore | None:
        if self.engine is None or MONITOR_TABLE not in self.tables:
            return None
        from services.monitor.adapters.store import MonitorStore

        return MonitorStore(self.engine)

    @cached_property
    def annotation(self) -> AnnotationStore | None:
        if self.engine is None or ANNOTATION_TABLE not in self.tables:
            return None
        from services.annotation.adapters.store import AnnotationStore

        return AnnotationStore(self.engine)

    def model_names(self) -> list[str]:
        """Every registered model, the trainer's first."""
        if self.registry is None:
            return []
        names = sorted({version.name for version in self.registry.list()})
        return sorted(names, key=lambda name: name != self.model_name)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
