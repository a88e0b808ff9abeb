"""The camera service as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServiceSpec

SPEC = ServiceSpec(
    name="camera",
    description="camera media joined with their uploads, analysed by the vision models: distraction, drowsiness, "
    "tailgating detections",
    # After inference and scoring (it feeds scoring the way inference does), before the warehouse.
    start_order=35,
    settings="services.camera.settings.CameraSettings",
    module="services.camera",
    run="services.camera.wiring.run",
    # /healthz, /readyz, /metrics (`michi.readiness.serve_operations`, services/camera/wiring.py).
    port=8087,
    port_variable="MICHI_CAMERA_PORT",
    host_variable="MICHI_CAMERA_HOST",
    # Ready once its consumer holds its partitions; the models open on start (a few hundred milliseconds).
    ready_within_s=90.0,
    lag_topics=("media.v1", "uploads.v1"),
)
