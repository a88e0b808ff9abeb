"""Rollout controller settings (environment variables `MICHI_ROLLOUTS_*` plus the shared `MICHI_*`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from michi.rollouts.bandit import (
    DEFAULT_ALLOCATION_INTERVAL_SECONDS,
    DEFAULT_END_PROBABILITY,
    DEFAULT_MINIMUM_CHANGE,
    DEFAULT_MINIMUM_REWARDS_PER_ARM,
    DEFAULT_MINIMUM_SHARE,
)
from michi.rollouts.policy import RolloutPolicy, RolloutPolicyError
from michi.rollouts.sequential import DEFAULT_ALPHA, DEFAULT_MINIMUM_TRIALS_PER_ARM, DEFAULT_TAU_SQUARED
from michi.settings import MichiSettings
from services.rollouts.adapters.policy_file import read_rollout_policy


class RolloutsSettings(MichiSettings):
    # /healthz, /readyz and /metrics on this address and port; 0.0.0.0 in a container.
    rollouts_host: str = "127.0.0.1"
    rollouts_port: int = Field(default=8088, ge=0, le=65535)
    # Every this many seconds each running rollout is looked at (its next step, analysis or test look).
    rollouts_interval_s: float = Field(default=30.0, gt=0)
    # Trip segments, detections, inference errors and drift episodes older than this (event time) are deleted:
    # keep it longer than the longest canary step an analysis reads.
    rollouts_signal_retention_s: float = Field(default=14 * 86400.0, gt=0)
    # A/B tests (strategy ab, no steps): the always-valid test's error rate, the prior variance of the accuracy
    # difference (tau^2; 0.0025 suits differences of a few points) and the labelled windows each arm needs
    # before a look counts (docs/rollouts.md, `sequential`).
    rollouts_ab_alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=1)
    rollouts_ab_tau_squared: float = Field(default=DEFAULT_TAU_SQUARED, gt=0)
    rollouts_ab_minimum_labels: int = Field(default=int(DEFAULT_MINIMUM_TRIALS_PER_ARM), ge=1)
    # Bandits (strategy bandit; docs/rollouts.md, *Bandit rollouts*): every arm keeps at least this share of the
    # devices (exploration), a new allocation goes out at most every this many seconds and only when a share moves
    # by more than this (0.02 = 2 percentage points), and the bandit ends when one arm is the best with this
    # probability and every arm has this many labels: promoted / rolled back automatically if allowed, else it
    # keeps allocating until a person ends it.
    rollouts_bandit_minimum_share: float = Field(default=DEFAULT_MINIMUM_SHARE, ge=0, le=0.5)
    rollouts_bandit_interval_s: float = Field(default=DEFAULT_ALLOCATION_INTERVAL_SECONDS, gt=0)
    rollouts_bandit_minimum_change: float = Field(default=DEFAULT_MINIMUM_CHANGE, ge=0, lt=1)
    rollouts_bandit_end_probability: float = Field(default=DEFAULT_END_PROBABILITY, gt=0.5, le=1)
    rollouts_bandit_minimum_labels: int = Field(default=DEFAULT_MINIMUM_REWARDS_PER_ARM, ge=1)
    rollouts_bandit_automatic_promotion: bool = True
    rollouts_bandit_automatic_rollback: bool = True
    # The rollout policy (YAML or JSON; docs/rollouts.md, *The rollout policy*): which candidates that passed the
    # trainer's gate start a rollout by themselves, and whether a rollout's end promotes automatically. Unset:
    # people start every rollout, and ends promote.
    rollouts_policy: Path | None = None

    @field_validator("rollouts_policy")
    @classmethod
    def _policy_readable(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                read_rollout_policy(path)
            except RolloutPolicyError as error:
                raise ValueError("; ".join(error.problems)) from error
        return path

    def rollout_policy(self) -> RolloutPolicy:
        """The policy the file says (read again: the file checked at start), or the default without one."""
        return read_rollout_policy(self.rollouts_policy) if self.rollouts_policy is not None else RolloutPolicy()
