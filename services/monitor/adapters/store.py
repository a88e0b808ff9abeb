"""`MonitorStore`: the monitor's closed windows, drift episodes, random-QA windows and concept-drift changes in
SQL (the tables of `tables.py`).

Writes are idempotent: a window read again after a crash is stored once (by window id), an episode saved again
is updated in place (by episode id), a random-QA window's prediction and label are kept once each (by window id
and model version: the first label counts), a change once per alert id.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import delete, func
from sqlalchemy import select as select_columns
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, create_engine, select

from michi.labels.qa_windows import upsert_qa_window
from michi.migrations import upgrade_to_head
from services.monitor.adapters.migrations import MIGRATIONS
from services.monitor.adapters.tables import (
    MonitorCohortProgressRow,
    MonitorConceptDriftRow,
    MonitorConditionEpisodeRow,
    MonitorCostDayRow,
    MonitorDriftEpisodeRow,
    MonitorQaWindowRow,
    MonitorWindowRow,
)
from services.monitor.domain.resources import DailyCost
from services.monitor.handlers import ClosedWindow, DriftEpisode, LabelOutcome

OPEN = "open"
RESOLVED_STATUS = "resolved"
# Closed windows (about 25 kB each with their histograms) older than this are deleted; episodes are kept.
KEEP_WINDOWS_DAYS = 30.0
# Every this many windows recorded, the old ones are deleted.
PRUNE_EVERY = 100


def _figures(closed: ClosedWindow) -> dict[str, Any]:
    def number(value: float) -> float | None:
        return None if value != value else round(value, 6)  # NaN (insufficient data) as null

    figures: dict[str, Any] = {}
    for result in closed.features:
        figures[result.feature] = {
            "status": result.status,
            "rows": result.rows,
            "psi": number(result.psi),
            "jensen_shannon": number(result.jensen_shannon),
            "wasserstein": number(result.wasserstein),
            "ks": number(result.ks_statistic),
        }
        if result.feature in closed.shapes:
            figures[result.feature]["histogram"] = dict(closed.shapes[result.feature])
    return figures


class MonitorStore:
    def __init__(self, engine: Engine, *, keep_windows_days: float = KEEP_WINDOWS_DAYS) -> None:
        self.engine = engine
        self.keep_windows_days = keep_windows_days
        self._recorded = 0

    @classmethod
    def from_url(cls, database_url: str, *, keep_windows_days: float = KEEP_WINDOWS_DAYS) -> MonitorStore:
        store = cls(create_engine(database_url, pool_pre_ping=True), keep_windows_days=keep_windows_days)
        upgrade_to_head(store.engine, MIGRATIONS)
        return store

    def close(self) -> None:
        self.engine.dispose()

    # --- windows

    def record_close(self, closed: ClosedWindow, latest_s: float, episode: DriftEpisode | None) -> None:
        """The closed window (once per id), its cohort's progress and its episode, in one transaction: a crash
        leaves all three or none."""
        with Session(self.engine) as session:
            known = session.exec(select(MonitorWindowRow.id).where(MonitorWindowRow.window_id == closed.window_id))
            if known.first() is None:
                session.add(_window_row(closed, latest_s))
            # The cohort's progress rows, one query for every partition of the window.
            kept = {
                (row.topic, row.partition): row
                for row in session.exec(
                    select(MonitorCohortProgressRow)
                    .where(MonitorCohortProgressRow.model_name == closed.model_name)
                    .where(MonitorCohortProgressRow.model_version == closed.model_version)
                    .where(MonitorCohortProgressRow.cohort == closed.cohort)
                ).all()
            }
            for (topic, partition), offset in closed.ends.items():
                progress = kept.get((topic, partition))
                if progress is None:
                    progress = MonitorCohortProgressRow(
                        model_name=closed.model_name,
                        model_version=closed.model_version,
                        cohort=closed.cohort,
                        topic=topic,
                        partition=partition,
                        next_offset=offset,
                    )
                progress.next_offset = max(progress.next_offset, offset)
                session.add(progress)
            if episode is not None:
                self._put_episode(session, episode)
            session.commit()
        self._recorded += 1
        if self._recorded % PRUNE_EVERY == 1:
            self.prune_windows(datetime.now(UTC) - timedelta(days=self.keep_windows_days))

    def progress(self, model_name: str, model_version: str, cohort: str) -> dict[tuple[str, int], int]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(MonitorCohortProgressRow)
                .where(MonitorCohortProgressRow.model_name == model_name)
                .where(MonitorCohortProgressRow.model_version == model_version)
                .where(MonitorCohortProgressRow.cohort == cohort)
            ).all()
            return {(row.topic, row.partition): row.next_offset for row in rows}

    def prune_windows(self, before: datetime) -> int:
        """Delete the windows closed before `before`; how many."""
        with Session(self.engine) as session:
            deleted = session.execute(delete(MonitorWindowRow).where(col(MonitorWindowRow.closed_at) < before))
            session.commit()
            return int(deleted.rowcount or 0)  # type: ignore[attr-defined]

    def windows(
        self, *, model_version: str | None = None, cohort: str | None = None, limit: int = 100
    ) -> list[MonitorWindowRow]:
        """The latest closed windows, newest first."""
        with Session(self.engine) as session:
            statement = select(MonitorWindowRow)
            if model_version is not None:
                statement = statement.where(MonitorWindowRow.model_version == model_version)
            if cohort is not None:
                statement = statement.where(MonitorWindowRow.cohort == cohort)
            statement = statement.order_by(col(MonitorWindowRow.id).desc()).limit(limit)
            return list(session.exec(statement).all())

    # --- episodes

    def open_episode(self, model_name: str, model_version: str, cohort: str) -> DriftEpisode | None:
        with Session(self.engine) as session:
            row = session.exec(
                select(MonitorDriftEpisodeRow)
                .where(MonitorDriftEpisodeRow.model_name == model_name)
                .where(MonitorDriftEpisodeRow.model_version == model_version)
                .where(MonitorDriftEpisodeRow.cohort == cohort)
                .where(MonitorDriftEpisodeRow.status == OPEN)
                .order_by(col(MonitorDriftEpisodeRow.id).desc())
            ).first()
            return _episode(row) if row is not None else None

    def save_episode(self, episode: DriftEpisode) -> None:
        """Insert or update the episode (by `episode_id`)."""
        with Session(self.engine) as session:
            self._put_episode(session, episode)
            session.commit()

    def _put_episode(self, session: Session, episode: DriftEpisode) -> None:
        now = datetime.now(UTC)
        row = session.exec(
            select(MonitorDriftEpisodeRow).where(MonitorDriftEpisodeRow.episode_id == episode.episode_id)
        ).first()
        if row is None:
            row = MonitorDriftEpisodeRow(
                episode_id=episode.episode_id,
                model_name=episode.model_name,
                model_version=episode.model_version,
                cohort=episode.cohort,
                status=episode.status,
                firing_event_id=episode.firing_event_id,
                opened_at=now,
            )
        row.status = episode.status
        row.firing_event_id = episode.firing_event_id
        row.windows = list(episode.windows)
        row.features = list(episode.features)
        row.samples = episode.samples
        row.retrain_event_id = episode.retrain_event_id
        row.resolved_event_id = episode.resolved_event_id
        row.resolved_window_id = episode.resolved_window_id
        if episode.status != OPEN and row.resolved_at is None:
            row.resolved_at = now
        session.add(row)

    def episodes(self, *, limit: int = 100) -> list[MonitorDriftEpisodeRow]:
        """The latest drift episodes, newest first."""
        with Session(self.engine) as session:
            statement = select(MonitorDriftEpisodeRow).order_by(col(MonitorDriftEpisodeRow.id).desc()).limit(limit)
            return list(session.exec(statement).all())

    # --- random-QA windows and concept drift

    def record_prediction(
        self,
        window_id: str,
        model_name: str,
        model_version: str,
        predicted: int,
        confidence: float,
        predicted_at_s: float,
    ) -> None:
        def fill(row: MonitorQaWindowRow) -> None:
            if row.predicted is None:
                row.predicted, row.predicted_at_s, row.confidence = predicted, predicted_at_s, confidence

        self._upsert_qa_window(window_id, model_name, model_version, fill)

    def record_label(
        self, window_id: str, model_name: str, model_version: str, labelled: int, label_event_id: str
    ) -> None:
        def fill(row: MonitorQaWindowRow) -> None:
            if row.labelled is None:
                row.labelled, row.label_event_id = labelled, label_event_id

        self._upsert_qa_window(window_id, model_name, model_version, fill)

    def _upsert_qa_window(
        self, window_id: str, model_name: str, model_version: str, fill: Callable[[MonitorQaWindowRow], None]
    ) -> None:
        upsert_qa_window(self.engine, MonitorQaWindowRow, window_id, model_name, model_version, fill)

    def sequence_ready(self) -> list[LabelOutcome]:
        with Session(self.engine) as session:
            ready = session.exec(
                select(MonitorQaWindowRow)
                .where(col(MonitorQaWindowRow.predicted).is_not(None))
                .where(col(MonitorQaWindowRow.labelled).is_not(None))
                .where(col(MonitorQaWindowRow.sequence).is_(None))
                .order_by(
                    col(MonitorQaWindowRow.model_version),
                    col(MonitorQaWindowRow.predicted_at_s),
                    col(MonitorQaWindowRow.window_id),
                )
            ).all()
            if not ready:
                return []
            last: dict[str, int] = {}
            for row in ready:
                if row.model_version not in last:
                    last[row.model_version] = int(
                        session.exec(
                            select(func.max(MonitorQaWindowRow.sequence)).where(
                                MonitorQaWindowRow.model_version == row.model_version
                            )
                        ).one()
                        or 0
                    )
                last[row.model_version] += 1
                row.sequence = last[row.model_version]
                row.correct = row.predicted == row.labelled
                session.add(row)
            session.commit()
            return [_outcome(row) for row in ready]

    def outcomes(self) -> list[LabelOutcome]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(MonitorQaWindowRow)
                .where(col(MonitorQaWindowRow.sequence).is_not(None))
                .order_by(col(MonitorQaWindowRow.model_version), col(MonitorQaWindowRow.sequence))
            ).all()
            return [_outcome(row) for row in rows]

    def concept_drift_ids(self) -> set[str]:
        with Session(self.engine) as session:
            return set(session.exec(select(MonitorConceptDriftRow.event_id)).all())

    def record_concept_drift(
        self,
        event_id: str,
        outcome: LabelOutcome,
        error_rate_before: float,
        error_rate_after: float,
        retrain_event_id: str | None,
    ) -> None:
        with Session(self.engine) as session:
            session.add(
                MonitorConceptDriftRow(
                    event_id=event_id,
                    model_name=outcome.model_name,
                    model_version=outcome.model_version,
                    sequence=outcome.sequence,
                    error_rate_before=error_rate_before,
                    error_rate_after=error_rate_after,
                    retrain_event_id=retrain_event_id,
                    detected_at=datetime.now(UTC),
                )
            )
            try:
                session.commit()
            except IntegrityError:  # kept already
                session.rollback()

    # --- the resource watch's ledger

    def open_condition_episodes(self) -> list[tuple[tuple[str, ...], str, float]]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(MonitorConditionEpisodeRow).where(MonitorConditionEpisodeRow.status == OPEN)
            ).all()
            return [(tuple(row.key), row.episode_id, row.started_at_s) for row in rows]

    def condition_episode_opened(self, key: tuple[str, ...], episode_id: str, started_at: float) -> None:
        with Session(self.engine) as session:
            known = session.exec(
                select(MonitorConditionEpisodeRow.id).where(MonitorConditionEpisodeRow.episode_id == episode_id)
            ).first()
            if known is not None:
                return
            session.add(
                MonitorConditionEpisodeRow(
                    episode_id=episode_id,
                    key=list(key),
                    started_at_s=started_at,
                    status=OPEN,
                    opened_at=datetime.now(UTC),
                )
            )
            try:
                session.commit()
            except IntegrityError:
                session.rollback()

    def condition_episode_resolved(self, episode_id: str) -> None:
        with Session(self.engine) as session:
            row = session.exec(
                select(MonitorConditionEpisodeRow).where(MonitorConditionEpisodeRow.episode_id == episode_id)
            ).first()
            if row is None or row.status != OPEN:
                return
            row.status, row.resolved_at = RESOLVED_STATUS, datetime.now(UTC)
            session.add(row)
            session.commit()

    def cost_days(self, since_day: str) -> list[tuple[DailyCost, bool]]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(MonitorCostDayRow)
                .where((col(MonitorCostDayRow.day) >= since_day) | (col(MonitorCostDayRow.reported).is_(False)))
                .order_by(col(MonitorCostDayRow.day))
            ).all()
            return [(_cost_day(row), row.reported) for row in rows]

    def save_cost_day(self, day: DailyCost, reported: bool) -> None:
        for _ in range(2):  # a concurrent first insert of the day: update its row
            with Session(self.engine) as session:
                row = session.exec(select(MonitorCostDayRow).where(MonitorCostDayRow.day == day.day)).first()
                if row is None:
                    row = MonitorCostDayRow(day=day.day, first_seen_s=day.first_seen, last_seen_s=day.last_seen)
                row.first_seen_s, row.last_seen_s = day.first_seen, day.last_seen
                row.cpu_seconds = dict(day.cpu_seconds)
                row.predictions, row.labels = day.predictions, day.labels
                row.training_runs, row.training_run_seconds = day.training_runs, day.training_run_seconds
                row.reported = row.reported or reported
                session.add(row)
                try:
                    session.commit()
                    return
                except IntegrityError:
                    session.rollback()

    def concept_drifts(self, *, limit: int = 100) -> list[MonitorConceptDriftRow]:
        """The latest changes found, newest first."""
        with Session(self.engine) as session:
            statement = select(MonitorConceptDriftRow).order_by(col(MonitorConceptDriftRow.id).desc()).limit(limit)
            return list(session.exec(statement).all())

    # --- reads of the monitor page (services/monitor/entrypoints/page.py)

    def window(self, window_id: str) -> MonitorWindowRow | None:
        """The closed window `window_id` with its figures and histograms; None when unknown or pruned."""
        with Session(self.engine) as session:
            return session.exec(select(MonitorWindowRow).where(MonitorWindowRow.window_id == window_id)).first()

    def window_series(self, *, limit: int = 200) -> list[WindowSeries]:
        """Every (model, version, cohort) with closed windows kept: how many and when the latest closed, the one
        whose window closed last first."""
        with Session(self.engine) as session:
            latest = func.max(MonitorWindowRow.id)
            statement = (
                select_columns(
                    col(MonitorWindowRow.model_name),
                    col(MonitorWindowRow.model_version),
                    col(MonitorWindowRow.cohort),
                    func.count(col(MonitorWindowRow.id)),
                    func.max(MonitorWindowRow.closed_at),
                )
                .group_by(
                    col(MonitorWindowRow.model_name), col(MonitorWindowRow.model_version), col(MonitorWindowRow.cohort)
                )
                .order_by(latest.desc())
                .limit(limit)
            )
            return [WindowSeries(*row) for row in session.execute(statement).all()]

    def episode(self, episode_id: str) -> MonitorDriftEpisodeRow | None:
        with Session(self.engine) as session:
            return session.exec(
                select(MonitorDriftEpisodeRow).where(MonitorDriftEpisodeRow.episode_id == episode_id)
            ).first()

    def episodes_of_window(self, window: MonitorWindowRow) -> list[MonitorDriftEpisodeRow]:
        """The episodes `window` opened, continued or resolved, newest first."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(MonitorDriftEpisodeRow)
                .where(MonitorDriftEpisodeRow.model_name == window.model_name)
                .where(MonitorDriftEpisodeRow.model_version == window.model_version)
                .where(MonitorDriftEpisodeRow.cohort == window.cohort)
                .order_by(col(MonitorDriftEpisodeRow.id).desc())
            ).all()
            return [
                row for row in rows if window.window_id in row.windows or row.resolved_window_id == window.window_id
            ]

    def outcome_series(self) -> list[OutcomeSeries]:
        """Every (model, version) with outcomes fed to its detector: how many, and the latest one's prediction time;
        the latest first."""
        with Session(self.engine) as session:
            latest = func.max(MonitorQaWindowRow.predicted_at_s)
            statement = (
                select(
                    MonitorQaWindowRow.model_name,
                    MonitorQaWindowRow.model_version,
                    func.count(col(MonitorQaWindowRow.id)),
                    latest,
                )
                .where(col(MonitorQaWindowRow.sequence).is_not(None))
                .group_by(col(MonitorQaWindowRow.model_name), col(MonitorQaWindowRow.model_version))
                .order_by(latest.desc())
            )
            return [
                OutcomeSeries(name, version, outcomes, float(latest_s or 0.0))
                for name, version, outcomes, latest_s in session.exec(statement).all()
            ]

    def outcomes_of(self, model_name: str, model_version: str) -> list[LabelOutcome]:
        """The outcomes of one model version in their place (what its detector was fed)."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(MonitorQaWindowRow)
                .where(MonitorQaWindowRow.model_name == model_name)
                .where(MonitorQaWindowRow.model_version == model_version)
                .where(col(MonitorQaWindowRow.sequence).is_not(None))
                .order_by(col(MonitorQaWindowRow.sequence))
            ).all()
            return [_outcome(row) for row in rows]

    def concept_drifts_of(self, model_name: str, model_version: str) -> list[MonitorConceptDriftRow]:
        """The changes found in one model version's error rate, in the order of their place."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(MonitorConceptDriftRow)
                .where(MonitorConceptDriftRow.model_name == model_name)
                .where(MonitorConceptDriftRow.model_version == model_version)
                .order_by(col(MonitorConceptDriftRow.sequence))
            ).all()
            return list(rows)


