"""The migrations of the rollout controller's tables (`rollouts_*`): `MIGRATIONS`.

Revisions live in `versions/`, recorded in `alembic_version_rollouts`; `michi.migrations` runs them.
A change to `services/rollouts/adapters/tables.py` needs a revision here
(`tools/new_migration.py rollouts "what changed"`); `tests/unit/test_migrations.py` fails until the head matches
the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Table

from michi.migrations import MigrationEnvironment
from services.rollouts.adapters.migrations.baseline import metadata as baseline


def _tables() -> Sequence[Table]:
    from services.rollouts.adapters.tables import ROLLOUTS_TABLES

    return tuple(row.__table__ for row in ROLLOUTS_TABLES)  # type: ignore[union-attr]


MIGRATIONS = MigrationEnvironment(
    name="rollouts",
    version_table="alembic_version_rollouts",
    versions=Path(__file__).parent / "versions",
    baseline=baseline,
    tables=_tables,
)
