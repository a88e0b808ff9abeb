"""Convert one TFLite model to ONNX with tflite2onnx, deterministically (runs in .venv-models/).

    .venv-models/bin/python tools/models/convert_tflite.py MODEL.tflite MODEL.onnx

tflite2onnx walks Python sets, so the order of initializers and value_info depends on the hash seed: the caller
sets PYTHONHASHSEED=0 and this script sorts both lists by name and clears doc strings, so the same TFLite file
always gives the same bytes.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import onnx
import tflite2onnx


def canonical(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    initializers = sorted(graph.initializer, key=lambda tensor: tensor.name)
    value_info = sorted(graph.value_info, key=lambda info: info.name)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    model.doc_string = ""
    graph.doc_string = ""
    return model


def main(source: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        converted = Path(scratch) / "converted.onnx"
        tflite2onnx.convert(str(source), str(converted))
        model = canonical(onnx.load(str(converted)))
    onnx.checker.check_model(model)
    target.write_bytes(model.SerializeToString(deterministic=True))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
