"""Every owner's head migration matches its models: a model change without a revision fails here.

Each owner's revisions are run on an empty SQLite file and compared with its SQLModel tables by
alembic's autogenerate (`michi.migrations.schema_differences`). When this fails, write the revision:
`.venv/bin/python tools/new_migration.py <owner> "what changed"`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, Engine, MetaData, String, create_engine, text

from michi.migrations import (
    MigrationEnvironment,
    SchemaAheadOfCode,
    environments,
    head_revision,
    schema_differences,
    upgrade_to_head,
)

ENVIRONMENTS = environments()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    built = create_engine(f"sqlite:///{tmp_path / 'michi.db'}")
    try:
        yield built
    finally:
        built.dispose()


@pytest.mark.parametrize("environment", ENVIRONMENTS, ids=lambda environment: environment.name)
def test_the_head_migration_matches_the_models(environment: MigrationEnvironment, engine: Engine) -> None:
    upgrade_to_head(engine, environment)
    differences = schema_differences(engine, environment)
    assert differences == [], (
        f"the {environment.name} models differ from its head migration: {differences}; write a revision with"
        f' tools/new_migration.py {environment.name} "what changed"'
    )


def test_a_model_change_without_a_revision_is_found(engine: Engine) -> None:
    trainer = next(environment for environment in ENVIRONMENTS if environment.name == "trainer")
    upgrade_to_head(engine, trainer)
    changed = MetaData()
    for table in trainer.tables():
        copy = table.to_metadata(changed)
        if copy.name == "trainer_run":
            copy.append_column(Column("notes", String(length=200), nullable=True))
        if copy.name == "trainer_alert":
            copy.c.kind.type = String(length=256)
    edited = dataclasses.replace(trainer, tables=lambda: tuple(changed.tables.values()))
    assert _changes(edited, engine) == {("add_column", "trainer_run"), ("modify_type", "trainer_alert")}


def _changes(environment: MigrationEnvironment, engine: Engine) -> set[tuple[str, str]]:
    """(kind, table) of each difference; changes of one column come as a list of them."""
    flat = []
    for item in schema_differences(engine, environment):
        flat.extend(item if isinstance(item, list) else [item])
    return {(change[0], change[2]) for change in flat}


def test_owners_keep_apart_in_one_database() -> None:
    names = [environment.name for environment in ENVIRONMENTS]
    assert names == ["registry", "ingest", "annotation", "trainer", "monitor", "rollouts", "camera"]
    version_tables = [environment.version_table for environment in ENVIRONMENTS]
    assert version_tables == [f"alembic_version_{name}" for name in names]
    owned = [table for environment in ENVIRONMENTS for table in environment.table_names()]
    assert len(owned) == len(set(owned)), "a table belongs to two owners"


@pytest.mark.parametrize("environment", ENVIRONMENTS, ids=lambda environment: environment.name)
def test_revisions_ship_inside_the_package(environment: MigrationEnvironment) -> None:
    # A folder with __init__.py is a package setuptools puts in the wheel, so an installed Michi can migrate.
    assert (environment.versions / "__init__.py").is_file()
    revisions = sorted(path.name for path in environment.versions.glob("*.py") if path.name != "__init__.py")
    assert revisions[0] == "v0001_baseline.py"
    assert all(re.fullmatch(r"v\d{4}_[a-z0-9_]+\.py", name) for name in revisions), revisions
    assert head_revision(environment) == revisions[-1][1:5]


def test_a_database_ahead_of_the_code_stops_the_start(engine: Engine) -> None:
    registry = ENVIRONMENTS[0]
    upgrade_to_head(engine, registry)
    with engine.begin() as connection:
        connection.execute(text(f"UPDATE {registry.version_table} SET version_num = '9999'"))
    with pytest.raises(SchemaAheadOfCode, match="revision 9999"):
        upgrade_to_head(engine, registry)
