"""`RolloutsStore`: the rollout controller's random-QA windows per arm, the arms' other signals (trip segments,
detections, window labels, inference errors, drift episodes) and each driven rollout's state in SQL (the tables
of `tables.py`).

Writes are idempotent and batched: a batch's random-QA requests and labels are written in one transaction, each
window's prediction and label kept once (by window id and model version: the first of each counts); a batch of
signals is written in one transaction, each row once by its own
id (a redelivered one changes nothing; a drift episode's firing and resolve fill its two times once each); a
rollout's state is replaced whole (by rollout id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import case, delete, func
from sqlalchemy import select as select_columns
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import Session, col, create_engine, select

from michi.labels.outcomes import QaLabel, QaPrediction
from michi.migrations import upgrade_to_head
from services.rollouts.adapters.migrations import MIGRATIONS
from services.rollouts.adapters.tables import (
    RolloutsDetectionRow,
    RolloutsDriftEpisodeRow,
    RolloutsErrorRow,
    RolloutsProgressRow,
    RolloutsQaWindowRow,
    RolloutsSegmentRow,
    RolloutsWindowLabelRow,
)
from services.rollouts.domain.figures import ArmCounts, ArmDetections, DeviceTotals
from services.rollouts.domain.signals import NOT_RISKY, RESOLVED, SignalBatch

# Rows per `INSERT` statement when a batch is written (bounded for every database's limits on bound parameters).
_WRITE_CHUNK = 500


@dataclass
class _Outcome:
    """What a batch says of one random-QA window of one model version (None: that side did not come)."""

    model_name: str
    predicted: int | None = None
    predicted_at_s: float | None = None
    labelled: int | None = None
    label_event_id: str | None = None


def awaiting_promotion(database_url: str, rollout_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Per rollout id, the end the controller holds for a person under `promotion: manual` (when it would have
    promoted, why, its evidence), for `michi rollouts status`. Read-only: no migration is applied, and a database
    the controller never ran on holds none."""
    wanted = list(rollout_ids)
    if not wanted:
        return {}
    engine = create_engine(database_url)
    try:
        with Session(engine) as session:
            rows = session.exec(
                select(RolloutsProgressRow).where(col(RolloutsProgressRow.rollout_id).in_(wanted))
            ).all()
            return {
                row.rollout_id: dict(row.state["awaiting_promotion"])
                for row in rows
                if isinstance(row.state.get("awaiting_promotion"), dict)
            }
    except (OperationalError, ProgrammingError):  # no `rollouts_progress` table: the controller never ran here
        return {}
    finally:
        engine.dispose()