def _performance(closed: ClosedWindow) -> dict[str, Any] | None:
    performance = closed.performance
    if performance is None:
        return None

    def number(value: float) -> float | None:
        return None if value != value else round(value, 6)

    return {
        "expected_accuracy": number(performance.accuracy),
        "expected_false_alert_rate": number(performance.false_alert_rate),
        "alerts": performance.alerts,
        "calibrated": performance.calibrated,
        "calibration_labels": performance.calibration_labels,
    }


def _window_row(closed: ClosedWindow, latest_s: float) -> MonitorWindowRow:
    return MonitorWindowRow(
        window_id=closed.window_id,
        model_name=closed.model_name,
        model_version=closed.model_version,
        cohort=closed.cohort,
        rows=closed.rows,
        reason=closed.reason,
        verdict=closed.verdict,
        drifted=list(closed.drifted),
        figures=_figures(closed),
        profile_version=closed.profile_version,
        performance=_performance(closed),
        latest_s=latest_s,
        closed_at=datetime.now(UTC),
    )


def _cost_day(row: MonitorCostDayRow) -> DailyCost:
    return DailyCost(
        row.day,
        first_seen=row.first_seen_s,
        last_seen=row.last_seen_s,
        cpu_seconds=dict(row.cpu_seconds),
        predictions=row.predictions,
        labels=row.labels,
        training_runs=row.training_runs,
        training_run_seconds=row.training_run_seconds,
    )


