"""Settings of the ingest service (environment variables `MICHI_INGEST_*`)."""

from __future__ import annotations

import math

from pydantic import Field, ValidationInfo, field_validator

from michi.settings import MichiSettings

DEFAULT_MAX_SAMPLES = 24_000
MEBIBYTE = 1024 * 1024


class IngestSettings(MichiSettings):
    """Where ingest listens and the limits it enforces on every upload."""

    # MICHI_INGEST_HOST: loopback by default so a fresh install exposes nothing.
    ingest_host: str = "127.0.0.1"
    ingest_http_port: int = Field(default=8080, ge=0, le=65535)
    # Processes serving HTTP and gRPC on the same ports (one core each at most); 1: this process serves.
    ingest_workers: int = Field(default=1, ge=1, le=64)
    ingest_max_body_bytes: int = Field(default=2 * MEBIBYTE, gt=0)
    # IMU rates accepted: any in this range, fractional ones included (Upload.sample_rate_exact_hz).
    ingest_min_sample_rate_hz: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    ingest_max_sample_rate_hz: float = Field(default=400.0, gt=0, allow_inf_nan=False)
    # An operator's allow-list of whole rates within the range (JSON: [25, 50, 100]); empty: any rate in it.
    ingest_sample_rates_hz: frozenset[int] = frozenset()
    # The longest span of one upload's IMU samples (240 s: what 6,000 samples at 25 Hz always allowed).
    ingest_max_upload_duration_s: float = Field(default=240.0, gt=0, allow_inf_nan=False)
    # Most IMU samples in one upload; None: the longest upload at the highest rate, at most 24,000
    # (400 Hz x 60 s). At 24,000 samples a protobuf upload is about 0.8 MB, well within ingest_max_body_bytes.
    ingest_max_samples: int | None = Field(default=None, gt=0)
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
    # The highest `sequence` an upload may carry (8,640: a day of 10 s uploads). Scoring keeps state for
    # every sequence of a trip up to the highest it saw, so this bounds one trip's state there.
    ingest_max_sequence: int = Field(default=8_640, ge=0)
    # How far a new upload's sequence may jump past its trip's highest accepted one (360: an hour of
    # 10 s uploads). Out-of-order and repeated sequences below it are always accepted.
    ingest_max_sequence_gap: int = Field(default=360, ge=1)
    # Token buckets in Redis shared by every replica: per device (sustained rate, burst) and for the fleet.
    ingest_device_rate_per_s: float = Field(default=5.0, gt=0)
    ingest_device_burst: int = Field(default=20, ge=1)
    ingest_global_rate_per_s: float = Field(default=2000.0, gt=0)
    # Signed requests (X-Michi-Timestamp/Nonce/Signature) are verified when present; required when true.
    ingest_require_signatures: bool = False
    ingest_signature_window_s: int = Field(default=300, gt=0)
    # gRPC door (services/ingest/entrypoints/grpc.py), served next to HTTP on ingest_host.
    ingest_grpc_port: int = Field(default=50051, ge=0, le=65535)
    # Largest gRPC message accepted; None: the HTTP body limit (ingest_max_body_bytes).
    ingest_grpc_max_message_bytes: int | None = Field(default=None, gt=0)
    # Uploads of one stream processed at once (awaiting Kafka); beyond it the stream is not read.
    ingest_grpc_stream_window: int = Field(default=8, ge=1, le=256)
    # Server reflection, honoured only with MICHI_ENV=dev (needs grpcio-reflection).
    ingest_grpc_reflection: bool = False
    # Media (PUT /v1/uploads/{upload_id}/media/{name}): largest accepted file and the allowed Content-Types.
    ingest_max_media_bytes: int = Field(default=50 * MEBIBYTE, gt=0)
    ingest_media_types: frozenset[str] = frozenset({"image/jpeg", "image/png", "video/mp4", "video/h264"})
    # Archive every accepted upload's canonical bytes to the blob store before publishing it.
    ingest_archive: bool = True

    @field_validator("ingest_max_sample_rate_hz")
    @classmethod
    def _range_not_empty(cls, maximum: float, info: ValidationInfo) -> float:
        minimum = info.data.get("ingest_min_sample_rate_hz")
        if minimum is not None and maximum < minimum:
            raise ValueError(f"{maximum:g} Hz is below MICHI_INGEST_MIN_SAMPLE_RATE_HZ ({minimum:g} Hz)")
        return maximum

    @field_validator("ingest_sample_rates_hz")
    @classmethod
    def _allowed_rates_in_range(cls, rates: frozenset[int], info: ValidationInfo) -> frozenset[int]:
        # A listed rate outside the range would be refused anyway: say so at start, not on every upload.
        minimum = info.data.get("ingest_min_sample_rate_hz")
        maximum = info.data.get("ingest_max_sample_rate_hz")
        if minimum is None or maximum is None:
            return rates
        outside = sorted(rate for rate in rates if not minimum <= rate <= maximum)
        if outside:
            raise ValueError(
                f"{outside} Hz outside MICHI_INGEST_MIN_SAMPLE_RATE_HZ-MICHI_INGEST_MAX_SAMPLE_RATE_HZ"
                f" ({minimum:g}-{maximum:g} Hz)"
            )
        return rates

    def resolved_max_samples(self) -> int:
        """`ingest_max_samples`, or the longest upload at the highest rate when it is not set."""
        if self.ingest_max_samples is not None:
            return self.ingest_max_samples
        return min(DEFAULT_MAX_SAMPLES, math.ceil(self.ingest_max_sample_rate_hz * self.ingest_max_upload_duration_s))
