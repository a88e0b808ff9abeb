"""The edge bundle: sizes, latency per window on one core, and int8 agreement with the cloud fp32 model.

    .venv/bin/python -m benchmarks edge [--quick]

The model is the one a fresh platform trains (the trainer's default recipe and parameters, simulated windows
cached in ~/.cache/michi/datasets; --quick: a small fleet and 6 epochs), registered as version 1 of a
throwaway registry and exported with `michi.edge.export.export_bundle`, as `michi edge export` does.

* **Size**: the fp32 file (the registered artifact), the int8 file as onnxruntime's quantiser writes it, and
  compacted as the bundle ships it. Baseline: the fp32 file.
* **Latency per window**, one intra-op thread, sequential: the graph alone at batch 1 (a window scored as it
  completes) and at batch 9 (one 10 s upload's windows), median and p99 over many runs; and the whole device
  step (`EdgeRuntime.process`: decode, mount calibration, windows, model, decision) per window. Baseline:
  fp32 in the same run.
* **Agreement** of int8 with fp32 on the held-out windows the calibration never saw (`reference_windows`:
  25 Hz and 100 Hz fleets of other seeds, a real drive), and on a further fleet at 40 Hz: same most likely class,
  same call of the decision rule. Baseline: fp32 against itself (1.0 by construction).
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
from pathlib import Path

from benchmarks.harness import percentile, print_table
from michi.blobs import BlobStore
from michi.contracts.v1 import upload_pb2
from michi.edge.bundle import INT8_FILE
from michi.edge.export import export_bundle
from michi.edge.quantisation import agreement, model_feeds, quantise, session
from michi.edge.reference_windows import FleetSource, WindowSet, fleet_windows, quantisation_windows
from michi.edge.runtime import EdgeRuntime
from michi.registry import ModelRegistry
from michi.registry.layout import model_folder
from michi.simulator.config import SimulationConfig
from michi.simulator.fleet import FleetSimulator
from michi.windows.model_spec import MODEL_NAME, PROBABILITIES_OUTPUT

KEY = b"benchmark-fleet-key"


def _trained_model(quick: bool) -> bytes:
    from services.trainer.adapters.onnx_model import export_onnx
    from services.trainer.adapters.simulation import FleetRecipe, SimulationRecipe, simulated_windows
    from services.trainer.domain.dataset import build_dataset
    from services.trainer.domain.training import TrainingParameters, train_model
    from services.trainer.settings import default_cache_dir

    if quick:
        recipe = SimulationRecipe(fleets=(FleetRecipe(11, 50),), devices=6, duration_s=480.0, event_rate_per_10min=14.0)
        parameters = TrainingParameters(epochs=6)
    else:
        recipe, parameters = SimulationRecipe(), TrainingParameters()
    windows = simulated_windows(recipe, cache_dir=default_cache_dir().parent / "datasets")
    dataset = build_dataset([windows], test_percent=parameters.test_percent)
    return export_onnx(train_model(dataset.train(), parameters).model)


def _latencies(payload: bytes, windows: WindowSet, batch: int, runs: int) -> list[float]:
    """Seconds per window of `runs` runs of `batch` windows each (one thread)."""
    runtime_session = session(payload, threads=1)
    feeds = [
        model_feeds(runtime_session, windows.features[first : first + batch], windows.signals[first : first + batch])
        for first in range(0, min(windows.count, runs * batch), batch)
    ]
    for feed in feeds[:20]:  # warm-up
        runtime_session.run([PROBABILITIES_OUTPUT], feed)
    measured = []
    for feed in feeds:
        began = time.perf_counter()
        runtime_session.run([PROBABILITIES_OUTPUT], feed)
        measured.append((time.perf_counter() - began) / batch)
    return measured


def _device_step(folder: Path, precision: str, uploads: list[upload_pb2.Upload]) -> float:
    """CPU seconds per window of `EdgeRuntime.process` over the uploads (in device order)."""
    runtime = EdgeRuntime.load(folder, KEY, precision=precision)
    began = time.process_time()
    windows = sum(len(runtime.process(upload).window_ids) for upload in uploads)
    return (time.process_time() - began) / max(windows, 1)


def run(*, quick: bool = False) -> None:
    fp32 = _trained_model(quick)
    calibration, held_out = quantisation_windows()
    with tempfile.TemporaryDirectory(prefix="michi-edge-bench-") as folder:
        root = Path(folder)
        blobs = BlobStore(f"file://{root / 'blobs'}")
        registry = ModelRegistry.from_url(f"sqlite:///{root / 'michi.db'}")
        uri = asyncio.run(blobs.put_bytes(f"{model_folder(MODEL_NAME, '1')}/model.onnx", fp32)).uri
        registry.register(
            MODEL_NAME, uri, hashlib.sha256(fp32).hexdigest(), "bench", "bench", {}, {}, created_by="benchmark"
        )
        began = time.perf_counter()
        exported = export_bundle(
            registry, blobs, MODEL_NAME, "1", root / "bundles", KEY, windows=(calibration, held_out)
        )
        export_seconds = time.perf_counter() - began
        registry.close()
        int8 = (exported.folder / INT8_FILE).read_bytes()
        raw_int8 = quantise(fp32, calibration, compacted=False)

        print_table(
            "Edge bundle: file sizes (baseline: the fp32 file, the registered artifact)",
            ("file", "bytes", "x fp32"),
            [
                ("fp32 (registered)", len(fp32), "1.00"),
                ("int8, as quantised", len(raw_int8), f"{len(raw_int8) / len(fp32):.2f}"),
                ("int8, compacted (shipped)", len(int8), f"{len(int8) / len(fp32):.2f}"),
                ("whole bundle", sum(path.stat().st_size for path in exported.folder.iterdir()), "-"),
            ],
        )

        runs = 300 if quick else 2000
        rows: list[tuple[object, ...]] = []
        for batch in (1, 9):
            reference = _latencies(fp32, held_out, batch, runs // batch)
            for label, payload in (("fp32", fp32), ("int8", int8)):
                measured = reference if label == "fp32" else _latencies(payload, held_out, batch, runs // batch)
                rows.append(
                    (
                        f"{label}, batch {batch}",
                        len(measured),
                        f"{percentile(measured, 0.5) * 1e6:.1f}",
                        f"{percentile(measured, 0.99) * 1e6:.1f}",
                        f"{percentile(measured, 0.5) / percentile(reference, 0.5):.2f}",
                    )
                )
        uploads = list(
            FleetSimulator(SimulationConfig(devices=2, duration_s=300.0 if quick else 900.0, seed=9501)).uploads()
        )
        for label in ("fp32", "int8"):
            per_window = _device_step(exported.folder, label, uploads)
            rows.append((f"{label}, device step (process)", "-", f"{per_window * 1e6:.0f}", "-", "-"))
        print_table(
            "Edge latency per window, one core (intra_op_num_threads=1; baseline: fp32 at the same batch)",
            ("model", "runs", "median µs", "p99 µs", "x fp32"),
            rows,
        )

        fresh = fleet_windows(FleetSource(9301, 40, devices=4, duration_s=600.0, event_rate_per_10min=14.0))
        agreement_rows = []
        for label, windows in (("held out (export's)", held_out), ("fresh fleet 40 Hz", fresh)):
            self_check = agreement(fp32, fp32, windows)
            compared = agreement(fp32, int8, windows)
            agreement_rows.append(
                (
                    label,
                    compared.windows,
                    f"{compared.class_agreement:.4f}",
                    f"{compared.call_agreement:.4f}",
                    compared.fp32_calls,
                    compared.int8_calls,
                    f"{compared.max_abs_difference:.3f}",
                    f"{self_check.call_agreement:.4f}",
                )
            )
        print_table(
            "Edge agreement, int8 vs the cloud fp32 model on windows the calibration never saw (baseline: fp32 vs fp32)",
            ("windows", "count", "class", "call", "fp32 calls", "int8 calls", "max |Δp|", "baseline call"),
            agreement_rows,
        )
        print(
            f"  calibration: {calibration.count} windows from {', '.join(calibration.sources)}; "
            f"held out: {held_out.count} from {', '.join(held_out.sources)}; export took {export_seconds:.1f} s "
            f"(incl. quantisation and agreement)",
            flush=True,
        )
