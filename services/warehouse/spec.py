"""The warehouse sink as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServiceSpec

SPEC = ServiceSpec(
    name="warehouse",
    description="sink of predictions and detections into Parquet for DuckDB",
    start_order=40,
    settings="services.warehouse.settings.WarehouseSettings",
    module="services.warehouse",
    run="services.warehouse.wiring.run",
    # /healthz, /readyz, /metrics (`michi.readiness.serve_operations`, services/warehouse/wiring.py).
    port=8086,
    port_variable="MICHI_WAREHOUSE_PORT",
    host_variable="MICHI_WAREHOUSE_HOST",
)
