"""`michi db current|upgrade`: the SQL schema of each owner of tables (Alembic migrations, `michi.migrations`).

michi db current                   # each owner's revision and the newest this Michi knows
michi db upgrade                   # every owner's tables to head: what each service does when it starts
michi db upgrade trainer --database-url postgresql+psycopg://...   # one owner, on its own database

Owners: registry (model registry), ingest (device registry), annotation, trainer. The database is
`MICHI_DATABASE_URL` (else the embedded SQLite file) unless `--database-url` names another, for
services given databases of their own. Upgrading is safe while services run and start.
"""

from __future__ import annotations

from typing import Any, NoReturn

import typer

from michi.settings import MichiSettings, load_settings

database_app = typer.Typer(help="The SQL schema: each owner's tables and their migrations.", no_args_is_help=True)

OWNERS_HELP = "owners to act on (registry, ingest, annotation, trainer, monitor); all when none is given"
URL_HELP = "the database (default: MICHI_DATABASE_URL, else the embedded SQLite file)"


def _fail(message: str) -> NoReturn:
    typer.echo(f"michi: {message}", err=True)
    raise typer.Exit(1)


def _chosen(owners: list[str] | None) -> list[Any]:
    from michi.migrations import environment_named, environments

    if not owners:
        return list(environments())
    try:
        return [environment_named(owner) for owner in owners]
    except LookupError as error:
        _fail(str(error))


def _database_url(database_url: str | None) -> str:
    return database_url or load_settings(MichiSettings).resolved_database_url()


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@database_app.command("current")
def current(
    owners: list[str] | None = typer.Argument(None, help=OWNERS_HELP),
    database_url: str | None = typer.Option(None, help=URL_HELP),
) -> None:
    """Show each owner's schema revision, and the newest this Michi knows (head)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from michi.migrations import schema_state, sqlite_file

    url = _database_url(database_url)
    chosen = _chosen(owners)
    typer.echo(f"database: {_shown(url)}")
    file = sqlite_file(url)
    if file is not None and not file.exists():
        typer.echo("no database file yet: the services' first start (or michi db upgrade) creates it")
        return
    engine = create_engine(url)
    try:
        for environment in chosen:
            state = schema_state(engine, environment)
            if state.at_head:
                where = f"{state.current} (head)"
            elif state.current is not None:
                where = f"{state.current}, head {state.head}: michi db upgrade, or the owner's next start, upgrades"
            elif state.unversioned_tables:
                where = (
                    f"none: made before migrations ({len(state.unversioned_tables)} of its tables); michi db upgrade,"
                    f" or the owner's next start, stamps it as the baseline and upgrades to {state.head}"
                )
            else:
                where = f"none: no tables yet (head {state.head})"
            typer.echo(f"{environment.name:11} {where}")
    except SQLAlchemyError as error:
        _fail(f"cannot read the schema: {str(error).splitlines()[0]}")
    finally:
        engine.dispose()


@database_app.command("upgrade")
def upgrade(
    owners: list[str] | None = typer.Argument(None, help=OWNERS_HELP),
    database_url: str | None = typer.Option(None, help=URL_HELP),
) -> None:
    """Bring each owner's tables to head (what every service does as it starts; safe alongside them)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from michi.migrations import SchemaAheadOfCode, upgrade_to_head, with_database_folder

    url = _database_url(database_url)
    chosen = _chosen(owners)
    with_database_folder(url)
    typer.echo(f"database: {_shown(url)}")
    engine = create_engine(url)
    try:
        for environment in chosen:
            done = upgrade_to_head(engine, environment)
            if not done.changed:
                typer.echo(f"{environment.name:11} at {done.to_revision} (head): nothing to do")
                continue
            adopted = ""
            if done.adopted:
                created = f", created {', '.join(done.created)}" if done.created else ""
                adopted = f" (tables made before migrations: stamped as the baseline{created})"
            typer.echo(f"{environment.name:11} {done.from_revision or 'none'} -> {done.to_revision}{adopted}")
    except SchemaAheadOfCode as error:
        _fail(str(error))
    except SQLAlchemyError as error:
        _fail(f"cannot upgrade: {str(error).splitlines()[0]}")
    finally:
        engine.dispose()
