"""The rollout policy file (`MICHI_ROLLOUTS_POLICY`): read once at start, a `steps` path resolved from its folder."""

from __future__ import annotations

from pathlib import Path

from michi.rollouts.policy import RolloutPolicy, RolloutPolicyError, parse_rollout_policy


def read_rollout_policy(path: Path) -> RolloutPolicy:
    """The policy in `path`; `RolloutPolicyError` (every problem) or `OSError` when it cannot be followed."""
    folder = path.parent

    def read_steps(name: str) -> str:
        steps = Path(name).expanduser()
        return (steps if steps.is_absolute() else folder / steps).read_text(encoding="utf-8")

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RolloutPolicyError([f"{path}: {error.strerror or error}"]) from error
    return parse_rollout_policy(text, read_steps)
