"""Training on a small simulated fleet: reproducibility across processes, ONNX parity, and the gate refusing worse models.

Run: .venv/bin/pytest tests/unit/test_trainer_training.py -q
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from michi.windows.features import FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from services.trainer.adapters.onnx_model import OnnxRiskModel, export_onnx, parity_max_abs_diff, sha256_hex, signature
from services.trainer.adapters.simulation import FleetRecipe, SimulationRecipe, simulated_windows
from services.trainer.domain.dataset import Dataset, build_dataset
from services.trainer.domain.evaluation import evaluate
from services.trainer.domain.gate import GatePolicy, decide
from services.trainer.domain.training import TrainingParameters, train_model

RECIPE = SimulationRecipe(
    fleets=(FleetRecipe(11, 50),),
    devices=8,
    duration_s=600.0,
    event_rate_per_10min=14.0,
    confounder_rate_per_10min=10.0,
)
PARAMETERS = TrainingParameters(epochs=8, test_percent=30)
ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter: what a second machine (same code, data, parameters) would produce.
CHILD = """
import json, sys
from services.trainer.adapters.onnx_model import OnnxRiskModel, export_onnx, sha256_hex
from services.trainer.adapters.simulation import FleetRecipe, SimulationRecipe, simulated_windows
from services.trainer.domain.dataset import build_dataset
from services.trainer.domain.evaluation import evaluate
from services.trainer.domain.training import TrainingParameters, train_model
recipe = SimulationRecipe.from_dict(json.loads(sys.argv[1]))
parameters = TrainingParameters.from_dict(json.loads(sys.argv[2]))
dataset = build_dataset([simulated_windows(recipe)], test_percent=parameters.test_percent)
payload = export_onnx(train_model(dataset.train(), parameters).model)
test = dataset.test_windows()
metrics = evaluate(OnnxRiskModel(payload).predict_in_batches(test.features, test.signals), test)["metrics"]
print(json.dumps({"data_version": dataset.data_version, "sha256": sha256_hex(payload), "metrics": metrics}))
"""


@dataclass
class Trained:
    dataset: Dataset
    payload: bytes
    metrics: dict[str, float]


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    built = build_dataset([simulated_windows(RECIPE)], test_percent=PARAMETERS.test_percent)
    summary = built.summary()
    assert summary["test_windows"] > 100 and sum(list(summary["test_classes"].values())[1:4]) >= 10, summary
    return built


def trained(dataset: Dataset, parameters: TrainingParameters) -> Trained:
    payload = export_onnx(train_model(dataset.train(), parameters).model)
    test = dataset.test_windows()
    metrics = evaluate(OnnxRiskModel(payload).predict_in_batches(test.features, test.signals), test)["metrics"]
    return Trained(dataset, payload, metrics)


@pytest.fixture(scope="module")
def good(dataset: Dataset) -> Trained:
    return trained(dataset, PARAMETERS)


def test_same_code_data_and_parameters_give_the_same_model_in_another_process(dataset: Dataset, good: Trained) -> None:
    again = trained(dataset, PARAMETERS)
    assert sha256_hex(again.payload) == sha256_hex(good.payload)
    assert again.metrics == good.metrics
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(RECIPE.to_dict()), json.dumps(PARAMETERS.to_dict())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    elsewhere = json.loads(child.stdout.strip().splitlines()[-1])
    assert elsewhere["data_version"] == dataset.data_version
    assert elsewhere["sha256"] == sha256_hex(good.payload)
    assert elsewhere["metrics"] == good.metrics
    # A different seed is a different model (the test above could not pass by accident).
    other = export_onnx(train_model(dataset.train(), replace(PARAMETERS, seed=PARAMETERS.seed + 1)).model)
    assert sha256_hex(other) != sha256_hex(good.payload)


def test_onnx_export_matches_pytorch_on_held_out_windows_and_declares_the_contract(dataset: Dataset) -> None:
    result = train_model(dataset.train(), PARAMETERS)
    payload = export_onnx(result.model)
    test = dataset.test_windows()
    difference = parity_max_abs_diff(result.model, payload, test.features, test.signals)
    assert difference < 1e-4, difference
    described = signature(payload)
    assert described["opset"] == 17
    assert [(entry["name"], entry["shape"]) for entry in described["inputs"]] == [
        ("features", ["batch", len(FEATURE_NAMES)]),
        ("signals", ["batch", len(SIGNAL_CHANNELS), SIGNAL_STEPS]),
    ]
    assert [(entry["name"], entry["shape"]) for entry in described["outputs"]] == [("probabilities", ["batch", 5])]
    probabilities = OnnxRiskModel(payload).predict(test.features[:7], test.signals[:7])
    assert probabilities.shape == (7, 5) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Normalisation is inside the graph: raw windows in, sensible probabilities out.
    assert float(probabilities.max()) > 0.5


def test_the_gate_refuses_a_model_trained_zero_epochs_or_on_shuffled_labels(dataset: Dataset, good: Trained) -> None:
    policy = GatePolicy()
    assert decide(policy, good.metrics, good.metrics, "champion").passed
    untrained = trained(dataset, replace(PARAMETERS, epochs=0))
    refused = decide(policy, untrained.metrics, good.metrics, "champion")
    assert not refused.passed
    assert {check.metric for check in refused.failures} & {"harsh_recall", "harsh_precision", "macro_f1"}
    shuffled = build_dataset([simulated_windows(RECIPE)], test_percent=PARAMETERS.test_percent)
    train_rows = shuffled.train_rows
    shuffled.windows.labels[train_rows] = np.random.default_rng(3).permutation(shuffled.windows.labels[train_rows])
    noisy = trained(shuffled, PARAMETERS)
    assert not decide(policy, noisy.metrics, good.metrics, "champion").passed
    assert good.metrics["harsh_recall"] > noisy.metrics["harsh_recall"]


# The real-strength recipe docs/training.md measures (`MICHI_TRAINER_SIMULATION`, opt-in).
REAL_STRENGTH = {
    "fleets": [
        {"seed": 101, "sample_rate_hz": 50},
        {"seed": 104, "sample_rate_hz": 50, "simulator_defaults": True},
        {"seed": 105, "sample_rate_hz": 25, "sample_rate_range_hz": [12.0, 30.0]},
    ],
    "sensor_model": "fitted",
    "harsh_peak_g": [["harsh_braking", 0.15, 0.7], ["harsh_acceleration", 0.15, 0.5], ["harsh_cornering", 0.2, 0.62]],
    "harsh_jerk_mps3": [4.0, 12.0],
    "ordinary_turn_lateral_g": [0.12, 0.45],
    "turn_in_s": [1.5, 3.0],
    "swerve_share": 0.5,
    "road_grade": [0.0, 0.1],
}


def test_a_real_strength_recipe_is_read_from_json_and_keys_its_cache() -> None:
    from michi.simulator import SimulationConfig
    from services.trainer.adapters.simulation import REFERENCE_TRAFFIC, _fleet_config
    from services.trainer.domain.labels import HARSH_THRESHOLD_MPS2

    recipe = SimulationRecipe.from_dict(REAL_STRENGTH)
    assert recipe.fleets[2].sample_rate_range_hz == (12.0, 30.0) and recipe.turn_in_s == (1.5, 3.0)
    for kind, lowest, highest in recipe.harsh_peak_g:
        # From below the threshold of real harshness (weaker events are ordinary driving) to the simulator's own.
        assert lowest * 9.80665 < HARSH_THRESHOLD_MPS2[kind] < highest * 9.80665, kind
    assert SimulationRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe
    real, default = (_fleet_config(recipe, fleet) for fleet in recipe.fleets[:2])
    assert real.sensor_model == "fitted" and real.swerve_share == 0.5 and real.randomization.road_grade == (0.0, 0.1)
    # A fleet drawn as the simulator's default fleet is, whatever the recipe says.
    assert default == SimulationConfig(
        devices=recipe.devices, duration_s=recipe.duration_s, seed=104, sample_rate_hz=50,
        event_rate_per_10min=recipe.event_rate_per_10min, confounder_rate_per_10min=recipe.confounder_rate_per_10min,
    )  # fmt: skip
    # The cache keys name the recipe (and the labelled windows also the code that labels them).
    assert replace(recipe, harsh_peak_g=()).cache_key() != recipe.cache_key()
    assert replace(recipe, swerve_share=0.0).labelled_cache_key() != recipe.labelled_cache_key()
    assert recipe.labelled_cache_key() != recipe.cache_key()
    # Unset, nothing changes: the trainer's default recipe and the reference traffic are the simulator's fleets.
    for plain in (SimulationRecipe(), REFERENCE_TRAFFIC):
        config = _fleet_config(plain, plain.fleets[0])
        assert (config.sensor_model, config.harsh_peak_g, config.turn_in_s, config.swerve_share) == (
            SimulationConfig().sensor_model, (), None, 0.0
        )  # fmt: skip
        assert config.randomization == SimulationConfig().randomization