def _outcome(row: MonitorQaWindowRow) -> LabelOutcome:
    return LabelOutcome(
        window_id=row.window_id,
        model_name=row.model_name,
        model_version=row.model_version,
        sequence=int(row.sequence or 0),
        correct=bool(row.correct),
        predicted_at_s=float(row.predicted_at_s or 0.0),
        predicted=int(row.predicted or 0),
        confidence=float(row.confidence or 0.0),
    )


def _episode(row: MonitorDriftEpisodeRow) -> DriftEpisode:
    return DriftEpisode(
        episode_id=row.episode_id,
        model_name=row.model_name,
        model_version=row.model_version,
        cohort=row.cohort,
        windows=list(row.windows),
        features=list(row.features),
        firing_event_id=row.firing_event_id,
        samples=row.samples,
        retrain_event_id=row.retrain_event_id,
        status=row.status,
        resolved_event_id=row.resolved_event_id,
        resolved_window_id=row.resolved_window_id,
    )


class WindowSeries(NamedTuple):
    """One (model, version, cohort) whose closed windows are kept (`MonitorStore.window_series`)."""

    model_name: str
    model_version: str
    cohort: str
    windows: int
    last_closed_at: datetime


class OutcomeSeries(NamedTuple):
    """One model version with random-QA outcomes fed to its detector (`MonitorStore.outcome_series`)."""

    model_name: str
    model_version: str
    outcomes: int
    last_predicted_at_s: float
