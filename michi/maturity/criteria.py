"""The fixed criteria of the MLOps maturity road (docs/maturity.md): Google's levels 0-2 and Microsoft's 0-4.

Each criterion is decided one of two ways:

- by this installation's records: `decide` reads them (`michi.maturity.evidence`) and says met or not met,
  with the ids it rests on;
- by the test suite: `tests` names the tests that show it (`path` or `path::test name`); CI runs them
  (`.ci/run`: `make lint`, `make test`), so the verdict is "shown by CI", never a hard-coded "met".

The list changes only with docs/maturity.md (tests/unit/test_maturity.py holds them to each other).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from michi.maturity import evidence
from michi.maturity.evidence import Finding
from michi.maturity.records import InstallationRecords


class Framework(StrEnum):
    GOOGLE = "google"
    MICROSOFT = "microsoft"


LEVEL_NAMES: dict[tuple[Framework, int], str] = {
    (Framework.GOOGLE, 0): "manual process",
    (Framework.GOOGLE, 1): "ML pipeline automation",
    (Framework.GOOGLE, 2): "CI/CD pipeline automation",
    (Framework.MICROSOFT, 0): "no MLOps",
    (Framework.MICROSOFT, 1): "DevOps but no MLOps",
    (Framework.MICROSOFT, 2): "automated training",
    (Framework.MICROSOFT, 3): "automated model deployment",
    (Framework.MICROSOFT, 4): "full MLOps automated operations",
}


@dataclass(frozen=True)
class Criterion:
    identifier: str
    framework: Framework
    level: int
    text: str
    # What a person runs to see the evidence (a finding may fill in the ids: `michi experiments show RUN_ID`).
    command: str
    decide: Callable[[InstallationRecords], Finding] | None = None
    # The tests that show a criterion about the code rather than this installation's records.
    tests: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.decide is None) == (not self.tests):
            raise ValueError(f"{self.identifier}: decided either by the records or by tests, exactly one")

    @property
    def level_name(self) -> str:
        return LEVEL_NAMES[(self.framework, self.level)]

    @property
    def decided_by(self) -> str:
        """The evidence function's name, or `tests`."""
        return self.decide.__name__ if self.decide is not None else "tests"


GOOGLE, MICROSOFT = Framework.GOOGLE, Framework.MICROSOFT

REPRODUCIBILITY_TEST = (
    "tests/unit/test_trainer_training.py::test_same_code_data_and_parameters_give_the_same_model_in_another_process"
)

