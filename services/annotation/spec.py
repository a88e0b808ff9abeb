"""The annotation service as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import CliCommand, ServiceSpec

SPEC = ServiceSpec(
    name="annotation",
    description="label queues for people: leased tasks, consensus labels out",
    start_order=50,
    settings="services.annotation.settings.AnnotationSettings",
    module="services.annotation",
    run="services.annotation.wiring.run",
    port=8081,
    port_variable="MICHI_ANNOTATION_PORT",
    host_variable="MICHI_ANNOTATION_HOST",
    commands=(CliCommand("annotators", "services.annotation.entrypoints.cli.annotators_app"),),
)
