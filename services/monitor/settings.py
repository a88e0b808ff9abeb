"""Monitor settings (environment variables `MICHI_MONITOR_*` plus the shared `MICHI_*`): one block of thresholds."""

from __future__ import annotations

from pydantic import Field

from michi.settings import MichiSettings
from services.monitor.domain.drift import MIN_ROWS


class MonitorSettings(MichiSettings):
    # /healthz, /readyz and /metrics on this address and port; 0.0.0.0 in a container.
    monitor_host: str = "127.0.0.1"
    monitor_port: int = Field(default=8083, ge=0, le=65535)
    # Predictions per tumbling window (per model version and cohort).
    monitor_window_rows: int = Field(default=2000, ge=1)
    # Seconds without a new prediction after which an open window is judged on what it holds and closed.
    monitor_window_idle_s: float = Field(default=60.0, gt=0)
    # Fewer rows of a feature than this in a window: "insufficient data", never drift.
    monitor_min_rows: int = Field(default=MIN_ROWS, ge=1)
    # A feature drifts when its window's PSI reaches this; a drift alert needs this many drifting features.
    monitor_psi_threshold: float = Field(default=0.2, gt=0)
    monitor_min_drifted_features: int = Field(default=1, ge=1)
    # Sustained drift: this many drifting windows in one episode of a model version ask the trainer to retrain
    # (once per episode); 0 never.
    monitor_retrain_after_windows: int = Field(default=3, ge=0)
    # Rows per predicted class of the window that opens a drift episode sent to people (DRIFT_SAMPLE); 0 none.
    monitor_drift_sample_per_class: int = Field(default=5, ge=0, le=100)
    # Alert on models whose reference profile is low-resolution (reference-profile-1: PSI off by up to 0.4).
    monitor_alert_low_resolution: bool = False
