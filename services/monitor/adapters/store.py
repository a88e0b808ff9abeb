"""`MonitorStore`: the monitor's closed windows and drift episodes in SQL (the tables of `tables.py`).

Writes are idempotent by window id and episode id: a window read again after a crash is stored once, and an
episode saved again is updated in place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, create_engine, select

from michi.migrations import upgrade_to_head
from services.monitor.adapters.migrations import MIGRATIONS
from services.monitor.adapters.tables import MonitorDriftEpisodeRow, MonitorWindowRow
from services.monitor.handlers import ClosedWindow, DriftEpisode

OPEN = "open"


def _figures(closed: ClosedWindow) -> dict[str, Any]:
    def number(value: float) -> float | None:
        return None if value != value else round(value, 6)  # NaN (insufficient data) as null

    return {
        result.feature: {
            "status": result.status,
            "rows": result.rows,
            "psi": number(result.psi),
            "jensen_shannon": number(result.jensen_shannon),
            "wasserstein": number(result.wasserstein),
            "ks": number(result.ks_statistic),
        }
        for result in closed.features
    }


class MonitorStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, database_url: str) -> MonitorStore:
        store = cls(create_engine(database_url, pool_pre_ping=True))
        upgrade_to_head(store.engine, MIGRATIONS)
        return store

    def close(self) -> None:
        self.engine.dispose()

    # --- windows

    def record_window(self, closed: ClosedWindow, latest_s: float) -> None:
        row = MonitorWindowRow(
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
            latest_s=latest_s,
            closed_at=datetime.now(UTC),
        )
        with Session(self.engine) as session:
            if session.exec(select(MonitorWindowRow.id).where(MonitorWindowRow.window_id == closed.window_id)).first():
                return
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # another writer stored it first
                session.rollback()

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
        now = datetime.now(UTC)
        with Session(self.engine) as session:
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
            row.windows = list(episode.windows)
            row.features = list(episode.features)
            row.samples = episode.samples
            row.retrain_event_id = episode.retrain_event_id
            row.resolved_event_id = episode.resolved_event_id
            row.resolved_window_id = episode.resolved_window_id
            if episode.status != OPEN and row.resolved_at is None:
                row.resolved_at = now
            session.add(row)
            session.commit()

    def episodes(self, *, limit: int = 100) -> list[MonitorDriftEpisodeRow]:
        """The latest drift episodes, newest first."""
        with Session(self.engine) as session:
            statement = select(MonitorDriftEpisodeRow).order_by(col(MonitorDriftEpisodeRow.id).desc()).limit(limit)
            return list(session.exec(statement).all())


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
