"""The evaluation gate: only a candidate that passes it is registered.

A policy has three parts, each a mapping metric name → number, over the headline metrics of
`domain/evaluation.py` (`METRIC_DIRECTIONS` says which way is better):

- `minimums`: the candidate's value must be ≥ the number (for "higher is better" metrics);
- `maximums`: the candidate's value must be ≤ the number (for "lower is better" metrics);
- `not_behind_champion`: the candidate may trail the champion by at most this margin, in the
  metric's own units, measured on the *same* test windows (for a lower-is-better metric: candidate
  ≤ champion + margin). Skipped, and said so, when there is no champion to compare with.
- `not_behind_physics`: on the real recordings (`domain/real_data.py`), against the physics baseline
  `physics-3` on the same drives: `real_false_alerts_per_hour` may exceed the baseline's by at most
  the margin (false alerts per hour of real normal driving); `real_missed_aggressive` is how many
  labelled aggressive events the baseline finds and the candidate misses, at most the margin (0: none).
  Skipped, and said so, when there are no real recordings.

`enforce_real_data_at_bootstrap` (default false): whether the bootstrap's candidate must pass the
real-data checks to be registered at all. By default they are run and recorded for the bootstrap,
marked *advisory*, and choose the first champion instead of refusing: a model trained on the
simulator alone has never seen real driving; when it is behind the physics baseline on the real
recordings (it misses real-strength manoeuvres the baseline finds, or alerts more on ordinary
driving; docs/training.md has the figures) the baseline becomes the champion and the learned model
its shadow, compared on live traffic. Enforced, such a candidate is refused and the baseline is the
champion alone. Every later candidate is held to them.

Configured with `MICHI_TRAINER_GATE` (JSON of this shape); the defaults are below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from michi.windows.physics import PHYSICS_MODEL_VERSION
from services.trainer.domain.evaluation import METRIC_DIRECTIONS
from services.trainer.domain.real_data import REAL_METRIC_DIRECTIONS, missed_against

PHYSICS_RULE = "not behind physics baseline"


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


def _default_physics_margins() -> dict[str, float]:
    return {"real_false_alerts_per_hour": 0.5, "real_missed_aggressive": 0.0}


@dataclass(frozen=True)
class GatePolicy:
    minimums: dict[str, float] = field(default_factory=_default_minimums)
    maximums: dict[str, float] = field(default_factory=_default_maximums)
    not_behind_champion: dict[str, float] = field(default_factory=_default_margins)
    not_behind_physics: dict[str, float] = field(default_factory=_default_physics_margins)
    enforce_real_data_at_bootstrap: bool = False

    def __post_init__(self) -> None:
        for section in (self.minimums, self.maximums, self.not_behind_champion):
            unknown = set(section) - set(METRIC_DIRECTIONS)
            if unknown:
                raise ValueError(
                    f"gate names unknown metrics {', '.join(sorted(unknown))}; known: {', '.join(sorted(METRIC_DIRECTIONS))}"
                )
        unknown = set(self.not_behind_physics) - {"real_false_alerts_per_hour", "real_missed_aggressive"}
        if unknown:
            raise ValueError(
                f"not_behind_physics names unknown metrics {', '.join(sorted(unknown))}; "
                "known: real_false_alerts_per_hour, real_missed_aggressive"
            )
        if any(margin < 0 for margin in (*self.not_behind_champion.values(), *self.not_behind_physics.values())):
            raise ValueError("gate margins must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GatePolicy:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown gate sections: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {
            key: {name: float(value) for name, value in section.items()}
            for key, section in data.items()
            if key != "enforce_real_data_at_bootstrap"
        }
        if "enforce_real_data_at_bootstrap" in data:
            if not isinstance(data["enforce_real_data_at_bootstrap"], bool):
                raise ValueError("enforce_real_data_at_bootstrap must be true or false")
            values["enforce_real_data_at_bootstrap"] = data["enforce_real_data_at_bootstrap"]
        return cls(**values)


@dataclass(frozen=True)
class GateCheck:
    metric: str
    rule: str  # "minimum", "maximum", "not behind champion" or PHYSICS_RULE
    candidate: float
    bound: float
    passed: bool
    champion: float | None = None  # the compared model's value (champion, or the physics baseline)
    compared_with: str | None = None  # which model `champion` is, for the physics checks
    advisory: bool = False  # recorded but never refusing (the bootstrap's real-data checks by default)

    @property
    def holds(self) -> bool:
        """Whether this check lets the candidate through (an advisory check always does)."""
        return self.passed or self.advisory

    def describe(self) -> str:
        verdict = "ok" if self.passed else ("FAILED (advisory)" if self.advisory else "FAILED")
        if self.rule == "not behind champion":
            return (
                f"{self.metric}: candidate {self.candidate:.4g} vs champion {self.champion:.4g} "
                f"(bound {self.bound:.4g}) {verdict}"
            )
        if self.rule == PHYSICS_RULE:
            reference = f" vs {self.compared_with} {self.champion:.4g}" if self.champion is not None else ""
            return f"{self.metric} on real recordings: candidate {self.candidate:.4g}{reference} (bound {self.bound:.4g}) {verdict}"
        sign = ">=" if self.rule == "minimum" else "<="
        return f"{self.metric}: {self.candidate:.4g} {sign} {self.bound:.4g} {verdict}"


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    checks: tuple[GateCheck, ...]
    compared_with: str | None  # "michi-risk 3", "baseline-1", or None

    @property
    def failures(self) -> list[GateCheck]:
        return [check for check in self.checks if not check.holds]

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


def physics_checks(
    policy: GatePolicy,
    candidate: dict[str, Any],
    reference: dict[str, Any],
    reference_label: str,
    *,
    advisory: bool = False,
) -> list[GateCheck]:
    """The `not_behind_physics` checks: real-data sections (`domain/real_data.py`) of candidate and reference."""
    checks: list[GateCheck] = []
    mine, theirs = candidate.get("metrics") or {}, reference.get("metrics") or {}
    for metric, margin in sorted(policy.not_behind_physics.items()):
        if metric == "real_missed_aggressive":
            missed = missed_against(candidate, reference)
            found = len(reference.get("aggressive_found", []))
            checks.append(
                GateCheck(
                    metric,
                    PHYSICS_RULE,
                    float(len(missed)),
                    margin,
                    len(missed) <= margin,
                    float(found),
                    reference_label,
                    advisory,
                )
            )
            continue
        value, baseline = mine.get(metric), theirs.get(metric)
        if value is None or baseline is None:
            continue  # nothing to measure (no hours of normal driving)
        bound = float(baseline) + margin if REAL_METRIC_DIRECTIONS[metric] < 0 else float(baseline) - margin
        passed = value <= bound + 1e-12 if REAL_METRIC_DIRECTIONS[metric] < 0 else value >= bound - 1e-12
        checks.append(
            GateCheck(metric, PHYSICS_RULE, float(value), bound, passed, float(baseline), reference_label, advisory)
        )
    return checks


def decide(
    policy: GatePolicy,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    compared_with: str | None = None,
    *,
    real_candidate: dict[str, Any] | None = None,
    real_reference: dict[str, Any] | None = None,
    reference_label: str = PHYSICS_MODEL_VERSION,
    real_data_advisory: bool = False,
) -> GateDecision:
    """Every check of `policy` on the candidate's (and champion's) headline metrics, and on real data
    when both real-data sections are given (and hold at least one recording)."""
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
    if real_candidate is not None and real_reference is not None and real_candidate.get("recordings"):
        checks += physics_checks(policy, real_candidate, real_reference, reference_label, advisory=real_data_advisory)
    return GateDecision(all(check.holds for check in checks), tuple(checks), compared_with if champion else None)
