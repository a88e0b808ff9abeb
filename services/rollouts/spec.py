"""The rollout controller as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import ServiceSpec

SPEC = ServiceSpec(
    name="rollouts",
    description=(
        "the rollout controller: starts rollouts by policy, canary steps analysed on labels, false alerts per km, "
        "errors, latency and drift, A/B tests and bandits"
    ),
    # Last, after the trainer: it drives rollouts of the versions the trainer registers, and nobody waits for it.
    start_order=70,
    settings="services.rollouts.settings.RolloutsSettings",
    module="services.rollouts",
    run="services.rollouts.wiring.run",
    # /healthz, /readyz, /metrics (`michi.readiness.serve_operations`, services/rollouts/wiring.py).
    port=8088,
    port_variable="MICHI_ROLLOUTS_PORT",
    host_variable="MICHI_ROLLOUTS_HOST",
    # One controller per model registry: two would each take the same decision (the registry refuses the second,
    # but the first one's evidence and the second's log would disagree).
    single_instance=True,
    # Ready once its consumer holds its partitions (seconds): no model or data to load first.
    ready_within_s=60.0,
)
