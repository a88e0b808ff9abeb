"""Camera service settings (environment variables `MICHI_CAMERA_*` plus the shared `MICHI_*`).

The vision models are read from `MICHI_VISION_MODELS_DIR` (default `~/.cache/michi/vision/models`, written by
`make models`); without them the service stops at start with one line saying to run `make models` (in
`MICHI_ENV=dev` it idles instead, services/camera/wiring.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from michi.settings import MichiSettings


class CameraSettings(MichiSettings):
    # /healthz, /readyz and /metrics on this address and port; 0.0.0.0 in a container.
    camera_host: str = "127.0.0.1"
    camera_port: int = Field(default=8087, ge=0, le=65535)
    # The join's bounds (docs/camera.md, *Bounds*): a media item waits at most this long for its upload (then it
    # goes to dead letters, reason upload-not-arrived), and at most this many wait at once (the oldest go first,
    # reason waiting-limit).
    camera_media_wait_s: float = Field(default=3600.0, gt=0)
    camera_max_waiting_media: int = Field(default=10_000, ge=1)
    # An upload is kept this long for media sent after it, at most this many uploads (the oldest go first).
    camera_upload_retention_s: float = Field(default=3600.0, gt=0)
    camera_max_uploads: int = Field(default=200_000, ge=1)
    # A settled media item is remembered this long (a redelivery or a device's re-PUT changes nothing), at most
    # this many; a stream's analysis state (a driver's eye baseline) this long after its last update.
    camera_settled_retention_s: float = Field(default=7 * 86400.0, gt=0)
    camera_max_settled_media: int = Field(default=500_000, ge=1)
    camera_stream_retention_s: float = Field(default=7 * 86400.0, gt=0)
    # Decoding and analysis cost per media item: frames kept at most this many per second of a clip, at most
    # this many per item, decoding stops after this many frames, and items above this size are not read.
    camera_max_fps: float = Field(default=5.0, gt=0, le=60)
    camera_max_frames_per_item: int = Field(default=150, ge=1, le=4096)
    camera_max_decoded_frames: int = Field(default=1800, ge=1)
    camera_max_media_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    # The built vision models (`make models`); unset: `$MICHI_CACHE_DIR/vision/models` (~/.cache/michi/vision/models).
    # The image sets /opt/michi/vision-models, where its build put them (Dockerfile).
    vision_models_dir: Path | None = None
    # Intra-op threads of each ONNX Runtime session.
    camera_model_threads: int = Field(default=1, ge=1, le=64)
    # Register the vision model sets the service runs in the model registry at start (once per registry; a set
    # without a champion becomes its champion): `adapters/registration.py`.
    camera_register_models: bool = True
    # Human review of camera detections (docs/camera.md, *Review*): the share of detections asked for (1: every
    # one), chosen by a hash of the detection's event id, so a redelivery makes the same choice; a share per event
    # type overrides it (JSON, `{"tailgating": 0.1}`); a detection less confident than the last is asked for
    # whatever the share (0: none is forced).
    camera_review_share: float = Field(default=1.0, ge=0, le=1)
    camera_review_share_by_event_type: dict[
        Literal["distraction", "drowsiness", "tailgating"], Annotated[float, Field(ge=0, le=1)]
    ] = Field(default_factory=dict)
    camera_review_below_confidence: float = Field(default=0.0, ge=0, le=1)
