"""fp32 → int8: onnxruntime's static quantisation, calibrated on preprocessed windows, then compacted.

Why static, QOperator, per tensor (measured on the learned `michi-risk` model, docs/edge.md):

* **static** — activation ranges are fixed from real windows (`reference_windows`), so the device runs
  integer kernels end to end (QLinearConv, QGemm, QLinearConcat) with no range computation per window.
  Dynamic quantisation computes ranges at run time and only covers MatMul/Conv weights: it came out larger
  and slower here. Every op of the risk model has a static int8 kernel except the input normalisation
  (Sub, Div, Clip: kept float, a few dozen numbers) and the Softmax.
* **QOperator** rather than QDQ — QDQ keeps the float graph plus a QuantizeLinear/DequantizeLinear pair per
  tensor: about a third larger and slower on one core for a graph this small.
* **per tensor** weights — per-channel scales add bytes and time and agreed no better here.
* **Softmax stays float** — a QLinearSoftmax would hand out probabilities in steps of 1/255, and the decision
  rule compares them with 0.5: the last Gemm's logits are dequantised and the Softmax runs in float.

The risk model is tiny (about 6,000 weights), so the graph's structure weighs as much as its weights:
onnxruntime's quantiser names every tensor after the PyTorch module path (`/convolutions/convolutions.3/
Conv_output_0_zero_point`) and keeps shape annotations. `compact` renames every internal tensor to a short
name and drops annotations, doc strings and node names — the computation is unchanged (checked: identical
outputs) — so the int8 file is well under half the fp32 one. The fp32 file is never touched: it is the
registered artifact, byte for byte.

Only large weights are worth quantising: a graph none of whose Conv/Gemm/MatMul weight tensors holds
`MIN_QUANTISED_WEIGHTS` elements gets no int8 model (`NotQuantisable`): the rule graph `physics-3` (its
thresholds in a 26 by 19 matrix, where int8 steps would move them, and Where/GreaterOrEqual logic
onnxruntime's quantiser cannot take) and the linear `baseline-1`. The learned model's convolution and hidden
layer hold 2,880 and 2,368.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from michi.edge.decisions import window_calls
from michi.edge.reference_windows import WindowSet
from michi.windows.model_spec import (
    FEATURES_INPUT,
    PROBABILITIES_OUTPUT,
    SIGNALS_INPUT,
    declared_feature_width,
    model_features,
)

logger = logging.getLogger(__name__)

WEIGHT_OPS = frozenset({"Conv", "Gemm", "MatMul"})
MIN_QUANTISED_WEIGHTS = 1024
# Ops left in float: see the module docstring.
FLOAT_OPS = frozenset({"Softmax"})
CALIBRATION_BATCH = 256
NOT_QUANTISABLE = (
    f"no Conv/Gemm/MatMul weights of {MIN_QUANTISED_WEIGHTS}+ elements: a rule graph, whose thresholds int8 steps "
    "would move; served in fp32"
)
QUANTISATION_METHOD = "onnxruntime static, QOperator, MinMax, uint8 activations, int8 weights per tensor"


class NotQuantisable(ValueError):
    """The graph holds no weights large enough to be worth int8 (a rule graph)."""


def session(payload: bytes, threads: int = 1) -> onnxruntime.InferenceSession:
    """One ONNX Runtime session on the CPU, `threads` intra-op threads, sequential (the device's set-up)."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(payload, sess_options=options, providers=["CPUExecutionProvider"])


def model_feeds(
    runtime_session: onnxruntime.InferenceSession, features: np.ndarray, signals: np.ndarray
) -> dict[str, np.ndarray]:
    """The inputs a graph declares, fed by name, as serving feeds them (`OnnxDetector.predict`)."""
    declared = {node.name for node in runtime_session.get_inputs()}
    feeds: dict[str, np.ndarray] = {}
    if FEATURES_INPUT in declared:
        width = declared_feature_width(runtime_session, FEATURES_INPUT)
        feeds[FEATURES_INPUT] = np.ascontiguousarray(model_features(features, width), dtype=np.float32)
    if SIGNALS_INPUT in declared:
        feeds[SIGNALS_INPUT] = np.ascontiguousarray(signals, dtype=np.float32)
    return feeds


def predict(runtime_session: onnxruntime.InferenceSession, windows: WindowSet, batch: int = 4096) -> np.ndarray:
    parts = [
        runtime_session.run(
            [PROBABILITIES_OUTPUT],
            model_feeds(
                runtime_session, windows.features[first : first + batch], windows.signals[first : first + batch]
            ),
        )[0]
        for first in range(0, windows.count, batch)
    ]
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, 5), dtype=np.float32)


