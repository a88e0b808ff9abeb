"""`SqlStore`: the engine every part of the annotation store shares, and how it writes.

Only portable SQLModel/SQLAlchemy; the URL is the only difference between SQLite (the default) and
PostgreSQL (production). Writers go through `_writing()`: on SQLite this process serialises its own
writers (WAL mode with a busy timeout covers other processes); on PostgreSQL a decision about one task
locks the task's row instead (`tasks.locked_task`).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Self

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

from michi.migrations import upgrade_to_head
from services.annotation.adapters.migrations import MIGRATIONS


def utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _switch_to_wal(cursor: Any, timeout_s: float = 30.0) -> None:
    # Switching a file to WAL needs it alone, and SQLite refuses at once, busy timeout or not, while another
    # process writes (another service migrating its tables at start-up): try again for as long as a writer waits.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


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
                _switch_to_wal(cursor)
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

        return cls(engine)

    def create_tables(self) -> None:
        """Bring this service's tables to the newest schema: Alembic `upgrade head` (`michi.migrations`).

        Only this service's tables (other owners migrate theirs); safe when many replicas start at once.
        """
        upgrade_to_head(self.engine, MIGRATIONS)

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