def _insert(engine: Engine | Connection, table: Any) -> Any:
    """The dialect's `INSERT` for `table` (the one with `ON CONFLICT`): SQLite's or PostgreSQL's."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    if engine.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"the rollout controller keeps its state in SQLite or PostgreSQL, not {engine.dialect.name}")


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
        self.record_outcomes([prediction], [])

    def record_label(self, label: QaLabel) -> None:
        self.record_outcomes([], [label])

    def record_outcomes(self, predictions: Sequence[QaPrediction], labels: Sequence[QaLabel]) -> None:
        """Keep a batch's random-QA requests and labels in one transaction, each window once per model version:
        a side already filled is never overwritten (the first request and the first label count, in the batch as
        across batches), so a redelivered batch changes nothing. One upsert per window (`INSERT .. ON CONFLICT DO
        UPDATE` filling only the empty sides), in window order: controllers writing overlapping batches at once
        neither fail nor deadlock, whoever commits first."""
        windows: dict[tuple[str, str], _Outcome] = {}
        for prediction in predictions:
            outcome = windows.setdefault(
                (prediction.window_id, prediction.model_version), _Outcome(prediction.model_name)
            )
            if outcome.predicted is None:
                outcome.predicted, outcome.predicted_at_s = prediction.predicted, prediction.predicted_at_s
        for label in labels:
            outcome = windows.setdefault((label.window_id, label.model_version), _Outcome(label.model_name))
            if outcome.labelled is None:
                outcome.labelled, outcome.label_event_id = label.labelled, label.label_event_id
        if not windows:
            return
        now = datetime.now(UTC)
        rows = [
            {
                "window_id": window_id,
                "model_name": outcome.model_name,
                "model_version": model_version,
                "predicted": outcome.predicted,
                "predicted_at_s": outcome.predicted_at_s,
                "labelled": outcome.labelled,
                "label_event_id": outcome.label_event_id,
                "received_at": now,
            }
            for (window_id, model_version), outcome in sorted(windows.items())
        ]
        table = RolloutsQaWindowRow.__table__.c  # type: ignore[attr-defined]
        statement = _insert(self.engine, RolloutsQaWindowRow)
        new = statement.excluded

        def unless_filled(side: Any, value: Any, column: Any) -> Any:
            # Every SET sees the row as it was: a side is filled only if it was empty.
            return case((side.is_(None), value), else_=column)

        statement = statement.on_conflict_do_update(
            index_elements=["window_id", "model_version"],
            set_={
                "predicted": unless_filled(table.predicted, new.predicted, table.predicted),
                "predicted_at_s": unless_filled(table.predicted, new.predicted_at_s, table.predicted_at_s),
                "labelled": unless_filled(table.labelled, new.labelled, table.labelled),
                "label_event_id": unless_filled(table.labelled, new.label_event_id, table.label_event_id),
            },
        )
        with Session(self.engine) as session:
            for start in range(0, len(rows), _WRITE_CHUNK):
                session.execute(statement, rows[start : start + _WRITE_CHUNK])
            session.commit()

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

    # --- the arms' other signals

    def record_signals(self, batch: SignalBatch) -> None:
        """Keep a batch's signals in one transaction, each once by its id (`INSERT .. ON CONFLICT DO NOTHING`, in
        id order: a redelivered signal, or one another controller writes at the same moment, changes nothing); a
        drift episode's firing and resolve fill its two times once each."""
        if not batch:
            return
        now = datetime.now(UTC)
        labels: dict[str, dict[str, Any]] = {}
        for label in batch.labels:  # the first label of a window counts, in a batch too
            labels.setdefault(label.window_id, {**vars(label), "received_at": now})
        episodes: dict[str, dict[str, Any]] = {}
        for drift in batch.drift:
            episode = episodes.setdefault(
                drift.episode_id,
                {
                    "episode_id": drift.episode_id,
                    "model_name": drift.model_name,
                    "model_version": drift.model_version,
                    "fired_at_s": None,
                    "resolved_at_s": None,
                    "received_at": now,
                },
            )
            side = "resolved_at_s" if drift.status == RESOLVED else "fired_at_s"
            if episode[side] is None:  # the first of each side counts, in a batch too
                episode[side] = drift.at_s
        with Session(self.engine) as session:
            self._insert_new(
                session,
                RolloutsSegmentRow,
                "event_id",
                {
                    seen.event_id: {
                        "event_id": seen.event_id,
                        "device_id": seen.device_id,
                        "occurred_at_s": seen.occurred_at_s,
                        "distance_m": seen.distance_m,
                        "latency_bucket": seen.latency_bucket,
                        "received_at": now,
                    }
                    for seen in batch.segments
                },
            )
            self._insert_new(
                session,
                RolloutsDetectionRow,
                "event_id",
                {seen.event_id: {**vars(seen), "received_at": now} for seen in batch.detections},
            )
            self._insert_new(session, RolloutsWindowLabelRow, "window_id", labels)
            self._insert_new(
                session,
                RolloutsErrorRow,
                "event_id",
                {seen.event_id: {**vars(seen), "received_at": now} for seen in batch.errors},
            )
            if episodes:
                table = RolloutsDriftEpisodeRow.__table__.c  # type: ignore[attr-defined]
                statement = _insert(self.engine, RolloutsDriftEpisodeRow)
                statement = statement.on_conflict_do_update(
                    index_elements=["episode_id"],
                    set_={
                        "fired_at_s": func.coalesce(table.fired_at_s, statement.excluded.fired_at_s),
                        "resolved_at_s": func.coalesce(table.resolved_at_s, statement.excluded.resolved_at_s),
                    },
                )
                session.execute(statement, [episodes[episode_id] for episode_id in sorted(episodes)])
            session.commit()

    @staticmethod
    def _insert_new(session: Session, table: Any, key: str, rows: dict[str, dict[str, Any]]) -> None:
        """Insert the rows whose `key` the table does not hold yet (in key order, so writers never deadlock)."""
        if not rows:
            return
        statement = _insert(session.get_bind(), table).on_conflict_do_nothing(index_elements=[key])
        ordered = [rows[row_id] for row_id in sorted(rows)]
        for start in range(0, len(ordered), _WRITE_CHUNK):
            session.execute(statement, ordered[start : start + _WRITE_CHUNK])

    def device_totals(self, since_s: float) -> DeviceTotals:
        """Per device, the uploads, metres, latency buckets and inference errors at or after `since_s`."""
        segment, error = RolloutsSegmentRow, RolloutsErrorRow
        totals = DeviceTotals()
        with Session(self.engine) as session:
            for device, uploads, metres in session.execute(
                select_columns(col(segment.device_id), func.count(), func.coalesce(func.sum(segment.distance_m), 0.0))
                .where(col(segment.occurred_at_s) >= since_s)
                .group_by(col(segment.device_id))
            ).all():
                totals.uploads[device] = int(uploads)
                totals.metres[device] = float(metres)
            totals.latency = [
                (device, int(bucket), int(count))
                for device, bucket, count in session.execute(
                    select_columns(col(segment.device_id), col(segment.latency_bucket), func.count())
                    .where(col(segment.occurred_at_s) >= since_s, col(segment.latency_bucket).is_not(None))
                    .group_by(col(segment.device_id), col(segment.latency_bucket))
                ).all()
            ]
            for device, count in session.execute(
                select_columns(col(error.device_id), func.count())
                .where(col(error.occurred_at_s) >= since_s)
                .group_by(col(error.device_id))
            ).all():
                totals.errors[device] = int(count)
        return totals

    def arm_detections(
        self, model_name: str, rollout_id: str, versions: Sequence[str], since_s: float
    ) -> dict[str, ArmDetections]:
        """Per model version, its detections in the rollout at or after `since_s`, and how many people overturned."""
        detection, label = RolloutsDetectionRow, RolloutsWindowLabelRow
        overturned = col(label.event_type).in_(sorted(NOT_RISKY))
        statement = (
            select_columns(
                col(detection.model_version),
                func.count(),
                func.coalesce(func.sum(case((overturned, 1), else_=0)), 0),
            )
            .select_from(detection)
            .outerjoin(label, col(label.window_id) == col(detection.window_id))
            .where(
                col(detection.model_name) == model_name,
                col(detection.rollout_id) == rollout_id,
                col(detection.model_version).in_(list(versions)),
                col(detection.occurred_at_s) >= since_s,
            )
            .group_by(col(detection.model_version))
        )
        with Session(self.engine) as session:
            return {
                str(version): ArmDetections(detections=int(count), false_alerts=int(false_alerts))
                for version, count, false_alerts in session.execute(statement).all()
            }

    def drift_alerts(self, model_name: str, versions: Sequence[str], since_s: float, until_s: float) -> dict[str, int]:
        """Per model version, its drift episodes open at any moment of [since_s, until_s]."""
        episode = RolloutsDriftEpisodeRow
        statement = (
            select_columns(col(episode.model_version), func.count())
            .where(
                col(episode.model_name) == model_name,
                col(episode.model_version).in_(list(versions)),
                col(episode.fired_at_s).is_not(None),
                col(episode.fired_at_s) <= until_s,
                col(episode.resolved_at_s).is_(None) | (col(episode.resolved_at_s) >= since_s),
            )
            .group_by(col(episode.model_version))
        )
        with Session(self.engine) as session:
            return {str(version): int(count) for version, count in session.execute(statement).all()}

    def prune_signals(self, before_s: float) -> int:
        """Delete segments, detections, errors and resolved drift episodes older than `before_s`; the rows deleted."""
        deleted = 0
        with Session(self.engine) as session:
            for table in (RolloutsSegmentRow, RolloutsDetectionRow, RolloutsErrorRow):
                result = session.execute(delete(table).where(col(table.occurred_at_s) < before_s))
                deleted += int(getattr(result, "rowcount", 0) or 0)
            result = session.execute(
                delete(RolloutsDriftEpisodeRow).where(col(RolloutsDriftEpisodeRow.resolved_at_s) < before_s)
            )
            deleted += int(getattr(result, "rowcount", 0) or 0)
            # Labels carry no event time of their own: kept as long, counted from when they came.
            result = session.execute(
                delete(RolloutsWindowLabelRow).where(
                    col(RolloutsWindowLabelRow.received_at) < datetime.fromtimestamp(before_s, UTC)
                )
            )
            deleted += int(getattr(result, "rowcount", 0) or 0)
            session.commit()
        return deleted

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
