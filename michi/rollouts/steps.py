"""The rollout document: a list of canary steps, read from YAML or JSON and strictly validated.

    spec = parse_rollout_spec(open("rollout.yaml").read())   # RolloutSpecError lists every problem
    spec.steps                                               # (SetWeight(10.0), Pause(600.0, None), Analyse(...), ...)

The document:

    analyses:                         # optional: named analyses that steps refer to by name
      label-agreement:
        interval: 10m                 # analyse every 10 minutes of the step (default 10m)
        deadline: 2h                  # still inconclusive after this: on_deadline (default 2h)
        on_deadline: rollback         # rollback (default) or hold (wait for a person; never promote)
        minimum_predictions: 1000     # per arm, before any prediction-based figure counts (default 1000)
        minimum_labelled_windows: 200 # per arm, before label agreement counts (default 200)
        minimum_km: 100               # per arm, before false alerts per 1,000 km count (default 100)
        minimum_uploads: 500          # per arm, before errors, latency and drift count (default 500)
        success:                      # all must hold to pass (at least one)
          - agreement_with_labels >= champion - 0.02
          - false_alerts_per_1000_km <= champion * 1.2
        failure:                      # any one that holds fails (omitted: a success condition not holding)
          - agreement_with_labels < champion - 0.05
          - errors_per_1000_uploads > 1
    steps:
      - set_weight: 10                # percent of devices on the candidate
      - pause: {duration: 10m}        # or {labelled_windows: 500}, or both (both must be reached)
      - analyse: label-agreement      # a name from `analyses`, or the analysis itself inline
      - set_weight: 50
      - pause: {labelled_windows: 500}
      - analyse: label-agreement

Durations are strings: a number and a unit, s, m, h or d, several in a row allowed (`1h30m`). Unknown keys,
wrong types, a step that is not exactly one of `set_weight`, `pause` and `analyse`, a weight outside
(0, 100], and a document whose last weight is never analysed are all refused with the path of the problem
(`steps[2].analyse.sucess: unknown key ...`): a rollout that cannot fail its analysis is a rollout that
promotes blindly. Finishing the steps promotes the candidate.

YAML needs PyYAML; without it a document must be JSON (JSON is YAML too, so a JSON document reads the same).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from michi.rollouts.analysis import (
    DEFAULT_MINIMUM_KM,
    DEFAULT_MINIMUM_LABELLED_WINDOWS,
    DEFAULT_MINIMUM_PREDICTIONS,
    DEFAULT_MINIMUM_UPLOADS,
    AnalysisSpec,
    Condition,
    parse_condition,
)

DEFAULT_INTERVAL_SECONDS = 600.0
DEFAULT_DEADLINE_SECONDS = 7200.0
ON_DEADLINE_CHOICES = ("rollback", "hold")

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_UNIT_SECONDS = (86400.0, 3600.0, 60.0, 1.0)
_ANALYSIS_KEYS = (
    "interval",
    "deadline",
    "on_deadline",
    "minimum_predictions",
    "minimum_labelled_windows",
    "minimum_km",
    "minimum_uploads",
    "success",
    "failure",
)


@dataclass(frozen=True)
class SetWeight:
    """Put `percent` of devices on the candidate (the champion keeps the rest)."""

    percent: float


@dataclass(frozen=True)
class Pause:
    """Wait until `duration_seconds` have passed and/or `labelled_windows` labels came in since the step began."""

    duration_seconds: float | None = None
    labelled_windows: int | None = None


@dataclass(frozen=True)
class Analyse:
    """Compare candidate and champion every `interval_seconds` until a verdict; past the deadline, `on_deadline`."""

    analysis: AnalysisSpec
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    on_deadline: str = "rollback"


Step = SetWeight | Pause | Analyse


@dataclass(frozen=True)
class RolloutSpec:
    """A validated rollout: its steps in order (finishing them promotes the candidate)."""

    steps: tuple[Step, ...]


class RolloutSpecError(ValueError):
    """A rollout document that cannot run; `problems` holds every problem, each with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid rollout document:\n" + "\n".join(f"  - {problem}" for problem in self.problems))


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `30s`, `10m`, `2h`, `1d`, `1h30m`; ValueError if it is not one or not positive."""
    match = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not a duration (a number and a unit s, m, h or d, e.g. '10m' or '1h30m')")
    seconds = sum(float(part) * unit for part, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if part)
    if not seconds > 0:
        raise ValueError(f"{text!r} is not a positive duration")
    return seconds


def parse_rollout_spec(text: str) -> RolloutSpec:
    """A rollout from a YAML (or JSON) document; raises `RolloutSpecError` with every problem found."""
    document = load_document(text)
    return rollout_spec_from_mapping(document)


def load_document(text: str) -> Any:
    """A YAML (or, without PyYAML, JSON) document as parsed; `RolloutSpecError` when it is neither."""
    try:
        import yaml  # PyYAML: present where the dev extras are; JSON documents need nothing
    except ImportError:
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise RolloutSpecError([f"not JSON ({error}); YAML documents need PyYAML (pip install pyyaml)"]) from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RolloutSpecError([f"not a YAML document: {error}"]) from error


def rollout_spec_from_mapping(document: Any) -> RolloutSpec:
    """A rollout from an already-parsed document (a mapping, e.g. built from CLI flags); strictly validated."""
    problems: list[str] = []
    if not isinstance(document, Mapping):
        raise RolloutSpecError([f"the document must be a mapping with 'steps', got {type(document).__name__}"])
    _unknown_keys(document, ("steps", "analyses"), "", problems)

    analyses: dict[str, Analyse] = {}
    named = document.get("analyses", {})
    if not isinstance(named, Mapping):
        problems.append("analyses: must be a mapping of name to analysis")
    else:
        for name, body in named.items():
            analysis = _parse_analyse(body, f"analyses.{name}", problems)
            if analysis is not None:
                analyses[str(name)] = analysis

    steps: list[Step] = []
    raw_steps = document.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        problems.append("steps: must be a non-empty list")
        raw_steps = []
    for index, raw in enumerate(raw_steps):
        step = _parse_step(raw, f"steps[{index}]", analyses, problems)
        if step is not None:
            steps.append(step)

    if not problems:
        last_weight = max((index for index, step in enumerate(steps) if isinstance(step, SetWeight)), default=None)
        analysed = [index for index, step in enumerate(steps) if isinstance(step, Analyse)]
        if not analysed:
            problems.append("steps: no analyse step; a rollout must be analysed before it is promoted")
        elif last_weight is not None and analysed[-1] < last_weight:
            problems.append(f"steps[{last_weight}]: the last weight is never analysed; add an analyse step after it")
    if problems:
        raise RolloutSpecError(problems)
    return RolloutSpec(tuple(steps))


def _unknown_keys(mapping: Mapping[Any, Any], allowed: tuple[str, ...], path: str, problems: list[str]) -> None:
    for key in mapping:
        if key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            problems.append(f"{where}: unknown key; expected one of {', '.join(allowed)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _parse_step(raw: Any, path: str, analyses: Mapping[str, Analyse], problems: list[str]) -> Step | None:
    kinds = ("set_weight", "pause", "analyse")
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in kinds:
        problems.append(f"{path}: a step is exactly one of {', '.join(kinds)} (e.g. '- set_weight: 10'), got {raw!r}")
        return None
    kind, body = next(iter(raw.items()))
    if kind == "set_weight":
        if not _is_number(body) or not 0 < body <= 100:
            problems.append(f"{path}.set_weight: must be a percent in (0, 100], got {body!r}")
            return None
        return SetWeight(float(body))
    if kind == "pause":
        return _parse_pause(body, f"{path}.pause", problems)
    if isinstance(body, str):
        if body not in analyses:
            known = ", ".join(analyses) or "none declared"
            problems.append(f"{path}.analyse: no analysis named {body!r} under 'analyses' ({known})")
            return None
        return analyses[body]
    return _parse_analyse(body, f"{path}.analyse", problems)


def _parse_pause(body: Any, path: str, problems: list[str]) -> Pause | None:
    if not isinstance(body, Mapping) or not body:
        problems.append(f"{path}: must be a mapping with duration and/or labelled_windows, got {body!r}")
        return None
    before = len(problems)
    _unknown_keys(body, ("duration", "labelled_windows"), path, problems)
    duration = _duration(body, "duration", None, path, problems)
    labelled = body.get("labelled_windows")
    if labelled is not None and (not isinstance(labelled, int) or isinstance(labelled, bool) or labelled < 1):
        problems.append(f"{path}.labelled_windows: must be a positive whole number, got {labelled!r}")
    if len(problems) > before:
        return None
    return Pause(duration, labelled)


def _duration(body: Mapping[str, Any], key: str, default: float | None, path: str, problems: list[str]) -> float | None:
    if key not in body:
        return default
    try:
        return parse_duration(body[key])
    except ValueError as error:
        problems.append(f"{path}.{key}: {error}")
        return default


def _whole(body: Mapping[str, Any], key: str, default: int, path: str, problems: list[str]) -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        problems.append(f"{path}.{key}: must be a positive whole number, got {value!r}")
        return default
    return value


def _conditions(body: Mapping[str, Any], key: str, path: str, problems: list[str]) -> tuple[Condition, ...]:
    raw = body.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(item, str) for item in raw):
        problems.append(f"{path}.{key}: must be a list of conditions such as 'errors_per_1000 <= 1', got {raw!r}")
        return ()
    conditions = []
    for index, text in enumerate(raw):
        try:
            conditions.append(parse_condition(text))
        except ValueError as error:
            problems.append(f"{path}.{key}[{index}]: {error}")
    return tuple(conditions)


def _parse_analyse(body: Any, path: str, problems: list[str]) -> Analyse | None:
    if not isinstance(body, Mapping):
        problems.append(f"{path}: must be a mapping with success (and failure) conditions, got {body!r}")
        return None
    before = len(problems)
    _unknown_keys(body, _ANALYSIS_KEYS, path, problems)
    interval = _duration(body, "interval", DEFAULT_INTERVAL_SECONDS, path, problems) or DEFAULT_INTERVAL_SECONDS
    deadline = _duration(body, "deadline", DEFAULT_DEADLINE_SECONDS, path, problems) or DEFAULT_DEADLINE_SECONDS
    if deadline < interval:
        problems.append(f"{path}.deadline: {deadline:g} s is shorter than the interval {interval:g} s")
    on_deadline = body.get("on_deadline", "rollback")
    if on_deadline not in ON_DEADLINE_CHOICES:
        problems.append(f"{path}.on_deadline: must be one of {', '.join(ON_DEADLINE_CHOICES)}, got {on_deadline!r}")
    minimum_predictions = _whole(body, "minimum_predictions", DEFAULT_MINIMUM_PREDICTIONS, path, problems)
    minimum_labelled = _whole(body, "minimum_labelled_windows", DEFAULT_MINIMUM_LABELLED_WINDOWS, path, problems)
    minimum_km = body.get("minimum_km", DEFAULT_MINIMUM_KM)
    if not _is_number(minimum_km) or not minimum_km > 0:
        problems.append(f"{path}.minimum_km: must be a positive number, got {minimum_km!r}")
        minimum_km = DEFAULT_MINIMUM_KM
    minimum_uploads = _whole(body, "minimum_uploads", DEFAULT_MINIMUM_UPLOADS, path, problems)
    success = _conditions(body, "success", path, problems)
    failure = _conditions(body, "failure", path, problems)
    if "success" not in body or (isinstance(body.get("success"), list) and not body["success"]):
        problems.append(f"{path}.success: at least one success condition is required")
    if len(problems) > before:
        return None
    analysis = AnalysisSpec(
        success=success,
        failure=failure,
        minimum_predictions=minimum_predictions,
        minimum_labelled_windows=minimum_labelled,
        minimum_km=float(minimum_km),
        minimum_uploads=minimum_uploads,
    )
    return Analyse(analysis, interval_seconds=interval, deadline_seconds=deadline, on_deadline=str(on_deadline))
