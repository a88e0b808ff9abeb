"""ONNX export of `RiskNet`, the parity check against PyTorch, and ONNX Runtime scoring of any risk model.

The export uses the TorchScript exporter (`dynamo=False`), whose bytes are identical for identical
weights (checked by the reproducibility test), at opset 17: inputs `features` [batch, 23] and
`signals` [batch, 6, 50] float32, output `probabilities` [batch, 5] float32.

`OnnxRiskModel` feeds only the inputs a graph declares, by name, so the same class scores the
hand-set baseline (features only) and learned models (features and signals) — it is the
`Detector` of `services/inference/handlers.py` (`predict(features, signals) -> probabilities`).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch

from michi.windows.features import FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from michi.windows.model_spec import (
    CLASS_EVENT_TYPES,
    FEATURES_INPUT,
    MODEL_NAME,
    PROBABILITIES_OUTPUT,
    SIGNALS_INPUT,
    declared_feature_width,
    model_features,
)
from services.trainer.domain.model import RiskNet
from services.trainer.domain.training import predict_with_torch

OPSET = 17


class ParityFailure(RuntimeError):
    """The ONNX graph does not compute what the PyTorch model computes."""


def export_onnx(model: RiskNet) -> bytes:
    """The model as ONNX bytes (deterministic for identical weights)."""
    model.eval()
    example = (torch.zeros(2, len(FEATURE_NAMES)), torch.zeros(2, len(SIGNAL_CHANNELS), SIGNAL_STEPS))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, whose output is not byte-stable.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            example,
            buffer,  # type: ignore[arg-type]
            input_names=[FEATURES_INPUT, SIGNALS_INPUT],
            output_names=[PROBABILITIES_OUTPUT],
            dynamic_axes={
                FEATURES_INPUT: {0: "batch"},
                SIGNALS_INPUT: {0: "batch"},
                PROBABILITIES_OUTPUT: {0: "batch"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    payload = buffer.getvalue()
    onnx.checker.check_model(onnx.load_from_string(payload))
    return payload


def sha256_hex(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def signature(payload: bytes) -> dict[str, Any]:
    """Input and output names, shapes and types as the graph declares them."""
    graph = onnx.load_from_string(payload).graph

    def described(values: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": value.name,
                "shape": [dimension.dim_param or dimension.dim_value for dimension in value.type.tensor_type.shape.dim],
                "type": onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type).lower(),
            }
            for value in values
        ]

    initializers = {initializer.name for initializer in graph.initializer}
    return {
        "inputs": described([value for value in graph.input if value.name not in initializers]),
        "outputs": described(graph.output),
        "opset": max(
            (entry.version for entry in onnx.load_from_string(payload).opset_import if entry.domain in ("", "ai.onnx")),
            default=0,
        ),
    }


class OnnxRiskModel:
    """One ONNX Runtime session over model bytes; `predict` scores a whole batch of windows."""

    def __init__(
        self,
        payload: bytes,
        *,
        model_name: str = MODEL_NAME,
        model_version: str = "",
        data_version: str = "",
        threads: int = 1,
    ) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(payload, sess_options=options, providers=["CPUExecutionProvider"])
        self.input_names = [entry.name for entry in self._session.get_inputs()]
        unknown = set(self.input_names) - {FEATURES_INPUT, SIGNALS_INPUT}
        if unknown:
            raise ValueError(f"model declares inputs the windows do not have: {', '.join(sorted(unknown))}")
        self._feature_width = declared_feature_width(self._session, FEATURES_INPUT)
        self.sha256 = sha256_hex(payload)
        self.model_name = model_name
        self.model_version = model_version
        self.data_version = data_version

    def predict(self, features: np.ndarray, signals: np.ndarray) -> np.ndarray:
        if features.shape[0] == 0:
            return np.zeros((0, len(CLASS_EVENT_TYPES)), dtype=np.float32)
        available = {
            FEATURES_INPUT: np.ascontiguousarray(model_features(features, self._feature_width), dtype=np.float32),
            SIGNALS_INPUT: np.ascontiguousarray(signals, dtype=np.float32),
        }
        (probabilities,) = self._session.run(
            [PROBABILITIES_OUTPUT], {name: available[name] for name in self.input_names}
        )
        return np.asarray(probabilities, dtype=np.float32)

    def predict_in_batches(self, features: np.ndarray, signals: np.ndarray, batch: int = 4096) -> np.ndarray:
        parts = [
            self.predict(features[first : first + batch], signals[first : first + batch])
            for first in range(0, features.shape[0], batch)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, len(CLASS_EVENT_TYPES)), dtype=np.float32)


def parity_max_abs_diff(model: RiskNet, payload: bytes, features: np.ndarray, signals: np.ndarray) -> float:
    """Largest |ONNX Runtime - PyTorch| over the probabilities of the given windows."""
    if features.shape[0] == 0:
        return 0.0
    expected = predict_with_torch(model, features, signals)
    actual = OnnxRiskModel(payload).predict_in_batches(features, signals)
    return float(np.max(np.abs(expected.astype(np.float64) - actual.astype(np.float64))))
