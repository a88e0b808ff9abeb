"""Scoring settings (environment variables `MICHI_SCORING_*` plus the shared `MICHI_*`)."""

from __future__ import annotations

from pydantic import Field

from michi.settings import MichiSettings
from services.scoring.domain.limits import MAX_DRIVER_TRIPS


class ScoringSettings(MichiSettings):
    # /healthz, /readyz and /metrics (faust's web server) on this address and port; 0.0.0.0 in a container.
    scoring_host: str = "127.0.0.1"
    scoring_port: int = Field(8085, ge=1, le=65535)
    # After the trip-end upload arrived, wait this long for lost uploads or detections before closing incomplete.
    scoring_trip_end_grace_s: float = Field(120.0, gt=0)
    # With no trip-end upload at all, close a trip this long after its last message.
    scoring_trip_idle_timeout_s: float = Field(3600.0, gt=0)
    # The correction period: closed trips stay in (compacted) state this long, so labels, late detections and late
    # segments re-score them and redeliveries are recognised; labels wait this long for a trip that never arrives.
    scoring_closed_trip_retention_s: float = Field(7 * 86_400.0, gt=0)
    scoring_timer_interval_s: float = Field(5.0, gt=0)
    scoring_driver_window_days: float = Field(30.0, gt=0)
    # Trips a driver's state keeps (the newest; also no more than fit the state's byte bound).
    scoring_driver_max_trips: int = Field(200, ge=1, le=MAX_DRIVER_TRIPS)
    scoring_batch_size: int = Field(64, ge=1)
