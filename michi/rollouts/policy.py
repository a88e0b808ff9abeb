"""The rollout policy: which candidates start a rollout by themselves, and whether a rollout's end promotes.

    policy = parse_rollout_policy(open("rollouts-policy.yaml").read())   # RolloutPolicyError lists every problem
    policy.auto_start.strategy, policy.automatic_promotion

The document (YAML or JSON; the rollout controller reads it from `MICHI_ROLLOUTS_POLICY`):

    auto_start:                 # optional: without it, people start every rollout
      strategy: canary          # canary (needs steps), ab or bandit
      steps:                    # canary: the rollout document (docs/rollouts.md), inline or a file path
        steps: [{set_weight: 10}, {analyse: {success: [...]}}, {set_weight: 50}, {analyse: {success: [...]}}]
      weight: 10                # canary without steps, or ab: the candidate's share in percent
      models: [michi-risk]      # optional: only these models (default: every model)
      actors: [trainer]         # optional: whose shadow placements start a rollout (default: trainer)
    promotion: automatic        # automatic (default) or manual: a rollout that would promote holds for a person

A version starts a rollout by the policy (`auto_start_due`) when it is in shadow, the last change that put it
there was made by one of `actors` (the trainer puts a candidate in shadow only once it passed its gate and was
registered), no rollout of its model is running or paused, it has never been in a rollout, and the model has a
champion. The controller reads the file before it starts; a path under `steps` is resolved from the policy
file's folder by the caller (`resolve_steps`), so this module stays pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from michi.rollouts.steps import RolloutSpecError, load_document, rollout_spec_from_mapping

STRATEGIES = ("canary", "ab", "bandit")
PROMOTION_CHOICES = ("automatic", "manual")
DEFAULT_ACTORS = ("trainer",)
_AUTO_START_KEYS = ("strategy", "steps", "weight", "models", "actors")
_POLICY_KEYS = ("auto_start", "promotion")


class RolloutPolicyError(ValueError):
    """A policy document that cannot be followed; `problems` holds every problem, each with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid rollout policy:\n" + "\n".join(f"  - {problem}" for problem in self.problems))


@dataclass(frozen=True)
class AutoStart:
    """How a candidate that passed the trainer's gate starts its rollout."""

    strategy: str
    # The canary's rollout document (validated), or None: a single weight (canary, A/B) or a bandit.
    document: Mapping[str, Any] | None = None
    weight: float | None = None
    # Empty: every model.
    models: tuple[str, ...] = ()
    actors: tuple[str, ...] = DEFAULT_ACTORS

    def covers(self, model_name: str) -> bool:
        return not self.models or model_name in self.models


@dataclass(frozen=True)
class RolloutPolicy:
    auto_start: AutoStart | None = None
    # False: a rollout that would promote holds at its end until a person promotes it (`michi rollouts promote`).
    automatic_promotion: bool = True


@dataclass(frozen=True)
class ShadowPlacement:
    """A version in shadow, and what the registry says of how it got there and of its model's rollouts."""

    model_name: str
    version: str
    # Who put it in shadow last (None when no change put it there), and why.
    placed_by: str | None
    reason: str
    ever_in_rollout: bool
    model_has_rollout: bool
    model_has_champion: bool


def auto_start_due(policy: AutoStart, placement: ShadowPlacement) -> str | None:
    """None when the policy starts a rollout of `placement` now, else why not (one line)."""
    if not policy.covers(placement.model_name):
        return f"model {placement.model_name} is not in the policy's models"
    if placement.placed_by is None or placement.placed_by not in policy.actors:
        return f"put in shadow by {placement.placed_by or 'nobody'}, not by {', '.join(policy.actors)}"
    if placement.ever_in_rollout:
        return "already rolled out once"
    if placement.model_has_rollout:
        return "another rollout of the model is running or paused"
    if not placement.model_has_champion:
        return "the model has no champion to compare with"
    return None


