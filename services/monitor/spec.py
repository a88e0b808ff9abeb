"""The monitor as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServiceSpec

SPEC = ServiceSpec(
    name="monitor",
    description="data drift of the served models' inputs: windows of predictions against reference profiles",
    # After the warehouse, before annotation: it reads what inference publishes and nobody waits for it.
    start_order=45,
    settings="services.monitor.settings.MonitorSettings",
    module="services.monitor",
    run="services.monitor.wiring.run",
    # /healthz, /readyz, /metrics (`michi.readiness.serve_operations`, services/monitor/wiring.py).
    port=8083,
    port_variable="MICHI_MONITOR_PORT",
    host_variable="MICHI_MONITOR_HOST",
    # Its windows (per cohort) are over every partition of the predictions: one consumer holds them all.
    single_instance=True,
)
