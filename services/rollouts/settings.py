"""Rollout controller settings (environment variables `MICHI_ROLLOUTS_*` plus the shared `MICHI_*`)."""

from __future__ import annotations

from pydantic import Field

from michi.rollouts.sequential import DEFAULT_ALPHA, DEFAULT_MINIMUM_TRIALS_PER_ARM, DEFAULT_TAU_SQUARED
from michi.settings import MichiSettings


class RolloutsSettings(MichiSettings):
    # /healthz, /readyz and /metrics on this address and port; 0.0.0.0 in a container.
    rollouts_host: str = "127.0.0.1"
    rollouts_port: int = Field(default=8088, ge=0, le=65535)
    # Every this many seconds each running rollout is looked at (its next step, analysis or test look).
    rollouts_interval_s: float = Field(default=30.0, gt=0)
    # A/B tests (strategy ab, no steps): the always-valid test's error rate, the prior variance of the accuracy
    # difference (tau^2; 0.0025 suits differences of a few points) and the labelled windows each arm needs
    # before a look counts (docs/rollouts.md, `sequential`).
    rollouts_ab_alpha: float = Field(default=DEFAULT_ALPHA, gt=0, lt=1)
    rollouts_ab_tau_squared: float = Field(default=DEFAULT_TAU_SQUARED, gt=0)
    rollouts_ab_minimum_labels: int = Field(default=int(DEFAULT_MINIMUM_TRIALS_PER_ARM), ge=1)
