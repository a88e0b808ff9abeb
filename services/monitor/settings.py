"""Monitor settings (environment variables `MICHI_MONITOR_*` plus the shared `MICHI_*`): one block of thresholds."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from michi.kit import service_specs
from michi.settings import PLACEHOLDER_SECRETS, MichiSettings
from services.monitor.domain.drift import MIN_ROWS
from services.monitor.domain.resources import parse_scrape_targets
from services.monitor.domain.windows import COHORT_DIMENSIONS


def cohort_names(value: str) -> tuple[str, ...]:
    """The cohort dimensions named in `MICHI_MONITOR_COHORTS`."""
    return tuple(name.strip() for name in value.split(",") if name.strip())


# The shortest `MICHI_MONITOR_PAGE_TOKEN` accepted outside MICHI_ENV=dev.
MIN_TOKEN_LENGTH = 16


class MonitorSettings(MichiSettings):
    # /healthz, /readyz and /metrics on this address and port; 0.0.0.0 in a container.
    monitor_host: str = "127.0.0.1"
    monitor_port: int = Field(default=8083, ge=0, le=65535)
    # Predictions per tumbling window (per model version and cohort).
    monitor_window_rows: int = Field(default=20_000, ge=1)
    # Seconds without a new prediction after which an open window is judged on what it holds and closed.
    monitor_window_idle_s: float = Field(default=60.0, gt=0)
    # Fewer rows of a feature than this in a window: "insufficient data", never drift.
    monitor_min_rows: int = Field(default=MIN_ROWS, ge=1)
    # Rows from fewer devices than this in a window: "insufficient data" too (a few drivers are not a fleet).
    monitor_min_devices: int = Field(default=5, ge=1)
    # A feature drifts when its window's PSI reaches this; a drift alert needs this many drifting features.
    monitor_psi_threshold: float = Field(default=0.2, gt=0)
    monitor_min_drifted_features: int = Field(default=1, ge=1)
    # Drifting windows in a row before a drift episode alerts (1: at its first window).
    monitor_sustain_windows: int = Field(default=2, ge=1)
    # Sustained drift: this many drifting windows in one episode of a model version ask the trainer to retrain
    # (once per episode); 0 never.
    monitor_retrain_after_windows: int = Field(default=3, ge=0)
    # Rows per predicted class of the window that opens a drift episode sent to people (DRIFT_SAMPLE); 0 none.
    monitor_drift_sample_per_class: int = Field(default=5, ge=0, le=100)
    # Cohorts beside "all" (comma-separated: vehicle, rate, firmware; empty: none), at most this many per dimension
    # and model version; a window open this long closes on what it holds.
    monitor_cohorts: str = "vehicle,rate,firmware"
    monitor_max_cohorts: int = Field(default=8, ge=0, le=100)
    monitor_window_max_age_s: float = Field(default=3600.0, gt=0)
    # Every this many seconds a version's reference profile is read again: a changed one (`michi models reprofile`)
    # closes the version's open windows and judges the next ones against it.
    monitor_profile_refresh_s: float = Field(default=60.0, gt=0)
    # Alert on models whose reference profile is low-resolution (reference-profile-1: PSI off by up to 0.4).
    monitor_alert_low_resolution: bool = False
    # Concept drift: ADWIN's confidence over the correctness of random-QA labels; a rise asks for a retrain.
    monitor_adwin_delta: float = Field(default=0.002, gt=0, lt=1)
    monitor_retrain_on_concept_drift: bool = True

    # --- resource watch (issue 17: memory headroom, consumer lag, cost; services/monitor/resources.py) ---
    # Every this many seconds the services' /metrics are scraped and the consumer groups' lag is read.
    monitor_scrape_interval_s: float = Field(default=5.0, gt=0)
    # Comma-separated `name=http://host:port/metrics`; empty: every service of the specs on 127.0.0.1 at its port.
    monitor_scrape_targets: str = ""
    # A memory alert when a service's RSS is at least this share of its memory limit for this many seconds.
    monitor_memory_headroom_ratio: float = Field(default=0.85, gt=0)
    monitor_memory_for_s: float = Field(default=30.0, ge=0)
    # A lag alert when a group (not the monitor's own) lags by more than this many records, or its oldest
    # unconsumed record is older than this many seconds, continuously for `monitor_lag_for_s` seconds.
    monitor_lag_records: int = Field(default=10_000, ge=0)
    monitor_lag_age_s: float = Field(default=300.0, ge=0)
    monitor_lag_for_s: float = Field(default=300.0, ge=0)
    # Prices of the daily cost report, USD: one CPU hour, one label; the day's budget (0: none).
    monitor_price_cpu_hour: float = Field(default=0.04, ge=0)
    monitor_price_label: float = Field(default=0.05, ge=0)
    monitor_daily_budget: float = Field(default=0.0, ge=0)

    # --- the monitor page (issue 17: GET / and /v1/monitor/* beside /metrics; services/monitor/entrypoints/page.py)
    # The page's public address (https://monitor.example.org), for links from alerts to their evidence; empty: none.
    monitor_page_url: str = ""
    # When set, the page and its JSON need it (`Authorization: Bearer <token>`, or `?token=` once). Unset, outside
    # MICHI_ENV=dev on an address other than loopback, they answer 403 (/healthz, /readyz, /metrics stay open).
    monitor_page_token: SecretStr | None = None

    @field_validator("monitor_page_url")
    @classmethod
    def _check_page_url(cls, value: str) -> str:
        value = value.strip()
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("MICHI_MONITOR_PAGE_URL must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("monitor_page_token", mode="before")
    @classmethod
    def _empty_page_token_is_none(cls, value: Any) -> Any:
        return None if value is None or value == "" else value

    @model_validator(mode="after")
    def _refuse_placeholder_page_token(self) -> MonitorSettings:
        token = self.monitor_page_token.get_secret_value() if self.monitor_page_token is not None else None
        if self.env != "dev" and token is not None and (token in PLACEHOLDER_SECRETS or len(token) < MIN_TOKEN_LENGTH):
            raise ValueError(
                f"MICHI_MONITOR_PAGE_TOKEN must be a real secret of at least {MIN_TOKEN_LENGTH} characters outside "
                "MICHI_ENV=dev"
            )
        return self

    @field_validator("monitor_cohorts")
    @classmethod
    def _check_cohorts(cls, value: str) -> str:
        unknown = [name for name in cohort_names(value) if name not in COHORT_DIMENSIONS]
        if unknown:
            raise ValueError(f"unknown cohort {unknown[0]!r}: choose among {', '.join(COHORT_DIMENSIONS)}")
        return value

    @field_validator("monitor_scrape_targets")
    @classmethod
    def _check_scrape_targets(cls, value: str) -> str:
        parse_scrape_targets(value)
        return value

    def scrape_targets(self) -> dict[str, str]:
        """Service name -> URL of its /metrics: `monitor_scrape_targets`, else every spec's port on 127.0.0.1."""
        if self.monitor_scrape_targets.strip():
            return parse_scrape_targets(self.monitor_scrape_targets)
        return {spec.name: f"{spec.url()}/metrics" for spec in service_specs()}
