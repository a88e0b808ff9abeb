"""Assessing the criteria against an installation, and rendering the result as text or JSON lines.

A criterion decided by the records is met or not met; one whose store cannot be read (a blob store that does
not answer, a table read that fails) is unknown, with the error as its evidence. A criterion decided by tests is
shown by CI, naming the tests (and saying so when a named file is not in this checkout).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from michi.maturity.criteria import CRITERIA, Criterion, Framework
from michi.maturity.evidence import Finding
from michi.maturity.records import InstallationRecords

logger = logging.getLogger(__name__)

# The checkout the suite's paths are relative to (michi/maturity/report.py -> the repository root).
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
CI_COMMAND = ".ci/run (make lint, make test)"


class Verdict(StrEnum):
    MET = "met"
    NOT_MET = "not met"
    SHOWN_BY_CI = "shown by CI"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Line:
    criterion: Criterion
    verdict: Verdict
    evidence: str
    command: str
    ids: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.criterion.identifier,
            "framework": str(self.criterion.framework),
            "level": self.criterion.level,
            "level_name": self.criterion.level_name,
            "criterion": self.criterion.text,
            "verdict": str(self.verdict),
            "evidence": self.evidence,
            "command": self.command,
            "decided_by": self.criterion.decided_by,
            "tests": list(self.criterion.tests),
            "ids": self.ids,
        }


def suite_path(test: str) -> Path:
    """The file or folder a named test lives in (`path::test` -> path), in the checkout."""
    return REPOSITORY_ROOT / test.split("::", 1)[0]


def _suite_line(criterion: Criterion) -> Line:
    absent = [test for test in criterion.tests if not suite_path(test).exists()]
    evidence = f"the tests that show it: {', '.join(criterion.tests)}"
    if absent:
        evidence += f" (not in this checkout: {', '.join(absent)})"
    return Line(criterion, Verdict.SHOWN_BY_CI, evidence, f"{criterion.command}  # CI: {CI_COMMAND}")


def _unreadable() -> tuple[type[Exception], ...]:
    """The errors of a store that cannot be read: SQL, files and blobs, and DuckDB over the warehouse."""
    import duckdb
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, OSError, duckdb.Error)


def assess_one(criterion: Criterion, records: InstallationRecords) -> Line:
    if criterion.decide is None:
        return _suite_line(criterion)
    try:
        finding: Finding = criterion.decide(records)
    except _unreadable() as error:
        # A store that does not answer (the warehouse's blob store, a table read that fails): this criterion is
        # unknown, the others are still read. Anything else is a defect, and raised.
        logger.debug("maturity evidence not read", extra={"criterion": criterion.identifier}, exc_info=True)
        message = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
        return Line(criterion, Verdict.UNKNOWN, f"could not read the records: {reason}", criterion.command)
    return Line(
        criterion,
        Verdict.MET if finding.met else Verdict.NOT_MET,
        finding.evidence,
        finding.command or criterion.command,
        finding.ids,
    )


def select_criteria(framework: Framework | None = None) -> list[Criterion]:
    return [criterion for criterion in CRITERIA if framework is None or criterion.framework == framework]


def assess(records: InstallationRecords, criteria: Iterable[Criterion]) -> list[Line]:
    return [assess_one(criterion, records) for criterion in criteria]


def render_text(lines: list[Line], assessed: list[Line] | None = None) -> str:
    """One block per criterion, grouped by framework and level, then a tally per framework of every criterion
    `assessed` (default: the lines shown; the CLI passes all of them when it shows only the unmet)."""
    out: list[str] = []
    heading: tuple[Framework, int] | None = None
    for line in lines:
        criterion = line.criterion
        if (criterion.framework, criterion.level) != heading:
            heading = (criterion.framework, criterion.level)
            if out:
                out.append("")
            out.append(f"{criterion.framework} level {criterion.level}: {criterion.level_name}")
        out.append(f"  [{line.verdict}] {criterion.identifier}: {criterion.text}")
        out.append(f"      evidence: {line.evidence}")
        out.append(f"      see: {line.command}")
    out.append("")
    for framework in Framework:
        counted = [line for line in (lines if assessed is None else assessed) if line.criterion.framework == framework]
        if counted:
            tally = {verdict: sum(1 for line in counted if line.verdict == verdict) for verdict in Verdict}
            out.append(
                f"{framework}: "
                + ", ".join(f"{count} {verdict}" for verdict, count in tally.items() if count)
                + f" of {len(counted)}"
            )
    return "\n".join(out)


def render_json(lines: list[Line]) -> str:
    """One JSON object per criterion, one a line."""
    return "\n".join(json.dumps(line.to_json(), sort_keys=True, default=str) for line in lines)
