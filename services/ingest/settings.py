"""Settings of the ingest service (environment variables `MICHI_INGEST_*`)."""

from __future__ import annotations

from pydantic import Field

from michi.settings import MichiSettings

MEBIBYTE = 1024 * 1024


class IngestSettings(MichiSettings):
    """Where ingest listens and the limits it enforces on every upload."""

    # MICHI_INGEST_HOST: loopback by default so a fresh install exposes nothing.
    ingest_host: str = "127.0.0.1"
    ingest_http_port: int = Field(default=8080, ge=0, le=65535)
    ingest_max_body_bytes: int = Field(default=2 * MEBIBYTE, gt=0)
    ingest_sample_rates_hz: frozenset[int] = frozenset({25, 50, 100})
    # 100 Hz x 60 s: the longest upload a device may send.
    ingest_max_samples: int = Field(default=100 * 60, gt=0)
    ingest_max_gps_fixes: int = Field(default=10 * 60, gt=0)
    ingest_max_future_skew_s: float = Field(default=5 * 60, ge=0)
    ingest_max_age_s: float = Field(default=7 * 24 * 60 * 60, gt=0)
    # How long an accepted upload_id is remembered (retries after that are republished).
    ingest_idempotency_ttl_s: int = Field(default=7 * 24 * 60 * 60, gt=0)
    # How long a concurrent duplicate waits for the first copy's outcome.
    ingest_pending_wait_s: float = Field(default=5.0, gt=0)
    # Kafka must acknowledge within this, else 503 (the producer's message.timeout.ms matches it).
    ingest_publish_timeout_s: float = Field(default=10.0, gt=0)
    # Revocation takes effect within this many seconds.
    ingest_token_cache_ttl_s: float = Field(default=2.0, ge=0, le=2.0)
    ingest_max_missing_sequences: int = Field(default=100, ge=0)
