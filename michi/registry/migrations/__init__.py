"""The migrations of the model registry's tables (`registry_model_version`, `registry_stage_change`,
`registry_rollout`, `registry_rollout_decision`, `registry_rollout_candidate`).

Revisions live in `versions/`, recorded in `alembic_version_registry`; `michi.migrations` runs them.
A change to `michi/registry/tables.py` needs a revision here (`tools/new_migration.py registry "what changed"`);
`tests/unit/test_migrations.py` fails until the head matches the models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Table

from michi.migrations import MigrationEnvironment
from michi.registry.migrations.baseline import metadata as baseline


def _tables() -> Sequence[Table]:
    from michi.registry.tables import (
        ModelVersionRow,
        RolloutCandidateRow,
        RolloutDecisionRow,
        RolloutRow,
        StageChangeRow,
    )

    rows = (ModelVersionRow, StageChangeRow, RolloutRow, RolloutDecisionRow, RolloutCandidateRow)
    return tuple(row.__table__ for row in rows)  # type: ignore[union-attr]


MIGRATIONS = MigrationEnvironment(
    name="registry",
    version_table="alembic_version_registry",
    versions=Path(__file__).parent / "versions",
    baseline=baseline,
    tables=_tables,
)
