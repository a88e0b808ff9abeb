"""The trainer service as the platform runs it (`michi/kit`): read by `michi up`, `michi run`, `michi status`."""

from michi.kit import CliCommand, ServiceSpec

SPEC = ServiceSpec(
    name="trainer",
    description="datasets, reproducible training, the evaluation gate, ONNX export, registry and rollouts",
    # Last: it is ready once a champion exists, and on a fresh home it first trains (or takes from the cache)
    # the bootstrap model.
    start_order=60,
    settings="services.trainer.settings.TrainerSettings",
    module="services.trainer",
    run="services.trainer.wiring.run",
    port=8082,
    port_variable="MICHI_TRAINER_PORT",
    host_variable="MICHI_TRAINER_HOST",
    # One trainer per model registry: it predicts the next version number before writing the files, so a second
    # one races it for that number (docs/training.md).
    single_instance=True,
    # On a fresh machine it trains the bootstrap model and simulates the served traffic every reference profile
    # describes (about two minutes on two cores, beside the training); cached afterwards (seconds).
    ready_within_s=600.0,
    commands=(
        CliCommand("train", "services.trainer.entrypoints.cli.train_command"),
        CliCommand("experiments", "services.trainer.entrypoints.cli.experiments_app"),
    ),
    # PyTorch: `pip install 'michi[training]'`; the other services run without it (docs/deploy.md).
    extra="training",
    extra_modules=("torch",),
)
