"""Alembic's environment script for every owner's migrations; alembic runs it, never a person.

`michi.migrations` passes the owner's environment and a connection already in a transaction and
holding the lock (`config.attributes`), so there is no URL and no offline (`--sql`) mode here:
`michi db upgrade` and each store's start-up are the ways in.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel.sql.sqltypes import AutoString

environment = context.config.attributes["environment"]
connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("michi: migrations run on a connection: use `michi db upgrade`")


def render_item(type_: str, item: Any, _autogen_context: AutogenContext) -> str | Literal[False]:
    # SQLModel's str columns are plain VARCHARs; a new revision should not need sqlmodel to run.
    if type_ == "type" and isinstance(item, AutoString):
        return f"sa.String(length={item.length})" if item.length is not None else "sa.String()"
    return False


context.configure(
    connection=connection,
    target_metadata=environment.metadata(),
    version_table=environment.version_table,
    include_name=environment.include_name,
    compare_type=True,
    compare_server_default=True,
    render_item=render_item,
    # SQLite alters a table by copying it: revisions written this way run on SQLite and PostgreSQL alike.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
