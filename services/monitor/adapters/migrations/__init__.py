"""The migrations of the monitor's tables (`monitor_*`): `MIGRATIONS`.

Revisions live in `versions/`, recorded in `alembic_version_monitor`; `michi.migrations` runs them.
A change to `services/monitor/adapters/tables.py` needs a revision here (`tools/new_migration.py monitor "what changed"`);
`tests/unit/test_migrations.py` fails until the head matches the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Table

from michi.migrations import MigrationEnvironment
from services.monitor.adapters.migrations.baseline import metadata as baseline


def _tables() -> Sequence[Table]:
    from services.monitor.adapters.tables import MONITOR_TABLES

    return tuple(row.__table__ for row in MONITOR_TABLES)  # type: ignore[union-attr]


MIGRATIONS = MigrationEnvironment(
    name="monitor",
    version_table="alembic_version_monitor",
    versions=Path(__file__).parent / "versions",
    baseline=baseline,
    tables=_tables,
)
