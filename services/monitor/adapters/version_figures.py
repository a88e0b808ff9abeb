"""What the monitor saw of one model version over a period, from its own tables: the figures the rollouts section
of the monitor page shows per arm.

    figures = version_period_figures(engine, "michi-risk", "7", since, until)
    figures.labelled, figures.agreed, figures.agreement       # random-QA labels of windows predicted in the period
    figures.windows, figures.drifting_windows, figures.expected_accuracy

Labels count by the time the model *predicted* their window (`predicted_at_s`), so a label that arrives hours
after a rollout ended still counts for the arm that made the call, and a period only holds its own windows.
Drift windows count by the time they closed, for the "all" cohort (each version's whole traffic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.monitor.adapters.tables import MonitorQaWindowRow, MonitorWindowRow
from services.monitor.domain.windows import COHORT_ALL
from services.monitor.handlers import VERDICT_DRIFT

# 95 % two-sided normal quantile, for the agreement's Wilson interval.
Z_95 = 1.959963984540054
# The most closed windows read for one version and period (each holds its histograms: ~25 kB).
MAX_WINDOWS_READ = 2000


@dataclass(frozen=True)
class VersionPeriodFigures:
    model_version: str
    # Random-QA (and gold) windows of the period with a label, and how many of them the version called right.
    labelled: int
    agreed: int
    # Closed drift windows of the period ("all" cohort), how many drifted, the rows they held, and the mean
    # expected accuracy the monitor estimated from the version's confidences (None without an estimate).
    windows: int
    drifting_windows: int
    rows: int
    expected_accuracy: float | None
    last_verdict: str | None

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.labelled if self.labelled else None

    def agreement_interval(self) -> tuple[float, float] | None:
        """The Wilson score interval (95 %) of the agreement, None without labels."""
        if not self.labelled:
            return None
        share, count = self.agreed / self.labelled, self.labelled
        denominator = 1 + Z_95**2 / count
        centre = (share + Z_95**2 / (2 * count)) / denominator
        half = Z_95 * math.sqrt(share * (1 - share) / count + Z_95**2 / (4 * count**2)) / denominator
        return max(0.0, centre - half), min(1.0, centre + half)


def version_period_figures(
    engine: Engine, model_name: str, model_version: str, since: datetime, until: datetime
) -> VersionPeriodFigures:
    """The figures of `model_name` `model_version` for `since <= t < until` (both aware datetimes)."""
    with Session(engine) as session:
        labelled, agreed = session.exec(
            select(
                func.count(col(MonitorQaWindowRow.id)),
                func.sum(case((col(MonitorQaWindowRow.correct).is_(True), 1), else_=0)),
            )
            .where(MonitorQaWindowRow.model_name == model_name)
            .where(MonitorQaWindowRow.model_version == model_version)
            .where(col(MonitorQaWindowRow.correct).is_not(None))
            .where(col(MonitorQaWindowRow.predicted_at_s) >= since.timestamp())
            .where(col(MonitorQaWindowRow.predicted_at_s) < until.timestamp())
        ).one()
        windows = session.exec(
            select(MonitorWindowRow)
            .where(MonitorWindowRow.model_name == model_name)
            .where(MonitorWindowRow.model_version == model_version)
            .where(MonitorWindowRow.cohort == COHORT_ALL)
            .where(col(MonitorWindowRow.closed_at) >= since)
            .where(col(MonitorWindowRow.closed_at) < until)
            .order_by(col(MonitorWindowRow.id).desc())
            .limit(MAX_WINDOWS_READ)
        ).all()
    accuracies = [
        float(value)
        for row in windows
        if isinstance(value := (row.performance or {}).get("expected_accuracy"), int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    ]
    return VersionPeriodFigures(
        model_version=model_version,
        labelled=int(labelled or 0),
        agreed=int(agreed or 0),
        windows=len(windows),
        drifting_windows=sum(1 for row in windows if row.verdict == VERDICT_DRIFT),
        rows=sum(row.rows for row in windows),
        expected_accuracy=sum(accuracies) / len(accuracies) if accuracies else None,
        last_verdict=windows[0].verdict if windows else None,
    )
