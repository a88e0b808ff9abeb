"""Settings of the trainer (environment variables `MICHI_TRAINER_*` plus the shared `MICHI_*`).

JSON-valued ones: `MICHI_TRAINER_PARAMETERS` overrides training parameters
(e.g. `{"epochs": 8, "seed": 3}`), `MICHI_TRAINER_GATE` replaces the gate policy
(`{"minimums": {...}, "maximums": {...}, "not_behind_champion": {...}}`), and
`MICHI_TRAINER_SIMULATION` the simulated fleets of the ground-truth part of every dataset
(`{"fleets": [{"seed": 101, "sample_rate_hz": 50}], "devices": 12, "duration_s": 1200}`;
`{"fleets": []}` trains on consumed labels only).

Real recordings (`adapters/recordings.py`): `MICHI_TRAINER_REAL_RECORDINGS` is a folder of recordings
added to the evaluation's real-data section (beside the shipped ones, unless
`MICHI_TRAINER_SHIPPED_RECORDINGS=false`); `MICHI_TRAINER_REAL_TRAINING` a folder of labelled
recordings that become training data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator

from michi.settings import PLACEHOLDER_SECRETS, MichiSettings
from michi.windows.model_spec import MODEL_NAME


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "michi" / "models"


class TrainerSettings(MichiSettings):
    trainer_port: int = Field(default=8082, ge=1, le=65535)
    trainer_host: str = "127.0.0.1"
    # Bearer token for the /v1 API (runs, dry runs, experiment records). Required outside MICHI_ENV=dev;
    # in dev without one, the API answers loopback clients only.
    trainer_api_token: SecretStr | None = None
    trainer_model_name: str = MODEL_NAME
    # Retrain after this many new human labels (consensus, gold, adjudication); 0 turns it off.
    trainer_label_trigger: int = Field(default=100, ge=0)
    # Retrain this often (seconds since the last run started); 0 turns it off.
    trainer_schedule_s: float = Field(default=7 * 86_400.0, ge=0)
    # How often the service checks its triggers.
    trainer_check_interval_s: float = Field(default=5.0, gt=0)
    # Train and promote a first model from simulator ground truth when the registry has no champion.
    trainer_bootstrap: bool = True
    trainer_parameters: dict[str, Any] = Field(default_factory=dict)
    trainer_gate: dict[str, Any] | None = None
    trainer_simulation: dict[str, Any] | None = None
    # The traffic every registered model's reference profile describes (a `SimulationRecipe` as JSON; unset: the
    # fleet `michi up` drives, `REFERENCE_TRAFFIC`; `{"fleets": []}`: each model's training windows).
    trainer_reference_traffic: dict[str, Any] | None = None
    # Where deterministic training results are kept between runs (unset: ~/.cache/michi/models).
    trainer_cache_dir: Path | None = None
    # Largest |ONNX - PyTorch| probability difference accepted on held-out windows.
    trainer_parity_tolerance: float = Field(default=1e-4, gt=0)
    # ONNX Runtime threads when scoring champion and candidate on the test windows.
    trainer_evaluation_threads: int = Field(default=1, ge=1)
    # Recordings (files `michi.recordings.read_recording` reads, labels in <stem>.labels.csv) evaluated
    # in the real-data section of every evaluation, beside the ones shipped in datasets/real-driving.
    trainer_real_recordings: Path | None = None
    trainer_shipped_recordings: bool = True
    # Labelled recordings whose windows become training data (kept apart from the evaluation set).
    trainer_real_training: Path | None = None
    # Register the physics baseline physics-3 at start (once per registry).
    trainer_register_physics: bool = True

    @model_validator(mode="after")
    def _require_api_token_outside_dev(self) -> TrainerSettings:
        token = self.trainer_api_token.get_secret_value() if self.trainer_api_token is not None else ""
        if self.env != "dev" and token in PLACEHOLDER_SECRETS:
            raise ValueError("MICHI_TRAINER_API_TOKEN must be set to a real secret outside MICHI_ENV=dev")
        return self

    def resolved_cache_dir(self) -> Path:
        return self.trainer_cache_dir if self.trainer_cache_dir is not None else default_cache_dir()
