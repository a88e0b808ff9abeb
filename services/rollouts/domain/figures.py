"""What the controller can measure of an arm, and an analysis verdict that never passes on what it cannot.

The controller sees each arm through its random-QA windows (`michi/labels/outcomes.py`): how many windows the
arm served were asked for at random (`requested`), how many came back labelled, and how many of those the arm
called right. So `ArmFigures` gets `predictions` = the random-QA windows requested (the predictions of the arm
the controller sees), `labelled_windows` and `correct`. Everything else is not measured yet (false alerts and
km, errors, latency, drift alerts): km stays 0 and latency None, which the analysis treats as too little data;
errors and drift alerts would read as zero once `predictions` is defined, so an analysis whose success needs
them is never a PASS here (`verdict`): it stays INCONCLUSIVE, and the step's deadline decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from michi.rollouts.analysis import AnalysisSpec, ArmFigures, Outcome, Verdict, evaluate

# Metrics the controller cannot measure, that `ArmFigures` would still compute (as 0) from the counts it has.
UNMEASURED_METRICS = frozenset({"errors_per_1000", "drift_alerts"})


@dataclass(frozen=True)
class ArmCounts:
    """One arm's random-QA windows in a period: asked for, labelled, and labelled the way the arm called them."""

    requested: int = 0
    labelled: int = 0
    correct: int = 0

    def figures(self) -> ArmFigures:
        return ArmFigures(predictions=self.requested, labelled_windows=self.labelled, correct=self.correct)

    def to_dict(self) -> dict[str, int]:
        return {"requested": self.requested, "labelled": self.labelled, "correct": self.correct}


def verdict(analysis: AnalysisSpec, *, candidate: ArmCounts, champion: ArmCounts) -> Verdict:
    """`evaluate` on what the controller measures; a PASS that rests on an unmeasured metric is INCONCLUSIVE."""
    found = evaluate(analysis, candidate=candidate.figures(), champion=champion.figures())
    if found.outcome is not Outcome.PASS:
        return found
    unmeasured = [condition for condition in analysis.success if condition.metric in UNMEASURED_METRICS]
    if not unmeasured:
        return found
    lines = tuple(f"no verdict: {condition}: not measured by the rollout controller yet" for condition in unmeasured)
    return Verdict(Outcome.INCONCLUSIVE, lines + found.reasons)
