"""The risk model behind ONNX Runtime: the baseline graph, its sha256 check, and batched scoring.

The baseline is a softmax over hand-set weights on the evidence features (see
`domain/features.py`): logit_k = gain_k * (evidence_k - 1), so a class reaches probability ≈ 0.5
against "normal" exactly where both the IMU and the GPS cross that class's threshold. It is an
ONNX graph so the serving path is the one a trained PyTorch → ONNX model takes (issue #4).

The model contract every served graph must follow: inputs named `features` [N, 23] float32 and/or
`signals` [N, 6, 50] float32 (a graph may declare only one; it is fed by the names it declares),
output `probabilities` [N, 5] float32 in `CLASS_EVENT_TYPES` order.

Nothing is loaded unless the file's sha256 matches the expected one (`ModelIntegrityError`), and
nothing is served unless the graph follows the contract and a trial run over two zero windows
returns finite probabilities of the right shape (`ModelContractError`). The trial run also warms
the session up, so a hot swap never pays first-run costs on the serving path.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from michi.windows.features import DATA_VERSION, FEATURE_INDEX, FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from michi.windows.model_spec import (
    ACCEPTED_FEATURE_WIDTHS,
    BASELINE_MODEL_VERSION,
    CLASS_EVENT_TYPES,
    FEATURES_INPUT,
    MODEL_NAME,
    PROBABILITIES_OUTPUT,
    SIGNALS_INPUT,
    declared_feature_width,
    model_features,
)

logger = logging.getLogger(__name__)

# Expected dimensions after the batch one, per input the contract knows.
CONTRACT_INPUTS: dict[str, tuple[int, ...]] = {
    FEATURES_INPUT: (len(FEATURE_NAMES),),
    SIGNALS_INPUT: (len(SIGNAL_CHANNELS), SIGNAL_STEPS),
}
# (class column, evidence feature, gain): gain sets how fast confidence grows past the threshold.
BASELINE_LOGITS: tuple[tuple[int, str, float], ...] = (
    (1, "braking_evidence", 10.0),
    (2, "acceleration_evidence", 10.0),
    (3, "cornering_evidence", 10.0),
    (4, "confounder_evidence", 10.0),
)


class ModelIntegrityError(RuntimeError):
    """The model file is not the one that was registered (sha256 mismatch or missing)."""


class ModelContractError(RuntimeError):
    """The graph does not follow the model contract (input/output names, shapes, types) or fails a trial run."""


@dataclass(frozen=True)
class ModelArtifact:
    name: str
    version: str
    data_version: str
    path: Path
    sha256: str


def baseline_weights(gain_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Weights [F, 5] and bias [5] of the baseline's logits, every gain multiplied by `gain_scale`."""
    feature_count, class_count = len(FEATURE_NAMES), len(CLASS_EVENT_TYPES)
    weights = np.zeros((feature_count, class_count), dtype=np.float32)
    bias = np.zeros(class_count, dtype=np.float32)
    for column, feature, gain in BASELINE_LOGITS:
        weights[FEATURE_INDEX[feature], column] = gain * gain_scale
        bias[column] = -gain * gain_scale
    return weights, bias


