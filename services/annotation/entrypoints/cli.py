"""`michi annotators add|list|disable|enable|reset-password|rebuild`: annotation accounts from the command line.

    michi annotators add alice                 # prints alice's one-time password
    michi annotators add bob --role lead
    michi annotators rebuild                   # rebuild the live queues in Redis from SQL

Passwords are printed once and stored only as scrypt hashes. The actor in the audit trail is `$USER`.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

annotators_app = typer.Typer(help="Annotation accounts (annotators, leads, admins).", no_args_is_help=True)


def _actor() -> str:
    return os.environ.get("USER") or getpass.getuser()


@contextmanager
def _accounts(*, redis: bool = False) -> Iterator[Any]:
    from michi.settings import load_settings
    from services.annotation.adapters.queues import RedisQueues
    from services.annotation.handlers import Accounts, Refused
    from services.annotation.settings import AnnotationSettings
    from services.annotation.wiring import annotation_store, redis_client, service_config

    settings = load_settings(AnnotationSettings)
    store = annotation_store(settings)
    client = redis_client(settings) if redis else None
    try:
        queues = RedisQueues(client, settings.topic_prefix) if client is not None else None
        yield Accounts(store, queues, service_config(settings)), settings, store, queues  # type: ignore[arg-type]
    except Refused as error:
        typer.echo(f"michi: {error.detail}", err=True)
        raise typer.Exit(1) from error
    finally:
        if client is not None:
            client.close()
        store.close()


@annotators_app.command("add")
def add(
    name: str,
    role: str = typer.Option("annotator", help="annotator | lead | admin"),
) -> None:
    """Create an account and print its one-time password."""
    from services.annotation.domain.roles import Role

    try:
        chosen = Role(role)
    except ValueError as error:
        typer.echo(f"michi: role must be one of {', '.join(item.value for item in Role)}", err=True)
        raise typer.Exit(1) from error
    with _accounts() as (accounts, *_):
        typer.echo(accounts.add(name, chosen, actor=_actor()))


@annotators_app.command("list")
def list_annotators() -> None:
    """List accounts."""
    with _accounts() as (_, _settings, store, _queues):
        for record in store.annotators():
            state = "disabled" if record.disabled else "active"
            typer.echo(f"{record.name:24} {record.role.value:10} {state:9} {record.created_at:%Y-%m-%d %H:%M}")


@annotators_app.command("disable")
def disable(name: str) -> None:
    """Disable an account (its sessions end at once)."""
    with _accounts() as (accounts, *_):
        accounts.set_disabled(name, True, actor=_actor())
    typer.echo(f"disabled {name}")


@annotators_app.command("enable")
def enable(name: str) -> None:
    """Enable a disabled account again."""
    with _accounts() as (accounts, *_):
        accounts.set_disabled(name, False, actor=_actor())
    typer.echo(f"enabled {name}")


@annotators_app.command("reset-password")
def reset_password(name: str) -> None:
    """Give an account a new one-time password (printed once; its sessions end)."""
    with _accounts() as (accounts, *_):
        typer.echo(accounts.reset_password(name, actor=_actor()))


@annotators_app.command("rebuild")
def rebuild() -> None:
    """Rebuild the live queues in Redis from SQL (after a Redis loss; leases in flight are dropped)."""
    from services.annotation.handlers import AnnotationService
    from services.annotation.metrics import AnnotationMetrics

    with _accounts(redis=True) as (_, settings, store, queues):
        from services.annotation.wiring import service_config

        service = AnnotationService(
            store=store,
            queues=queues,
            publisher=_NoPublisher(),
            metrics=AnnotationMetrics(),
            config=service_config(settings),
        )
        typer.echo(f"rebuilt {service.rebuild(_actor())} tasks")


class _NoPublisher:
    """Rebuilding publishes nothing."""

    def publish(self, label: Any) -> Any:
        raise RuntimeError("the rebuild command publishes no labels")
