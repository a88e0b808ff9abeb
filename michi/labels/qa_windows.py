"""Keeping a random-QA window in SQL: one row per window and model version, filled side by side as the
request and the label come (the monitor's `monitor_qa_window` and the rollout controller's
`rollouts_qa_window` hold the same rows, in their own tables).

    upsert_qa_window(engine, RolloutsQaWindowRow, window_id, model_name, model_version, fill)

`fill(row)` sets the side that arrived, and only if it is still empty, so a redelivered request or label
changes nothing and the first label of a window counts. Two writers inserting the same window at once: the
loser's insert breaks the table's unique (window id, model version) constraint and it updates the winner's
row instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select


class QaWindowRow(Protocol):
    """The columns every random-QA window table has (its table class is a SQLModel with these fields)."""

    window_id: str
    model_name: str
    model_version: str
    received_at: datetime

    def __init__(self, **values: Any) -> None: ...


Row = TypeVar("Row", bound=QaWindowRow)


def upsert_qa_window(
    engine: Engine,
    table: type[Row],
    window_id: str,
    model_name: str,
    model_version: str,
    fill: Callable[[Row], None],
) -> None:
    """Insert the window's row of `table` or update it, with `fill` applied; retried once when a concurrent
    writer inserted the same window first."""
    for _ in range(2):
        with Session(engine) as session:
            row = session.exec(
                select(table).where(col(table.window_id) == window_id).where(col(table.model_version) == model_version)
            ).first()
            if row is None:
                row = table(
                    window_id=window_id,
                    model_name=model_name,
                    model_version=model_version,
                    received_at=datetime.now(UTC),
                )
            fill(row)
            session.add(row)
            try:
                session.commit()
                return
            except IntegrityError:
                session.rollback()
    raise RuntimeError(f"random-QA window {window_id} of {model_version} could not be stored")
