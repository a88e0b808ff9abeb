"""Settings of the inference service (environment variables `MICHI_INFERENCE_*`)."""

from __future__ import annotations

from michi.settings import MichiSettings


class InferenceSettings(MichiSettings):
    # /healthz, /readyz and /metrics (faust's web server, bound to 127.0.0.1).
    inference_port: int = 8084
    # ONNX Runtime intra- and inter-op threads: one keeps latency predictable next to faust.
    inference_threads: int = 1
    # Uploads per faust batch (`take_events`), and how long to wait to fill one.
    inference_batch_size: int = 64
    inference_batch_within_s: float = 0.05
    # Windows whose risky probability is within this of the decision threshold are sent to people.
    inference_uncertainty_band: float = 0.15
    # Partitions of the device-state table; unset means "as many as the uploads topic has".
    inference_partitions: int | None = None
