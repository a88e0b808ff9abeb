"""Training benchmarks: ONNX Runtime against PyTorch eager on the learned risk model, and training time.

    .venv/bin/python -m benchmarks training [--quick]

Windows are simulated fleets (25, 50 and 100 Hz), computed with `michi.windows` exactly as serving does.
1. Training time for 100k windows (20k with --quick): one epoch with torch pinned to 1 and to 2 intra-op
   threads, then the default parameters' whole training at 1 thread (what the trainer uses).
2. Scoring: the trained model as PyTorch eager (`torch.inference_mode`, 1 thread) and as its ONNX export in
   ONNX Runtime (1 intra-op thread, sequential, as inference serves it), on the same held-out windows, at
   batch sizes 1, 8, 64 and 256: median latency per call and windows/s; the ratio is ORT's speed over
   PyTorch's. The goal: ≥ 3x at batch 1 and never slower at any batch size.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from benchmarks.harness import BenchmarkFailed, note, print_table, ratio
from services.trainer.adapters.onnx_model import OnnxRiskModel, export_onnx, parity_max_abs_diff
from services.trainer.adapters.simulation import FleetRecipe, SimulationRecipe, simulated_windows
from services.trainer.domain.dataset import LabeledWindows, build_dataset
from services.trainer.domain.model import RiskNet
from services.trainer.domain.training import TrainingParameters, train_model

BATCHES = (1, 8, 64, 256)


def _windows(target: int) -> LabeledWindows:
    # About 0.8 labelled windows per simulated second (ambiguous edges are left out).
    devices = 25 if target > 50_000 else 10
    duration = max(300.0, round(target / (3 * devices * 0.8) / 60.0 + 1) * 60.0)
    recipe = SimulationRecipe(
        fleets=(FleetRecipe(201, 50), FleetRecipe(202, 25), FleetRecipe(203, 100)), devices=devices, duration_s=duration
    )
    began = time.perf_counter()
    windows = simulated_windows(recipe)
    note(f"{windows.count} windows simulated in {time.perf_counter() - began:.1f} s")
    if windows.count < target:
        raise BenchmarkFailed(f"only {windows.count} windows for a {target}-window benchmark")
    return windows.take(np.arange(target))


def _timed(call: object, calls: int) -> list[float]:
    durations = []
    for _ in range(calls):
        began = time.perf_counter()
        call()  # type: ignore[operator]
        durations.append(time.perf_counter() - began)
    return durations


def scoring(model: RiskNet, payload: bytes, windows: LabeledWindows, quick: bool) -> list[list[object]]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    onnx = OnnxRiskModel(payload, threads=1)
    rows: list[list[object]] = []
    try:
        for batch in BATCHES:
            features = np.ascontiguousarray(windows.features[:batch])
            signals = np.ascontiguousarray(windows.signals[:batch])
            features_tensor, signals_tensor = torch.from_numpy(features), torch.from_numpy(signals)

            def eager(
                features_tensor: torch.Tensor = features_tensor, signals_tensor: torch.Tensor = signals_tensor
            ) -> None:
                with torch.inference_mode():
                    model(features_tensor, signals_tensor)

            def runtime(features: np.ndarray = features, signals: np.ndarray = signals) -> None:
                onnx.predict(features, signals)

            calls = max(20, (400 if quick else 2000) // batch)
            _timed(eager, 10), _timed(runtime, 10)  # warm-up
            torch_median = statistics.median(_timed(eager, calls))
            onnx_median = statistics.median(_timed(runtime, calls))
            rows.append(
                [
                    batch,
                    f"{torch_median * 1e3:.3f}",
                    f"{onnx_median * 1e3:.3f}",
                    f"{batch / torch_median:,.0f}",
                    f"{batch / onnx_median:,.0f}",
                    ratio(torch_median, onnx_median),
                ]
            )
    finally:
        torch.set_num_threads(previous)
    return rows


def run(quick: bool = False) -> None:
    target = 20_000 if quick else 100_000
    windows = _windows(target)
    dataset = build_dataset([windows], test_percent=20)
    train = dataset.train()
    defaults = TrainingParameters()
    epoch_rows = []
    for threads in (1, 2):
        result = train_model(train, replace(defaults, epochs=1, threads=threads))
        epoch_rows.append(
            [
                f"1 epoch, {threads} thread(s)",
                train.count,
                f"{result.seconds:.1f}",
                f"{train.count / result.seconds:,.0f}",
            ]
        )
    epochs = 2 if quick else defaults.epochs
    full = train_model(train, replace(defaults, epochs=epochs))
    epoch_rows.append(
        [
            f"{epochs} epochs, 1 thread (default)",
            train.count,
            f"{full.seconds:.1f}",
            f"{train.count * epochs / full.seconds:,.0f}",
        ]
    )
    print_table(
        f"training time, {windows.count} windows ({train.count} in the training split), CPU",
        ["run", "windows", "seconds", "windows/s"],
        epoch_rows,
    )
    payload = export_onnx(full.model)
    test = dataset.test_windows()
    difference = parity_max_abs_diff(full.model, payload, test.features[:2048], test.signals[:2048])
    note(f"ONNX parity on {min(test.count, 2048)} held-out windows: max |diff| {difference:.2e}")
    rows = scoring(full.model, payload, test, quick)
    print_table(
        "scoring the same model and windows, 1 thread each (ORT speed / PyTorch speed)",
        ["batch", "torch p50 ms", "ORT p50 ms", "torch win/s", "ORT win/s", "ORT speed-up"],
        rows,
    )
