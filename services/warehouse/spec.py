"""The warehouse sink as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServiceSpec

SPEC = ServiceSpec(
    name="warehouse",
    description="sink of predictions and detections into Parquet for DuckDB",
    start_order=40,
    settings="services.warehouse.settings.WarehouseSettings",
    module="services.warehouse",
    run="services.warehouse.bootstrap.run",
    # /healthz, /readyz, /metrics on 127.0.0.1 (services/warehouse/entrypoints/health.py; no host variable yet).
    port=8086,
    port_variable="MICHI_WAREHOUSE_PORT",
)
