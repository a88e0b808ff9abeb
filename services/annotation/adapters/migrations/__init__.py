"""The migrations of the annotation service's tables (`annotation_*`): `MIGRATIONS`.

Revisions live in `versions/`, recorded in `alembic_version_annotation`; `michi.migrations` runs them.
A change to `services/annotation/adapters/tables.py` needs a revision here (`tools/new_migration.py annotation "what changed"`);
`tests/unit/test_migrations.py` fails until the head matches the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Table

from michi.migrations import MigrationEnvironment
from services.annotation.adapters.migrations.baseline import metadata as baseline


def _tables() -> Sequence[Table]:
    from services.annotation.adapters.tables import TABLES

    return tuple(row.__table__ for row in TABLES)  # type: ignore[union-attr]


MIGRATIONS = MigrationEnvironment(
    name="annotation",
    version_table="alembic_version_annotation",
    versions=Path(__file__).parent / "versions",
    baseline=baseline,
    tables=_tables,
)
