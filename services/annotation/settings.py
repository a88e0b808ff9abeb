"""Settings of the annotation service (environment variables `MICHI_ANNOTATION_*` plus the shared `MICHI_*`)."""

from __future__ import annotations

from pydantic import Field, model_validator

from michi.settings import MichiSettings

KIBIBYTE = 1024


class AnnotationSettings(MichiSettings):
    """Where the page and API listen, how tasks are leased and decided, and the limits on requests."""

    # MICHI_ANNOTATION_HOST: loopback by default so a fresh install exposes nothing.
    annotation_host: str = "127.0.0.1"
    annotation_port: int = Field(default=8081, ge=0, le=65535)
    # How long a leased task stays with its annotator before it returns to the queue.
    annotation_lease_s: float = Field(default=120.0, gt=0, le=24 * 3600)
    # A late answer is recognised (accepted or kept as an extra vote) this long after its lease ended.
    annotation_late_window_s: float = Field(default=24 * 3600.0, gt=0)
    # Consensus: k votes per task, at most max when they disagree; then the winner's weighted share.
    annotation_votes_required: int = Field(default=2, ge=1, le=10)
    annotation_max_votes: int = Field(default=3, ge=1, le=20)
    annotation_min_share: float = Field(default=0.6, ge=0.5, le=1.0)
    annotation_min_support_weight: float = Field(default=1.0, ge=0)
    # Annotator quality from gold tasks.
    annotation_gold_window: int = Field(default=50, ge=1)
    annotation_gold_min_answers: int = Field(default=5, ge=1)
    annotation_accuracy_threshold: float = Field(default=0.7, ge=0, le=1)
    annotation_gold_rate: float = Field(default=0.1, ge=0, le=1)
    annotation_new_annotator_gold_rate: float = Field(default=0.25, ge=0, le=1)
    annotation_low_accuracy_gold_rate: float = Field(default=0.4, ge=0, le=1)
    # A task skipped by this many annotators goes to a lead.
    annotation_max_skips: int = Field(default=5, ge=1)
    # Tasks looked at per lease for one the annotator has not answered or skipped yet.
    annotation_lease_scan: int = Field(default=200, ge=1, le=10_000)
    # Sessions: signed-in tokens expire after this.
    annotation_session_ttl_s: float = Field(default=12 * 3600.0, gt=0)
    # Limits: request bodies, requests per signed-in account per second, failed sign-ins per name per window.
    annotation_max_body_bytes: int = Field(default=16 * KIBIBYTE, gt=0)
    annotation_rate_per_s: int = Field(default=30, ge=1)
    annotation_signin_attempts: int = Field(default=10, ge=1)
    annotation_signin_window_s: int = Field(default=300, ge=1)
    # Context shown around a window on the page, and the most points per plotted series.
    annotation_context_s: float = Field(default=2.0, ge=0, le=60)
    annotation_max_points: int = Field(default=1500, ge=10, le=20_000)
    # Largest camera frame or clip the page may fetch through the API.
    annotation_max_media_bytes: int = Field(default=20 * 1024 * KIBIBYTE, gt=0)
    # A camera review's evidence frames: the media item read (at most this many bytes: ingest's and the camera
    # service's limit), its frames scaled to this many pixels on the longer side, and the encoded strips kept.
    annotation_max_frame_media_bytes: int = Field(default=50 * 1024 * KIBIBYTE, gt=0)
    annotation_frame_max_side: int = Field(default=960, ge=64, le=4096)
    annotation_frames_cache_bytes: int = Field(default=64 * 1024 * KIBIBYTE, ge=0)
    # Background upkeep (expired leases, stalled submissions, labels not yet acknowledged by Kafka).
    annotation_upkeep_interval_s: float = Field(default=1.0, gt=0)
    # Consume label requests (off: API only, e.g. for tests that feed tasks directly).
    annotation_consume: bool = True
    annotation_consumer_batch: int = Field(default=200, ge=1)

    @model_validator(mode="after")
    def _check_votes(self) -> AnnotationSettings:
        if self.annotation_max_votes < self.annotation_votes_required:
            raise ValueError("MICHI_ANNOTATION_MAX_VOTES must be >= MICHI_ANNOTATION_VOTES_REQUIRED")
        return self
