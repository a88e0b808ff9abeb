"""The migrations of the device registry's tables (`ingest_device`, `ingest_device_registry`).

Revisions live in `versions/`, recorded in `alembic_version_ingest`; `michi.migrations` runs them.
A change to `services/ingest/adapters/devices.py` needs a revision here (`tools/new_migration.py ingest "what changed"`);
`tests/unit/test_migrations.py` fails until the head matches the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Table

from michi.migrations import MigrationEnvironment
from services.ingest.adapters.migrations.baseline import metadata as baseline


def _tables() -> Sequence[Table]:
    from services.ingest.adapters.devices import Device, DeviceRegistryVersion

    return (Device.__table__, DeviceRegistryVersion.__table__)  # type: ignore[attr-defined]


MIGRATIONS = MigrationEnvironment(
    name="ingest",
    version_table="alembic_version_ingest",
    versions=Path(__file__).parent / "versions",
    baseline=baseline,
    tables=_tables,
)
