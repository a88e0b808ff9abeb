"""The evaluation gate: only a candidate that passes it is registered.

A policy has three parts, each a mapping metric name → number, over the headline metrics of
`domain/evaluation.py` (`METRIC_DIRECTIONS` says which way is better):

- `minimums`: the candidate's value must be ≥ the number (for "higher is better" metrics);
- `maximums`: the candidate's value must be ≤ the number (for "lower is better" metrics);
- `not_behind_champion`: the candidate may trail the champion by at most this margin, in the
  metric's own units, measured on the *same* test windows (for a lower-is-better metric: candidate
  ≤ champion + margin). Skipped, and said so, when there is no champion to compare with.

Configured with `MICHI_TRAINER_GATE` (JSON of this shape); the defaults are below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from services.trainer.domain.evaluation import METRIC_DIRECTIONS


def _default_minimums() -> dict[str, float]:
    return {"harsh_recall": 0.8, "harsh_precision": 0.8, "macro_f1": 0.6}


def _default_maximums() -> dict[str, float]:
    return {"false_alerts_per_1000_km": 100.0}


def _default_margins() -> dict[str, float]:
    return {
        "harsh_recall": 0.02,
        "harsh_precision": 0.02,
        "macro_f1": 0.02,
        "false_alerts_per_1000_km": 5.0,
        "missed_harsh_per_1000_km": 5.0,
    }


@dataclass(frozen=True)
class GatePolicy:
    minimums: dict[str, float] = field(default_factory=_default_minimums)
    maximums: dict[str, float] = field(default_factory=_default_maximums)
    not_behind_champion: dict[str, float] = field(default_factory=_default_margins)

    def __post_init__(self) -> None:
        for section in (self.minimums, self.maximums, self.not_behind_champion):
            unknown = set(section) - set(METRIC_DIRECTIONS)
            if unknown:
                raise ValueError(
                    f"gate names unknown metrics {', '.join(sorted(unknown))}; known: {', '.join(sorted(METRIC_DIRECTIONS))}"
                )
        if any(margin < 0 for margin in self.not_behind_champion.values()):
            raise ValueError("gate margins must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatePolicy:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown gate sections: {', '.join(sorted(unknown))}")
        return cls(**{key: {name: float(value) for name, value in values.items()} for key, values in data.items()})


@dataclass(frozen=True)
class GateCheck:
    metric: str
    rule: str  # "minimum", "maximum" or "not behind champion"
    candidate: float
    bound: float
    passed: bool
    champion: float | None = None

    def describe(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        if self.rule == "not behind champion":
            return (
                f"{self.metric}: candidate {self.candidate:.4g} vs champion {self.champion:.4g} "
                f"(bound {self.bound:.4g}) {verdict}"
            )
        sign = ">=" if self.rule == "minimum" else "<="
        return f"{self.metric}: {self.candidate:.4g} {sign} {self.bound:.4g} {verdict}"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: tuple[GateCheck, ...]
    compared_with: str | None  # "michi-risk 3", "baseline-1", or None

    @property
    def failures(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.passed]

    def reason(self) -> str:
        if self.passed:
            return "every gate check passed"
        return "; ".join(check.describe() for check in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "compared_with": self.compared_with,
            "checks": [asdict(check) for check in self.checks],
        }


def decide(
    policy: GatePolicy,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    compared_with: str | None = None,
) -> GateDecision:
    """Every check of `policy` on the candidate's (and champion's) headline metrics."""
    checks: list[GateCheck] = []
    for metric, bound in sorted(policy.minimums.items()):
        value = float(candidate[metric])
        checks.append(GateCheck(metric, "minimum", value, bound, value >= bound))
    for metric, bound in sorted(policy.maximums.items()):
        value = float(candidate[metric])
        checks.append(GateCheck(metric, "maximum", value, bound, value <= bound))
    if champion is not None:
        for metric, margin in sorted(policy.not_behind_champion.items()):
            value, reference = float(candidate[metric]), float(champion[metric])
            if METRIC_DIRECTIONS[metric] > 0:
                bound = reference - margin
                passed = value >= bound - 1e-12
            else:
                bound = reference + margin
                passed = value <= bound + 1e-12
            checks.append(GateCheck(metric, "not behind champion", value, bound, passed, reference))
    return GateDecision(all(check.passed for check in checks), tuple(checks), compared_with if champion else None)
