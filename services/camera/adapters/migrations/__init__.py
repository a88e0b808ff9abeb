"""The migrations of the camera service's tables (`camera_*`): `MIGRATIONS`.

Revisions live in `versions/`, recorded in `alembic_version_camera`; `michi.migrations` runs them.
A change to `services/camera/adapters/tables.py` needs a revision here
(`tools/new_migration.py camera "what changed"`); `tests/unit/test_migrations.py` fails until the head matches
the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Table

from michi.migrations import MigrationEnvironment
from services.camera.adapters.migrations.baseline import metadata as baseline


def _tables() -> Sequence[Table]:
    from services.camera.adapters.tables import CAMERA_TABLES

    return tuple(row.__table__ for row in CAMERA_TABLES)  # type: ignore[union-attr]


MIGRATIONS = MigrationEnvironment(
    name="camera",
    version_table="alembic_version_camera",
    versions=Path(__file__).parent / "versions",
    baseline=baseline,
    tables=_tables,
)
