"""Run TFLite models with ai-edge-litert on saved inputs, for the parity check of `make models` (.venv-models/).

    .venv-models/bin/python tools/models/run_tflite.py MODEL.tflite INPUTS.npz OUTPUTS.npz

INPUTS.npz holds arrays `input_0`, `input_1`, … in the TFLite layout (NHWC, float32), each one batch item of the
model's single input; OUTPUTS.npz gets `input_<i>__<output tensor name>` (with `/` written as `.`) per output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def main(model: Path, inputs_path: Path, outputs_path: Path) -> None:
    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    (input_detail,) = interpreter.get_input_details()
    outputs: dict[str, np.ndarray] = {}
    with np.load(inputs_path) as inputs:
        for name in sorted(inputs.files):
            interpreter.set_tensor(input_detail["index"], inputs[name].astype(np.float32))
            interpreter.invoke()
            for detail in interpreter.get_output_details():
                key = f"{name}__{detail['name'].replace('/', '.')}"
                outputs[key] = interpreter.get_tensor(detail["index"]).copy()
    np.savez(outputs_path, **outputs)  # type: ignore[arg-type]  # numpy stubs read ** as allow_pickle


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