def parse_rollout_policy(text: str, resolve_steps: Callable[[str], str] | None = None) -> RolloutPolicy:
    """A policy from YAML or JSON text; `resolve_steps(path)` reads a rollout document named by path."""
    return rollout_policy_from_mapping(load_document(text) or {}, resolve_steps)


def rollout_policy_from_mapping(document: Any, resolve_steps: Callable[[str], str] | None = None) -> RolloutPolicy:
    """A policy from a parsed document, strictly validated (`RolloutPolicyError` with every problem)."""
    problems: list[str] = []
    if not isinstance(document, Mapping):
        raise RolloutPolicyError([f"the policy must be a mapping, got {type(document).__name__}"])
    _unknown(document, _POLICY_KEYS, "", problems)
    promotion = document.get("promotion", "automatic")
    if promotion not in PROMOTION_CHOICES:
        problems.append(f"promotion: must be one of {', '.join(PROMOTION_CHOICES)}, got {promotion!r}")
    auto_start = None
    if document.get("auto_start") is not None:
        auto_start = _auto_start(document["auto_start"], resolve_steps, problems)
    if problems:
        raise RolloutPolicyError(problems)
    return RolloutPolicy(auto_start=auto_start, automatic_promotion=promotion != "manual")


def _auto_start(body: Any, resolve_steps: Callable[[str], str] | None, problems: list[str]) -> AutoStart | None:
    path = "auto_start"
    if not isinstance(body, Mapping):
        problems.append(f"{path}: must be a mapping with a strategy, got {body!r}")
        return None
    before = len(problems)
    _unknown(body, _AUTO_START_KEYS, path, problems)
    strategy = body.get("strategy")
    if strategy not in STRATEGIES:
        problems.append(f"{path}.strategy: must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    steps = body.get("steps")
    document: Mapping[str, Any] | None = None
    if isinstance(steps, str):
        if resolve_steps is None:
            problems.append(f"{path}.steps: a path ({steps!r}) needs a policy read from a file")
        else:
            try:
                steps = load_document(resolve_steps(steps))
            except (OSError, RolloutSpecError) as error:
                problems.append(f"{path}.steps: {steps!r} cannot be read: {error}")
                steps = None
    if steps is not None:
        try:
            rollout_spec_from_mapping(steps)
            document = dict(steps) if isinstance(steps, Mapping) else None
        except RolloutSpecError as error:
            problems.extend(f"{path}.steps: {problem}" for problem in error.problems)
    weight = body.get("weight")
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 100
    ):
        problems.append(f"{path}.weight: must be a number in (0, 100], got {weight!r}")
    if document is not None and strategy != "canary":
        problems.append(f"{path}.steps: a rollout document describes a canary, not {strategy!r}")
    if document is not None and weight is not None:
        problems.append(f"{path}: give steps or a weight, not both")
    if strategy == "bandit" and weight is not None:
        problems.append(f"{path}.weight: a bandit sets its own shares")
    if strategy == "canary" and document is None and weight is None and "steps" not in body:
        problems.append(f"{path}.steps: a canary started by policy needs its steps (or a weight, driven by hand)")
    models = _names(body, "models", (), path, problems)
    actors = _names(body, "actors", DEFAULT_ACTORS, path, problems)
    if len(problems) > before:
        return None
    return AutoStart(
        strategy=str(strategy),
        document=document,
        weight=float(weight) if weight is not None else None,
        models=models,
        actors=actors,
    )


def _names(
    body: Mapping[str, Any], key: str, default: tuple[str, ...], path: str, problems: list[str]
) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return default
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(isinstance(item, str) and item for item in value)
    ):
        problems.append(f"{path}.{key}: must be a list of names, got {value!r}")
        return default
    return tuple(value)


def _unknown(body: Mapping[str, Any], known: tuple[str, ...], path: str, problems: list[str]) -> None:
    for key in body:
        if key not in known:
            where = f"{path}.{key}" if path else str(key)
            problems.append(f"{where}: unknown key; expected one of {', '.join(known)}")
