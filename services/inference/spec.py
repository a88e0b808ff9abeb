"""The inference service as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServiceSpec

SPEC = ServiceSpec(
    name="inference",
    description="stream processor on uploads: windows, features, the rollout plan's models; detections out",
    start_order=20,
    settings="services.inference.settings.InferenceSettings",
    module="services.inference",
    run="services.inference.wiring.run",
    # faust's web server (/healthz, /readyz, /metrics).
    port=8084,
    port_variable="MICHI_INFERENCE_PORT",
    host_variable="MICHI_INFERENCE_HOST",
    lag_topics=("uploads.v1",),
)