CRITERIA: tuple[Criterion, ...] = (
    # --- Google, "MLOps: continuous delivery and automation pipelines in machine learning"
    Criterion(
        "google-0-model-served",
        GOOGLE,
        0,
        "A trained model is deployed and serves predictions",
        "michi models list",
        decide=evidence.champion_serves,
    ),
    Criterion(
        "google-1-orchestrated-experiment",
        GOOGLE,
        1,
        "The experiment's steps run as one orchestrated pipeline (fetch, preprocess, train, evaluate, register)",
        "michi experiments show RUN_ID",
        decide=evidence.pipeline_run,
    ),
    Criterion(
        "google-1-continuous-training",
        GOOGLE,
        1,
        "Continuous training: the pipeline runs in production on a trigger (new labels, schedule, alert)",
        "michi experiments list",
        decide=evidence.triggered_training,
    ),
    Criterion(
        "google-1-data-validation",
        GOOGLE,
        1,
        "Data validation: malformed uploads and labels are refused before serving or training use them",
        "make test",
        tests=(
            "tests/unit/test_ingest_validation.py",
            "tests/unit/test_trainer_events.py::test_a_label_a_dataset_cannot_use_is_refused_as_a_schema_violation",
        ),
    ),
    Criterion(
        "google-1-model-validation",
        GOOGLE,
        1,
        "Model validation: a candidate reaches the registry only by passing the evaluation gate",
        "michi experiments show RUN_ID",
        decide=evidence.gated_registration,
    ),
    Criterion(
        "google-1-metadata",
        GOOGLE,
        1,
        "ML metadata: each run records its code version, data version, parameters and metrics",
        "michi experiments show RUN_ID --json",
        decide=evidence.run_metadata,
    ),
    Criterion(
        "google-1-training-serving-symmetry",
        GOOGLE,
        1,
        "Training and serving compute features with the same code",
        "make test",
        tests=(
            "tests/unit/test_trainer_workflow.py::test_labels_are_rebuilt_from_the_archive_as_serving_computed_them",
        ),
    ),
    Criterion(
        "google-1-continuous-delivery",
        GOOGLE,
        1,
        "Continuous delivery of models: a newly trained model is deployed beside the champion without a person",
        "michi models history MODEL",
        decide=evidence.automatic_shadow,
    ),
    Criterion(
        "google-2-component-tests",
        GOOGLE,
        2,
        "CI tests the pipeline's components: dataset, training, evaluation, gate, workflow",
        "make test",
        tests=(
            "tests/unit/test_trainer_domain.py",
            "tests/unit/test_trainer_training.py",
            "tests/unit/test_trainer_workflow.py",
        ),
    ),
    Criterion(
        "google-2-training-converges",
        GOOGLE,
        2,
        "Training converges: the last run's loss goes down",
        "michi experiments show RUN_ID --json",
        decide=evidence.training_converges,
    ),
    Criterion(
        "google-2-export-parity",
        GOOGLE,
        2,
        "The served model computes what the trained model computes (export parity within tolerance)",
        "michi experiments show RUN_ID --json",
        decide=evidence.export_parity,
    ),
    Criterion(
        "google-2-reproducible",
        GOOGLE,
        2,
        "The same code, data and parameters give the same model",
        "make test",
        tests=(REPRODUCIBILITY_TEST,),
    ),
    Criterion(
        "google-2-integration-tests",
        GOOGLE,
        2,
        "The pipeline's services are tested together on real infrastructure",
        "make test",
        tests=(
            "tests/integration/test_trainer_service.py",
            "tests/integration/test_trainer_registry.py",
            "tests/integration/test_rollout_policy_end_to_end.py",
        ),
    ),
    Criterion(
        "google-2-pipeline-deployment",
        GOOGLE,
        2,
        "The pipeline itself is packaged and deployed from the repository (image, compose, Kubernetes)",
        "make test",
        tests=("tests/unit/test_deploy_files.py", "tests/unit/test_service_specs.py"),
    ),
    Criterion(
        "google-2-automated-deployment",
        GOOGLE,
        2,
        "Automated deployment: a model is promoted by policy after staged tests on live traffic",
        "michi rollouts history MODEL",
        decide=evidence.policy_promotion,
    ),
    Criterion(
        "google-2-monitoring-triggers-pipeline",
        GOOGLE,
        2,
        "Monitoring of live data triggers the pipeline: drift asked for a retrain and the trainer ran it",
        "michi alerts --kind retrain",
        decide=evidence.retrain_from_production,
    ),
    # --- Microsoft, "Machine learning operations maturity model"
    Criterion(
        "microsoft-0-model-in-production",
        MICROSOFT,
        0,
        "A model is built and in production",
        "michi models list",
        decide=evidence.champion_serves,
    ),
    Criterion(
        "microsoft-1-automated-builds-and-tests",
        MICROSOFT,
        1,
        "Automated builds and tests of the application code",
        "make lint && make test",
        tests=(
            "tests/unit/test_service_specs.py",
            "tests/integration/test_contracts_package.py",
            "tests/integration/test_torch_free_install.py",
        ),
    ),
    Criterion(
        "microsoft-1-application-telemetry",
        MICROSOFT,
        1,
        "Telemetry from production: services record traces of what they did",
        "michi trace UPLOAD_ID",
        decide=evidence.traces_recorded,
    ),
    Criterion(
        "microsoft-2-managed-training",
        MICROSOFT,
        2,
        "Training is managed and traceable: each run's code, data, parameters and metrics are recorded",
        "michi experiments show RUN_ID --json",
        decide=evidence.run_metadata,
    ),
    Criterion(
        "microsoft-2-reproducible",
        MICROSOFT,
        2,
        "Models are easy to reproduce",
        "make test",
        tests=(REPRODUCIBILITY_TEST,),
    ),
    Criterion(
        "microsoft-2-experiments-tracked",
        MICROSOFT,
        2,
        "Experiment results are tracked",
        "michi experiments list",
        decide=evidence.experiment_records,
    ),
    Criterion(
        "microsoft-2-versioned-models",
        MICROSOFT,
        2,
        "Models are versioned with the code and data that made them",
        "michi models show MODEL VERSION",
        decide=evidence.versioned_models,
    ),
    Criterion(
        "microsoft-3-automatic-releases",
        MICROSOFT,
        3,
        "Releases are low friction and automatic",
        "michi rollouts history MODEL",
        decide=evidence.policy_promotion,
    ),
    Criterion(
        "microsoft-3-traceability",
        MICROSOFT,
        3,
        "Full traceability from deployment back to the data: the served model to its dataset version and label ids",
        "michi models show MODEL VERSION",
        decide=evidence.served_lineage,
    ),
    Criterion(
        "microsoft-3-staged-environments",
        MICROSOFT,
        3,
        "Models move through managed stages (candidate, shadow or canary, champion) before production",
        "michi models history MODEL",
        decide=evidence.staged_path,
    ),
    Criterion(
        "microsoft-3-ab-testing",
        MICROSOFT,
        3,
        "Integrated A/B testing of model performance decides deployments",
        "michi rollouts history MODEL --json",
        decide=evidence.rollout_analysis,
    ),
    Criterion(
        "microsoft-3-automated-tests",
        MICROSOFT,
        3,
        "Automated tests for all code, at three levels (unit, integration, the whole platform)",
        "make test",
        tests=("tests/unit", "tests/integration", "tests/e2e/test_platform.py"),
    ),
    Criterion(
        "microsoft-4-monitored",
        MICROSOFT,
        4,
        "The system is monitored: live inputs are judged against each served version's reference",
        "michi drift",
        decide=evidence.monitored_windows,
    ),
    Criterion(
        "microsoft-4-centralized-metrics",
        MICROSOFT,
        4,
        "Verbose, centralized records of the deployed model: every prediction with its 4w2v",
        "michi warehouse query SQL",
        decide=evidence.warehouse_lineage,
    ),
    Criterion(
        "microsoft-4-retraining-on-production-metrics",
        MICROSOFT,
        4,
        "Retraining is triggered automatically by production metrics",
        "michi alerts --kind retrain",
        decide=evidence.retrain_from_production,
    ),
    Criterion(
        "microsoft-4-production-feedback",
        MICROSOFT,
        4,
        "Production tells how to improve: people label production windows for the next training",
        "michi train --dry-run",
        decide=evidence.production_labels,
    ),
    Criterion(
        "microsoft-4-policy-promotion-of-retrained",
        MICROSOFT,
        4,
        "A model retrained without a person is promoted by policy (the loop closes with no human step)",
        "michi rollouts history MODEL",
        decide=evidence.closed_loop,
    ),
)
