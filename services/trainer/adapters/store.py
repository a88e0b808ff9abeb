"""`TrainerStore`: labels, alerts, runs and steps in SQL (the tables of `tables.py`).

Label and alert writes are idempotent by event id: a batch first reads which ids exist, inserts the
rest, and when a concurrent writer won a race (unique constraint) falls back to one row at a time.
Runs and steps are written as the workflow goes, so a crash mid-run leaves a visible `running` row
(marked `failed` — "interrupted" — when the service starts again).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, create_engine, select

from michi.bus.headers import current_traceparent
from michi.migrations import upgrade_to_head
from services.trainer.adapters.migrations import MIGRATIONS
from services.trainer.adapters.tables import (
    TrainerAlertRow,
    TrainerLabelRow,
    TrainerRunRow,
    TrainerStepRow,
)
from services.trainer.domain.labels import HUMAN_SOURCES, WindowLabel
from services.trainer.domain.triggers import ALERT, Trigger

# Who the trainer is in the registry's records: the actor of the stage changes it asks for and the `created_by` of
# the versions it registers. Here, beside the trainer's records, because `handlers.py` imports PyTorch and readers
# of those records (`michi maturity`) must not.
TRAINER_ACTOR = "trainer"


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class StepRecord:
    run_id: str
    sequence: int
    name: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    seconds: float | None
    error: str
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "name": self.name,
            "status": self.status,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "seconds": self.seconds,
            "error": self.error,
            "details": self.details,
        }


@dataclass(frozen=True)
class AlertRecord:
    """A retrain alert the trainer received, and the run it started (None: none yet)."""

    event_id: str
    kind: str
    message: str
    received_at: datetime
    run_id: str | None


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    model_name: str
    trigger: str
    trigger_reason: str
    status: str
    status_reason: str
    started_at: datetime
    finished_at: datetime | None
    code_version: str
    data_version: str
    parameters: dict[str, Any]
    metrics: dict[str, Any]
    champion_metrics: dict[str, Any]
    gate: dict[str, Any]
    registered_version: str | None
    stage: str | None
    artifact_uri: str
    experiment_uri: str
    label_watermark: int
    experiment: dict[str, Any]
    experiment_markdown: str
    steps: list[StepRecord] = field(default_factory=list)

    def to_json(self, *, with_record: bool = False) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "run_id": self.run_id,
            "model_name": self.model_name,
            "trigger": self.trigger,
            "trigger_reason": self.trigger_reason,
            "status": self.status,
            "status_reason": self.status_reason,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "code_version": self.code_version,
            "data_version": self.data_version,
            "parameters": self.parameters,
            "metrics": self.metrics,
            "champion_metrics": self.champion_metrics,
            "gate": self.gate,
            "registered_version": self.registered_version,
            "stage": self.stage,
            "artifact_uri": self.artifact_uri,
            "experiment_uri": self.experiment_uri,
            "steps": [step.to_json() for step in self.steps],
        }
        if with_record:
            shown["experiment"] = self.experiment
            shown["experiment_markdown"] = self.experiment_markdown
        return shown


def _step_record(row: TrainerStepRow) -> StepRecord:
    return StepRecord(
        run_id=row.run_id,
        sequence=row.sequence,
        name=row.name,
        status=row.status,
        started_at=_utc(row.started_at) or row.started_at,
        finished_at=_utc(row.finished_at),
        seconds=row.seconds,
        error=row.error,
        details=dict(row.details),
    )


def _run_record(row: TrainerRunRow, steps: Sequence[TrainerStepRow] = ()) -> RunRecord:
    return RunRecord(
        run_id=row.run_id,
        model_name=row.model_name,
        trigger=row.trigger,
        trigger_reason=row.trigger_reason,
        status=row.status,
        status_reason=row.status_reason,
        started_at=_utc(row.started_at) or row.started_at,
        finished_at=_utc(row.finished_at),
        code_version=row.code_version,
        data_version=row.data_version,
        parameters=dict(row.parameters),
        metrics=dict(row.metrics),
        champion_metrics=dict(row.champion_metrics),
        gate=dict(row.gate),
        registered_version=row.registered_version,
        stage=row.stage,
        artifact_uri=row.artifact_uri,
        experiment_uri=row.experiment_uri,
        label_watermark=row.label_watermark,
        experiment=dict(row.experiment),
        experiment_markdown=row.experiment_markdown,
        steps=[_step_record(step) for step in steps],
    )


class TrainerStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, database_url: str) -> TrainerStore:
        store = cls(create_engine(database_url, pool_pre_ping=True))
        store.create_tables()
        return store

    def create_tables(self) -> None:
        """Bring the trainer's tables to the newest schema: Alembic `upgrade head` (`michi.migrations`)."""
        upgrade_to_head(self.engine, MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    # --- labels

    def add_labels(self, labels: Sequence[WindowLabel]) -> int:
        """Store labels not seen before (by event id); returns how many were new."""
        unique = {label.event_id: label for label in labels}
        if not unique:
            return 0
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            existing = set(
                session.exec(
                    select(TrainerLabelRow.event_id).where(col(TrainerLabelRow.event_id).in_(list(unique)))
                ).all()
            )
            fresh = [label for event_id, label in unique.items() if event_id not in existing]
            try:
                session.add_all([_label_row(label, now) for label in fresh])
                session.commit()
                return len(fresh)
            except IntegrityError:
                session.rollback()
        added = 0
        for label in fresh:  # a concurrent writer stored some of them: one at a time
            with Session(self.engine) as session:
                try:
                    session.add(_label_row(label, now))
                    session.commit()
                    added += 1
                except IntegrityError:
                    session.rollback()
        return added

    def labels(self, up_to: int | None = None) -> builtins.list[WindowLabel]:
        """Every stored label (with row id ≤ `up_to` when given: what a run started at that watermark sees)."""
        with Session(self.engine) as session:
            statement = select(TrainerLabelRow)
            if up_to is not None:
                statement = statement.where(col(TrainerLabelRow.id) <= up_to)
            rows = session.exec(statement.order_by(col(TrainerLabelRow.id))).all()
            return [
                WindowLabel(
                    event_id=row.event_id,
                    window_id=row.window_id,
                    upload_id=row.upload_id,
                    device_id=row.device_id,
                    trip_id=row.trip_id,
                    driver_id=row.driver_id,
                    event_type=row.event_type,
                    source=row.source,
                    occurred_at_s=row.occurred_at_s,
                    window_started_at_s=row.window_started_at_s,
                    window_ended_at_s=row.window_ended_at_s,
                )
                for row in rows
            ]

    def label_watermark(self) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.max(TrainerLabelRow.id))).one() or 0)

    def human_labels_above(self, watermark: int) -> int:
        with Session(self.engine) as session:
            statement = select(func.count()).where(
                col(TrainerLabelRow.id) > watermark, col(TrainerLabelRow.source).in_(sorted(HUMAN_SOURCES))
            )
            return int(session.exec(statement).one() or 0)

    # --- alerts

    def add_alert(self, event_id: str, kind: str, message: str) -> bool:
        """Store a retrain alert once; False when its event id was already stored.

        Kept with the traceparent of the span it is stored in (the alert's consumer span), which the run's span
        links to.
        """
        with Session(self.engine) as session:
            try:
                session.add(
                    TrainerAlertRow(
                        event_id=event_id,
                        kind=kind,
                        message=message[:2000],
                        received_at=datetime.now(UTC),
                        traceparent=current_traceparent() or None,
                    )
                )
                session.commit()
                return True
            except IntegrityError:
                session.rollback()
                return False

    def pending_alert(self) -> Trigger | None:
        with Session(self.engine) as session:
            row = session.exec(
                select(TrainerAlertRow).where(col(TrainerAlertRow.run_id).is_(None)).order_by(col(TrainerAlertRow.id))
            ).first()
            if row is None:
                return None
            return Trigger(
                ALERT,
                f"alert {row.kind}: {row.message}".strip(),
                alert_event_id=row.event_id,
                traceparent=row.traceparent or "",
            )

    def claim_alert(self, event_id: str, run_id: str) -> None:
        with Session(self.engine) as session:
            row = session.exec(select(TrainerAlertRow).where(TrainerAlertRow.event_id == event_id)).first()
            if row is not None and row.run_id is None:
                row.run_id = run_id
                session.add(row)
                session.commit()

    def alert(self, event_id: str) -> AlertRecord | None:
        """The retrain alert of `event_id` as received, or None when the trainer never received it."""
        with Session(self.engine) as session:
            row = session.exec(select(TrainerAlertRow).where(TrainerAlertRow.event_id == event_id)).first()
            if row is None:
                return None
            return AlertRecord(
                event_id=row.event_id,
                kind=row.kind,
                message=row.message,
                received_at=_utc(row.received_at) or row.received_at,
                run_id=row.run_id,
            )

    # --- runs

    def start_run(self, row: TrainerRunRow) -> None:
        with Session(self.engine) as session:
            session.add(row)
            session.commit()

    def update_run(self, run_id: str, **values: Any) -> None:
        with Session(self.engine) as session:
            row = session.exec(select(TrainerRunRow).where(TrainerRunRow.run_id == run_id)).one()
            for key, value in values.items():
                setattr(row, key, value)
            session.add(row)
            session.commit()

    def start_step(self, run_id: str, sequence: int, name: str, started_at: datetime) -> None:
        with Session(self.engine) as session:
            session.add(
                TrainerStepRow(run_id=run_id, sequence=sequence, name=name, status="running", started_at=started_at)
            )
            session.commit()

    def finish_step(
        self,
        run_id: str,
        sequence: int,
        status: str,
        *,
        seconds: float | None,
        error: str = "",
        details: dict[str, Any] | None = None,
    ) -> None:
        with Session(self.engine) as session:
            row = session.exec(
                select(TrainerStepRow).where(TrainerStepRow.run_id == run_id, TrainerStepRow.sequence == sequence)
            ).one()
            row.status = status
            row.finished_at = datetime.now(UTC)
            row.seconds = seconds
            row.error = error
            row.details = details or {}
            session.add(row)
            session.commit()

    def run(self, run_id: str) -> RunRecord | None:
        with Session(self.engine) as session:
            row = session.exec(select(TrainerRunRow).where(TrainerRunRow.run_id == run_id)).first()
            if row is None:
                return None
            steps = session.exec(
                select(TrainerStepRow).where(TrainerStepRow.run_id == run_id).order_by(col(TrainerStepRow.sequence))
            ).all()
            return _run_record(row, steps)

    def run_facts(self, run_id: str) -> dict[str, Any]:
        """Everything the run recorded (`facts`: the training's loss curve, the export's parity); empty for a run
        that recorded none or that the store does not hold."""
        with Session(self.engine) as session:
            facts = session.exec(select(TrainerRunRow.facts).where(TrainerRunRow.run_id == run_id)).first()
        return dict(facts or {})

    def runs(self, *, model_name: str | None = None, limit: int = 50) -> builtins.list[RunRecord]:
        """Newest first."""
        with Session(self.engine) as session:
            statement = select(TrainerRunRow)
            if model_name is not None:
                statement = statement.where(TrainerRunRow.model_name == model_name)
            rows = session.exec(statement.order_by(col(TrainerRunRow.id).desc()).limit(limit)).all()
            return [_run_record(row) for row in rows]

    def last_run(self, model_name: str, *, counted_only: bool = True) -> RunRecord | None:
        """The latest run that trained (dry runs and runs that never started training do not count)."""
        with Session(self.engine) as session:
            statement = select(TrainerRunRow).where(TrainerRunRow.model_name == model_name)
            if counted_only:
                statement = statement.where(TrainerRunRow.status != "dry-run")
            row = session.exec(statement.order_by(col(TrainerRunRow.id).desc())).first()
            return _run_record(row) if row is not None else None

    def mark_interrupted(self, model_name: str) -> builtins.list[str]:
        """Runs left `running` by a process that died: failed, with the reason."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(TrainerRunRow).where(TrainerRunRow.model_name == model_name, TrainerRunRow.status == "running")
            ).all()
            for row in rows:
                row.status = "failed"
                row.status_reason = "interrupted: the trainer stopped while the run was going"
                row.finished_at = datetime.now(UTC)
                session.add(row)
            session.commit()
            return [row.run_id for row in rows]


def _label_row(label: WindowLabel, received_at: datetime) -> TrainerLabelRow:
    return TrainerLabelRow(
        event_id=label.event_id,
        window_id=label.window_id,
        upload_id=label.upload_id,
        device_id=label.device_id,
        trip_id=label.trip_id,
        driver_id=label.driver_id,
        event_type=label.event_type,
        source=label.source,
        occurred_at_s=label.occurred_at_s,
        window_started_at_s=label.window_started_at_s,
        window_ended_at_s=label.window_ended_at_s,
        received_at=received_at,
    )
