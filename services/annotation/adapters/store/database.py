"""`SqlStore`: the engine every part of the annotation store shares, and how it writes.

Only portable SQLModel/SQLAlchemy; the URL is the only difference between SQLite (the default) and
PostgreSQL (production). Writers go through `_writing()`: on SQLite this process serialises its own
writers (WAL mode with a busy timeout covers other processes); on PostgreSQL a decision about one task
locks the task's row instead (`tasks.locked_task`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Self

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel, create_engine

from services.annotation.adapters.tables import TABLES


def utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class SqlStore:
    """One engine and its writer discipline; the aggregate stores derive from it and share one instance."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = engine.dialect.name == "sqlite"
        # SQLite takes one writer at a time: this process queues its own writers instead of failing.
        self._write_lock: threading.Lock | None = threading.Lock() if self.sqlite else None

    @classmethod
    def from_url(cls, database_url: str) -> Self:
        url = make_url(database_url)
        arguments: dict[str, Any] = {"pool_pre_ping": True}
        if url.drivername.startswith("sqlite"):
            arguments["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            arguments.update(pool_size=10, max_overflow=20)
        engine = create_engine(database_url, **arguments)
        if url.drivername.startswith("sqlite"):

            @event.listens_for(engine, "connect")
            def _pragmas(connection: Any, _record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        return cls(engine)

    def create_tables(self) -> None:
        # Only this service's tables: other services' SQLModel tables are theirs to create.
        SQLModel.metadata.create_all(self.engine, tables=[table.__table__ for table in TABLES])  # type: ignore[attr-defined,union-attr]

    def close(self) -> None:
        self.engine.dispose()

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Session]:
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
        finally:
            if lock is not None:
                lock.release()
