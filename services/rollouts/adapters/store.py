"""`RolloutsStore`: the rollout controller's random-QA windows per arm and each driven rollout's state in SQL
(the tables of `tables.py`).

Writes are idempotent: a random-QA window's prediction and label are kept once each (by window id and model
version: the first of each counts), a rollout's state is replaced whole (by rollout id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, func
from sqlalchemy import select as select_columns
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, create_engine, select

from michi.labels.outcomes import QaLabel, QaPrediction
from michi.labels.qa_windows import upsert_qa_window
from michi.migrations import upgrade_to_head
from services.rollouts.adapters.migrations import MIGRATIONS
from services.rollouts.adapters.tables import RolloutsProgressRow, RolloutsQaWindowRow
from services.rollouts.domain.figures import ArmCounts


class RolloutsStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, database_url: str) -> RolloutsStore:
        store = cls(create_engine(database_url, pool_pre_ping=True))
        upgrade_to_head(store.engine, MIGRATIONS)
        return store

    def close(self) -> None:
        self.engine.dispose()

    # --- random-QA windows

    def record_prediction(self, prediction: QaPrediction) -> None:
        def fill(row: RolloutsQaWindowRow) -> None:
            if row.predicted is None:
                row.predicted, row.predicted_at_s = prediction.predicted, prediction.predicted_at_s

        self._upsert(prediction.window_id, prediction.model_name, prediction.model_version, fill)

    def record_label(self, label: QaLabel) -> None:
        def fill(row: RolloutsQaWindowRow) -> None:
            if row.labelled is None:
                row.labelled, row.label_event_id = label.labelled, label.label_event_id

        self._upsert(label.window_id, label.model_name, label.model_version, fill)

    def _upsert(
        self, window_id: str, model_name: str, model_version: str, fill: Callable[[RolloutsQaWindowRow], None]
    ) -> None:
        upsert_qa_window(self.engine, RolloutsQaWindowRow, window_id, model_name, model_version, fill)

    def arm_counts(self, model_name: str, model_version: str, since_s: float) -> ArmCounts:
        labelled = col(RolloutsQaWindowRow.labelled).is_not(None)
        correct = labelled & (col(RolloutsQaWindowRow.labelled) == col(RolloutsQaWindowRow.predicted))
        statement = select_columns(
            func.count(),
            func.coalesce(func.sum(case((labelled, 1), else_=0)), 0),
            func.coalesce(func.sum(case((correct, 1), else_=0)), 0),
        ).where(
            col(RolloutsQaWindowRow.model_name) == model_name,
            col(RolloutsQaWindowRow.model_version) == model_version,
            col(RolloutsQaWindowRow.predicted).is_not(None),
            col(RolloutsQaWindowRow.predicted_at_s) >= since_s,
        )
        with Session(self.engine) as session:
            requested, labelled_count, correct_count = session.execute(statement).one()
        return ArmCounts(requested=int(requested), labelled=int(labelled_count), correct=int(correct_count))

    # --- each driven rollout's state

    def load(self, rollout_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.exec(select(RolloutsProgressRow).where(RolloutsProgressRow.rollout_id == rollout_id)).first()
            return dict(row.state) if row is not None else None

    def save(self, rollout_id: str, model_name: str, state: dict[str, Any]) -> None:
        for _ in range(2):
            with Session(self.engine) as session:
                row = session.exec(
                    select(RolloutsProgressRow).where(RolloutsProgressRow.rollout_id == rollout_id)
                ).first()
                if row is None:
                    row = RolloutsProgressRow(
                        rollout_id=rollout_id, model_name=model_name, updated_at=datetime.now(UTC)
                    )
                # A new dict: SQLAlchemy sees a changed JSON value only when it is another object.
                row.state = dict(state)
                row.updated_at = datetime.now(UTC)
                session.add(row)
                try:
                    session.commit()
                    return
                except IntegrityError:
                    session.rollback()
        raise RuntimeError(f"the state of rollout {rollout_id} could not be stored")

    def forget(self, rollout_id: str) -> None:
        with Session(self.engine) as session:
            session.execute(delete(RolloutsProgressRow).where(col(RolloutsProgressRow.rollout_id) == rollout_id))
            session.commit()

    def forget_except(self, rollout_ids: Iterable[str]) -> list[str]:
        keep = set(rollout_ids)
        with Session(self.engine) as session:
            known = session.exec(select(RolloutsProgressRow.rollout_id)).all()
            gone = sorted(rollout_id for rollout_id in known if rollout_id not in keep)
            if gone:
                session.execute(delete(RolloutsProgressRow).where(col(RolloutsProgressRow.rollout_id).in_(gone)))
                session.commit()
        return gone
