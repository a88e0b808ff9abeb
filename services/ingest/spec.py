"""The ingest service as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServicePort, ServiceSpec

SPEC = ServiceSpec(
    name="ingest",
    description="the front door for dashcams: HTTP and gRPC uploads in, UploadReceived out",
    start_order=10,
    settings="services.ingest.settings.IngestSettings",
    module="services.ingest",
    run="services.ingest.wiring.run",
    port=8080,
    port_variable="MICHI_INGEST_HTTP_PORT",
    host_variable="MICHI_INGEST_HOST",
    # gRPC `michi.v1.Ingest` on the same host (services/ingest/entrypoints/grpc.py).
    other_ports=(ServicePort("grpc", 50051, "MICHI_INGEST_GRPC_PORT"),),
)
