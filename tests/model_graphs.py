"""Small ONNX graphs that follow the model contract, and rollout plans that serve them (tests, benchmarks).

The trainer produces the real models; these stand in for them where a test or a benchmark needs a
second version to swap to, a shadow to compare with, or a graph that reads the `signals` input.
Tests import it relatively (`from ..model_graphs import ...`), benchmarks as `tests.model_graphs`
(run from the repository root); the service never does, so it is not shipped with it:

    payload = build_signals_model()                  # features + signals -> probabilities
    reference = await store_model(store, "2", payload)
    plan = rollout_plan(revision=3, champion=reference, shadow=None)

`build_signals_model` is the baseline's logits plus a small 1D-CNN over the signals, scaled so its
decisions on clear events match the baseline's (what changes is the cost of the signals path).
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from michi.blobs.store import BlobStore
from michi.contracts import stable_event_id, timestamp_now
from michi.contracts.v1 import inference_pb2, operations_pb2
from michi.windows.features import DATA_VERSION, FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS
from michi.windows.model_spec import CLASS_EVENT_TYPES, FEATURES_INPUT, MODEL_NAME, PROBABILITIES_OUTPUT, SIGNALS_INPUT
from services.inference.adapters.onnx_model import baseline_weights


def build_signals_model(
    *, with_features: bool = True, channels: int = 16, kernel: int = 5, signal_gain: float = 0.01, seed: int = 7
) -> bytes:
    """A contract graph reading `signals` [N, 6, 50] (and `features` [N, 23] unless `with_features` is False).

    Two Conv1d(kernel) + ReLU layers, a global max pool and a linear layer give signal logits; with
    features they are added, times `signal_gain`, to the baseline's logits, so the class decisions
    stay the baseline's while ONNX Runtime does the convolution work of a learned model.
    """
    generator = np.random.default_rng(seed)
    signal_count, class_count = len(SIGNAL_CHANNELS), len(CLASS_EVENT_TYPES)
    initializers = [
        numpy_helper.from_array(
            (generator.standard_normal((channels, signal_count, kernel)) * 0.2).astype(np.float32), "conv1_weight"
        ),
        numpy_helper.from_array(np.zeros(channels, dtype=np.float32), "conv1_bias"),
        numpy_helper.from_array(
            (generator.standard_normal((channels, channels, kernel)) * 0.1).astype(np.float32), "conv2_weight"
        ),
        numpy_helper.from_array(np.zeros(channels, dtype=np.float32), "conv2_bias"),
        numpy_helper.from_array(
            (generator.standard_normal((channels, class_count)) * 0.1).astype(np.float32), "dense_weight"
        ),
        numpy_helper.from_array(np.array([signal_gain], dtype=np.float32), "signal_gain"),
    ]
    nodes = [
        helper.make_node("Conv", [SIGNALS_INPUT, "conv1_weight", "conv1_bias"], ["conv1"], kernel_shape=[kernel]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("Conv", ["relu1", "conv2_weight", "conv2_bias"], ["conv2"], kernel_shape=[kernel]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("GlobalMaxPool", ["relu2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1),
        helper.make_node("MatMul", ["embedding", "dense_weight"], ["signal_logits"]),
        helper.make_node("Mul", ["signal_logits", "signal_gain"], ["scaled_signal_logits"]),
    ]
    inputs = [helper.make_tensor_value_info(SIGNALS_INPUT, TensorProto.FLOAT, ["batch", signal_count, SIGNAL_STEPS])]
    if with_features:
        weights, bias = baseline_weights()
        initializers += [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")]
        nodes += [
            helper.make_node("MatMul", [FEATURES_INPUT, "weights"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["feature_logits"]),
            helper.make_node("Add", ["feature_logits", "scaled_signal_logits"], ["logits"]),
        ]
        inputs.insert(
            0, helper.make_tensor_value_info(FEATURES_INPUT, TensorProto.FLOAT, ["batch", len(FEATURE_NAMES)])
        )
    else:
        nodes.append(helper.make_node("Identity", ["scaled_signal_logits"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], [PROBABILITIES_OUTPUT], axis=1))
    graph = helper.make_graph(
        nodes=nodes,
        name="michi_risk_signals_demo",
        inputs=inputs,
        outputs=[helper.make_tensor_value_info(PROBABILITIES_OUTPUT, TensorProto.FLOAT, ["batch", class_count])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="michi")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def model_key(version: str, name: str = MODEL_NAME) -> str:
    """Where the trainer stores a model version in the blob store."""
    return f"models/{name}/{version}/model.onnx"


async def store_model(
    store: BlobStore, version: str, payload: bytes, *, name: str = MODEL_NAME, data_version: str = DATA_VERSION
) -> operations_pb2.ModelRef:
    """Write `payload` under `models/<name>/<version>/model.onnx` and return its registry reference."""
    info = await store.put_bytes(model_key(version, name), payload)
    return operations_pb2.ModelRef(
        name=name,
        version=version,
        artifact_uri=info.uri,
        sha256=hashlib.sha256(payload).hexdigest(),
        data_version=data_version,
    )


def rollout_plan(
    revision: int,
    champion: operations_pb2.ModelRef | None,
    shadow: operations_pb2.ModelRef | None = None,
    *,
    name: str = MODEL_NAME,
    reason: str = "test",
) -> operations_pb2.RolloutPlan:
    """A plan shaped like the registry's (`michi.registry.rollout.build_rollout_plan`)."""
    plan = operations_pb2.RolloutPlan(
        event_id=stable_event_id("rollout-plan", name, revision),
        occurred_at=timestamp_now(),
        model_name=name,
        strategy=operations_pb2.ROLLOUT_STRATEGY_SHADOW if shadow else operations_pb2.ROLLOUT_STRATEGY_CHAMPION_ONLY,
        revision=revision,
        reason=reason,
    )
    if champion is not None:
        plan.champion.CopyFrom(champion)
        plan.arms.append(
            operations_pb2.RolloutArm(model=champion, variant=inference_pb2.VARIANT_CHAMPION, traffic_share=1.0)
        )
    if shadow is not None:
        plan.arms.append(
            operations_pb2.RolloutArm(model=shadow, variant=inference_pb2.VARIANT_SHADOW, traffic_share=0.0)
        )
    return plan
