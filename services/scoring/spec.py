"""The scoring service as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServiceSpec

SPEC = ServiceSpec(
    name="scoring",
    description="stream processor on detections: scored events, trip scores and rolling driver scores",
    start_order=30,
    settings="services.scoring.settings.ScoringSettings",
    module="services.scoring",
    run="services.scoring.wiring.run",
    # faust's web server (/healthz, /readyz, /metrics).
    port=8085,
    port_variable="MICHI_SCORING_PORT",
    host_variable="MICHI_SCORING_HOST",
    lag_topics=("detections.v1", "trip-segments.v1", "labels.v1"),
)
