"""Annotator quality from gold tasks: rolling accuracy, vote weight and how much gold to mix in.

A gold result is True (the answer matched the known answer) or False, most recent first. The
weight of a vote is the annotator's accuracy smoothed towards a prior (so two lucky answers do not
make an expert); an annotator measured below the threshold has that weight cut further and is
served more gold. Nothing here is shown to the annotator task by task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class QualityPolicy:
    # Rolling window: only the most recent answers to gold tasks count.
    window: int = 50
    # An accuracy counts as measured from this many gold answers on.
    min_answers: int = 5
    # Below this measured accuracy an annotator gets more gold and less weight.
    threshold: float = 0.7
    # Smoothing prior: as if every annotator started with prior_correct of prior_answers right.
    prior_correct: float = 4.0
    prior_answers: float = 5.0
    low_accuracy_weight_factor: float = 0.5
    # Chance that a lease serves a gold task (when one is available and real work is waiting).
    gold_rate: float = 0.1
    # ... for annotators not yet measured, and for those measured below the threshold.
    new_annotator_gold_rate: float = 0.25
    low_accuracy_gold_rate: float = 0.4

    def __post_init__(self) -> None:
        if self.window < 1 or self.min_answers < 1 or not 0 <= self.threshold <= 1:
            raise ValueError("window and min_answers must be >= 1, threshold within 0..1")
        if not 0 < self.prior_correct <= self.prior_answers:
            raise ValueError("the prior needs 0 < prior_correct <= prior_answers")
        for rate in (self.gold_rate, self.new_annotator_gold_rate, self.low_accuracy_gold_rate):
            if not 0 <= rate <= 1:
                raise ValueError("gold rates are probabilities")


@dataclass(frozen=True)
class Quality:
    """What the gold answers say about one annotator."""

    answers: int
    correct: int
    accuracy: float | None  # None until `min_answers` gold answers are in the window
    weight: float
    below_threshold: bool
    gold_rate: float

    @property
    def measured(self) -> bool:
        return self.accuracy is not None


def assess(results: Sequence[bool], policy: QualityPolicy) -> Quality:
    """Quality from gold results, most recent first (only the first `policy.window` count)."""
    recent = list(results[: policy.window])
    answers = len(recent)
    correct = sum(1 for result in recent if result)
    accuracy = correct / answers if answers >= policy.min_answers else None
    smoothed = (correct + policy.prior_correct) / (answers + policy.prior_answers)
    below = accuracy is not None and accuracy < policy.threshold
    weight = smoothed * (policy.low_accuracy_weight_factor if below else 1.0)
    if accuracy is None:
        rate = policy.new_annotator_gold_rate
    elif below:
        rate = policy.low_accuracy_gold_rate
    else:
        rate = policy.gold_rate
    return Quality(answers, correct, accuracy, weight, below, rate)
