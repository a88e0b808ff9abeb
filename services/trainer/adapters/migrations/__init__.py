"""The migrations of the trainer's tables (`trainer_*`): `MIGRATIONS`.

Revisions live in `versions/`, recorded in `alembic_version_trainer`; `michi.migrations` runs them.
A change to `services/trainer/adapters/tables.py` needs a revision here (`tools/new_migration.py trainer "what changed"`);
`tests/unit/test_migrations.py` fails until the head matches the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Table

from michi.migrations import MigrationEnvironment
from services.trainer.adapters.migrations.baseline import metadata as baseline


def _tables() -> Sequence[Table]:
    from services.trainer.adapters.tables import TRAINER_TABLES

    return tuple(row.__table__ for row in TRAINER_TABLES)  # type: ignore[union-attr]


MIGRATIONS = MigrationEnvironment(
    name="trainer",
    version_table="alembic_version_trainer",
    versions=Path(__file__).parent / "versions",
    baseline=baseline,
    tables=_tables,
)
