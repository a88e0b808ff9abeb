"""Settings of the inference service (environment variables `MICHI_INFERENCE_*`)."""

from __future__ import annotations

from pydantic import Field

from michi.settings import MichiSettings
from michi.windows.model_spec import MODEL_NAME


class InferenceSettings(MichiSettings):
    # /healthz, /readyz and /metrics (faust's web server) on this address and port; 0.0.0.0 in a container.
    inference_host: str = "127.0.0.1"
    inference_port: int = 8084
    # ONNX Runtime intra- and inter-op threads: one keeps latency predictable next to faust.
    inference_threads: int = 1
    # Uploads per faust batch (`take_events`), and how long to wait to fill one.
    inference_batch_size: int = 64
    inference_batch_within_s: float = 0.05
    # Windows whose risky probability is within this of the decision threshold are sent to people.
    inference_uncertainty_band: float = 0.15
    # Share of all windows sent to people anyway (LabelRequest reason RANDOM_QA), uncertain ones included.
    inference_qa_sample_rate: float = Field(default=0.005, ge=0.0, le=1.0)
    # Partitions of the device-state table; unset means "as many as the uploads topic has".
    inference_partitions: int | None = None
    # Registry model name whose rollout plans this service serves.
    inference_model_name: str = MODEL_NAME
    # At start, the rollout topic must be read to its end within this (else the service stops).
    inference_plan_timeout_s: float = 30.0
    # Model versions kept loaded besides the ones served (redelivered uploads replay with them).
    inference_retained_models: int = 4
    # Arms of one rollout plan served at once, shadow included (each is a loaded model); a plan with more is refused.
    inference_max_arms: int = Field(default=4, ge=1)
    # Largest model artifact fetched from the blob store.
    inference_model_max_bytes: int = 512 * 1024 * 1024
    # Shadow disagreement label requests: at most this many per upload, and this many per minute per worker.
    inference_shadow_requests_per_upload: int = 2
    inference_shadow_requests_per_minute: float = 60.0