def build_baseline_model(gain_scale: float = 1.0) -> bytes:
    """The baseline graph as deterministic bytes (same code → same sha256); `gain_scale` makes variants."""
    feature_count, class_count = len(FEATURE_NAMES), len(CLASS_EVENT_TYPES)
    weights, bias = baseline_weights(gain_scale)
    graph = helper.make_graph(
        nodes=[
            helper.make_node("MatMul", [FEATURES_INPUT, "weights"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [PROBABILITIES_OUTPUT], axis=1),
        ],
        name="michi_risk_baseline",
        inputs=[helper.make_tensor_value_info(FEATURES_INPUT, TensorProto.FLOAT, ["batch", feature_count])],
        outputs=[helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["batch", class_count])],
        initializer=[numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="michi")
    model.ir_version = 8
    model.doc_string = f"{MODEL_NAME} {BASELINE_MODEL_VERSION} x{gain_scale:g}; data version {DATA_VERSION}"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def install_baseline_model(models_dir: Path) -> ModelArtifact:
    """Write the baseline under `models_dir/michi-risk/baseline-1/` (if absent) and return it.

    The expected sha256 comes from the bytes built here, never from the file on disk, so a
    tampered file is refused at load time rather than trusted.
    """
    payload = build_baseline_model()
    expected = hashlib.sha256(payload).hexdigest()
    folder = models_dir / MODEL_NAME / BASELINE_MODEL_VERSION
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    if not path.exists() or _written_by_another_release(folder, path, expected):
        temporary = path.with_suffix(".onnx.tmp")
        temporary.write_bytes(payload)
        temporary.replace(path)
    manifest = {
        "name": MODEL_NAME,
        "version": BASELINE_MODEL_VERSION,
        "data_version": DATA_VERSION,
        "sha256": expected,
        "features": list(FEATURE_NAMES),
        "classes": list(CLASS_EVENT_TYPES),
    }
    if sha256_of(path) == expected:
        # Only beside the bytes it describes: a manifest must never vouch for a file it did not see written.
        (folder / "model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return ModelArtifact(MODEL_NAME, BASELINE_MODEL_VERSION, DATA_VERSION, path, expected)


def _written_by_another_release(folder: Path, path: Path, expected: str) -> bool:
    """The file is an earlier release's baseline: it matches the manifest written with it, not today's bytes.

    The baseline's bytes change with the preprocessing version (its doc string names it), so a home
    kept across an upgrade holds the old file. That one is replaced; a file that matches neither
    today's bytes nor its own manifest was changed by someone and is left to be refused at load time.
    """
    try:
        actual = sha256_of(path)
        recorded = json.loads((folder / "model.json").read_text()).get("sha256")
    except (OSError, ValueError):
        return False
    if actual == expected or actual != recorded:
        return False
    logger.info("replacing the baseline written by another release", extra={"path": str(path)})
    return True


class OnnxDetector:
    """One ONNX Runtime session; `predict` scores a whole batch of windows in one `run`."""

    def __init__(self, artifact: ModelArtifact, *, threads: int = 1) -> None:
        if not artifact.path.exists():
            raise ModelIntegrityError(f"model file missing: {artifact.path}")
        payload = artifact.path.read_bytes()
        actual = hashlib.sha256(payload).hexdigest()
        if actual != artifact.sha256:
            raise ModelIntegrityError(
                f"refusing {artifact.name} {artifact.version}: sha256 {actual} does not match the expected {artifact.sha256}"
            )
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Build from the verified bytes, not the path, so the file cannot change between check and load.
        try:
            self._session = onnxruntime.InferenceSession(
                payload, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own exception types for invalid graphs
            raise ModelContractError(
                f"{artifact.name} {artifact.version}: not a loadable ONNX graph: {error}"
            ) from error
        self.artifact = artifact
        self.model_name = artifact.name
        self.model_version = artifact.version
        self.data_version = artifact.data_version
        self.input_names = _check_contract(self._session, artifact)
        self._feature_width = declared_feature_width(self._session, FEATURES_INPUT)
        self._trial_run()
        logger.info(
            "model loaded",
            extra={
                "model": artifact.name,
                "version": artifact.version,
                "sha256": artifact.sha256,
                "inputs": list(self.input_names),
            },
        )

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        """Probabilities [N, 5]; each input is fed only if the graph declares it."""
        if features.shape[0] == 0:
            return np.zeros((0, len(CLASS_EVENT_TYPES)), dtype=np.float32)
        feeds: dict[str, np.ndarray] = {}
        if FEATURES_INPUT in self.input_names:
            feeds[FEATURES_INPUT] = np.ascontiguousarray(
                model_features(features, self._feature_width), dtype=np.float32
            )
        if SIGNALS_INPUT in self.input_names:
            feeds[SIGNALS_INPUT] = np.ascontiguousarray(signals, dtype=np.float32)
        (probabilities,) = self._session.run([PROBABILITIES_OUTPUT], feeds)
        return np.asarray(probabilities)

    def _trial_run(self) -> None:
        rows = 2
        features = np.zeros((rows, len(FEATURE_NAMES)), dtype=np.float32)
        signals = np.zeros((rows, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32)
        try:
            probabilities = self.predict(features, signals)
        except Exception as error:
            raise ModelContractError(f"{self.model_name} {self.model_version}: trial run failed: {error}") from error
        expected = (rows, len(CLASS_EVENT_TYPES))
        if probabilities.shape != expected or not np.all(np.isfinite(probabilities)):
            raise ModelContractError(
                f"{self.model_name} {self.model_version}: trial run returned shape {probabilities.shape} "
                f"(expected {expected}) or non-finite values"
            )


def _check_contract(session: onnxruntime.InferenceSession, artifact: ModelArtifact) -> tuple[str, ...]:
    """The graph's inputs, if they and its output follow the model contract."""
    label = f"{artifact.name} {artifact.version}"
    inputs = {node.name: node for node in session.get_inputs()}
    unknown = sorted(set(inputs) - set(CONTRACT_INPUTS))
    if not inputs or unknown:
        raise ModelContractError(
            f"{label}: inputs {sorted(inputs)}; the contract allows only {sorted(CONTRACT_INPUTS)} (at least one)"
        )
    for name, node in inputs.items():
        shape = list(node.shape)
        expected = CONTRACT_INPUTS[name]
        wanted = f"float [batch, {', '.join(str(size) for size in expected)}]"
        if name == FEATURES_INPUT and len(shape) == 2 and shape[1] in ACCEPTED_FEATURE_WIDTHS:
            # An earlier, shorter feature list: the model reads the first columns (append-only names).
            expected = (int(shape[1]),)
        # Symbolic dimensions (strings, None) are accepted; fixed ones must match.
        if (
            node.type != "tensor(float)"
            or len(shape) != len(expected) + 1
            or any(isinstance(size, int) and size != target for size, target in zip(shape[1:], expected, strict=True))
        ):
            raise ModelContractError(f"{label}: input {name} is {node.type} {shape}, expected {wanted}")
    if PROBABILITIES_OUTPUT not in {node.name for node in session.get_outputs()}:
        raise ModelContractError(f"{label}: no output named {PROBABILITIES_OUTPUT!r}")
    return tuple(sorted(inputs))