class _WindowReader(CalibrationDataReader):
    """Feeds the calibration windows to onnxruntime's calibrator in batches."""

    def __init__(self, names: set[str], windows: WindowSet) -> None:
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            [
                {
                    name: value
                    for name, value in (
                        (FEATURES_INPUT, windows.features[first : first + CALIBRATION_BATCH]),
                        (SIGNALS_INPUT, windows.signals[first : first + CALIBRATION_BATCH]),
                    )
                    if name in names
                }
                for first in range(0, windows.count, CALIBRATION_BATCH)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantisable_weights(model: onnx.ModelProto) -> int:
    """How many weights the graph's Conv/Gemm/MatMul nodes hold in initializers of at least the minimum size."""
    sizes = {initializer.name: int(np.prod(initializer.dims)) for initializer in model.graph.initializer}
    return sum(
        sizes.get(name, 0)
        for node in model.graph.node
        if node.op_type in WEIGHT_OPS
        for name in node.input
        if sizes.get(name, 0) >= MIN_QUANTISED_WEIGHTS
    )


def quantise(fp32: bytes, calibration: WindowSet, *, compacted: bool = True) -> bytes:
    """The int8 graph of `fp32`, activation ranges set on `calibration`, compacted (unless asked not to)."""
    model = onnx.load_from_string(fp32)
    if quantisable_weights(model) == 0:
        raise NotQuantisable(NOT_QUANTISABLE)
    if calibration.count == 0:
        raise ValueError("no calibration windows")
    inputs = {value.name for value in model.graph.input} - {item.name for item in model.graph.initializer}
    with tempfile.TemporaryDirectory(prefix="michi-edge-") as folder:
        source, prepared, quantised = (Path(folder) / name for name in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(fp32)
        # Shape inference and graph optimisation first (onnxruntime's recommended pre-processing).
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        operators = sorted({node.op_type for node in onnx.load(str(prepared)).graph.node} - FLOAT_OPS)
        quantize_static(
            str(prepared),
            str(quantised),
            _WindowReader(inputs, calibration),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=False,
            op_types_to_quantize=operators,
        )
        payload = quantised.read_bytes()
        return compact(payload) if compacted else payload


def compact(payload: bytes) -> bytes:
    """The same computation with short internal tensor names and no annotations (graph inputs/outputs kept)."""
    model = onnx.load_from_string(payload)
    graph = model.graph
    kept = {value.name for value in graph.input} | {value.name for value in graph.output}
    renamed: dict[str, str] = {}

    def short(name: str) -> str:
        if not name or name in kept:
            return name
        if name not in renamed:
            renamed[name] = _base36(len(renamed))
        return renamed[name]

    for initializer in graph.initializer:
        initializer.name = short(initializer.name)
        initializer.doc_string = ""
    for node in graph.node:
        node.name = ""
        node.doc_string = ""
        inputs, outputs = [short(name) for name in node.input], [short(name) for name in node.output]
        del node.input[:]
        node.input.extend(inputs)
        del node.output[:]
        node.output.extend(outputs)
    for value in graph.input:
        if value.name in renamed:  # an initializer listed as an input (old exporters)
            value.name = renamed[value.name]
    del graph.value_info[:]
    del model.metadata_props[:]
    graph.doc_string = ""
    model.doc_string = ""
    graph.name = "michi_risk_int8"
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, rest = divmod(number, 36)
        text = digits[rest] + text
        if number == 0:
            return "t" + text


@dataclass(frozen=True)
class Agreement:
    """How often the int8 model decides as the fp32 model on the same windows."""

    windows: int
    class_agreement: float  # same most likely class (of 5)
    call_agreement: float  # same call of the decision rule (risky type allowed, or none)
    fp32_calls: int  # windows the fp32 model calls risky (allowed)
    int8_calls: int
    max_abs_difference: float  # largest probability difference

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def agreement(fp32: bytes, int8: bytes, windows: WindowSet) -> Agreement:
    reference, quantised = predict(session(fp32), windows), predict(session(int8), windows)
    reference_calls = window_calls(reference, windows.allowed)
    quantised_calls = window_calls(quantised, windows.allowed)
    count = max(windows.count, 1)
    return Agreement(
        windows=windows.count,
        class_agreement=float(np.sum(reference.argmax(axis=1) == quantised.argmax(axis=1)) / count),
        call_agreement=float(np.sum(reference_calls == quantised_calls) / count),
        fp32_calls=int(np.count_nonzero(reference_calls)),
        int8_calls=int(np.count_nonzero(quantised_calls)),
        max_abs_difference=float(np.max(np.abs(reference - quantised))) if windows.count else 0.0,
    )
