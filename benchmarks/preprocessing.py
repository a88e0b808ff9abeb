"""Preprocessing cost per window: decode, mount calibration and window features, on one core.

    .venv/bin/python -m benchmarks preprocessing [--quick]

Simulator uploads (10 s, 50 Hz, with GPS, in per-device order) and the same uploads at 16.7 Hz and
at 400 Hz (resampled by dropping or repeating samples' times) are decoded (`upload_from_proto`),
calibrated (`update_calibration`, sums chained per device as serving does) and cut into windows
(`extract_windows`). CPU time per window is reported per stage. The baseline measured in the same
run is the least any preprocessing must do: one pass of the 2.5 Hz low-pass over the upload's
accelerometer (`michi.windows.signals.low_pass`), so "x baseline" says how many such passes the
product's preprocessing costs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from benchmarks.harness import print_table, simulated_uploads, upload_received
from michi.contracts.v1 import upload_pb2
from michi.windows.calibration import CalibrationSums, update_calibration
from michi.windows.features import LOW_PASS_HZ, extract_windows
from michi.windows.signals import low_pass
from michi.windows.upload import UploadData, upload_from_proto


def _at_rate(upload: upload_pb2.Upload, rate_hz: float) -> upload_pb2.Upload:
    """The same upload as a device sampling at `rate_hz` would send it (nearest samples, µs offsets)."""
    source = np.asarray(upload.imu.offset_ms, dtype=np.float64) / 1000.0
    times = np.arange(0.0, source[-1] + 1e-9, 1.0 / rate_hz)
    nearest = np.clip(np.searchsorted(source, times), 0, source.size - 1)
    resampled = upload_pb2.Upload()
    resampled.CopyFrom(upload)
    resampled.sample_rate_hz = round(rate_hz)
    resampled.sample_rate_exact_hz = rate_hz
    resampled.imu.Clear()
    resampled.imu.offset_us.extend(np.round(times * 1e6).astype(np.int64).tolist())
    for name in ("accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z"):
        values = np.asarray(getattr(upload.imu, name), dtype=np.float32)[nearest]
        getattr(resampled.imu, name).extend(values.tolist())
    return resampled


def _cpu(work: Callable[[], None]) -> float:
    began = time.process_time()
    work()
    return time.process_time() - began


def measure(uploads: list[upload_pb2.Upload], rounds: int) -> dict[str, float]:
    """CPU microseconds per window for each stage (best of `rounds`)."""
    received = [upload_received(upload) for upload in uploads]
    datas: list[UploadData] = []
    windows = 0
    best: dict[str, float] = {}

    def decode() -> None:
        datas.clear()
        datas.extend(upload_from_proto(item) for item in received)

    calibrations: list = []

    def calibrate() -> None:
        calibrations.clear()
        sums: dict[str, CalibrationSums] = {}
        for data in datas:
            sums[data.device_id], calibration = update_calibration(sums.get(data.device_id, CalibrationSums()), data)
            calibrations.append(calibration)

    def cut() -> None:
        nonlocal windows
        windows = sum(
            extract_windows(data, calibration).count for data, calibration in zip(datas, calibrations, strict=True)
        )

    def floor() -> None:
        for data in datas:
            low_pass(data.accel, data.sample_rate_hz, LOW_PASS_HZ)

    for _ in range(rounds):
        for name, stage in (("decode", decode), ("calibration", calibrate), ("features", cut), ("baseline", floor)):
            seconds = _cpu(stage)
            best[name] = min(best.get(name, float("inf")), seconds)
    count = max(windows, 1)
    return {name: seconds / count * 1e6 for name, seconds in best.items()} | {"window_count": float(windows)}


def run(*, quick: bool = False) -> None:
    uploads = sorted(
        simulated_uploads(60 if quick else 300, devices=10), key=lambda item: (item.device_id, item.sequence)
    )
    rounds = 2 if quick else 5
    rows = []
    for label, rate in (("50 Hz", None), ("16.7 Hz", 16.7), ("400 Hz", 400.0)):
        batch = uploads if rate is None else [_at_rate(upload, rate) for upload in uploads]
        figures = measure(batch, rounds)
        preprocessing = figures["decode"] + figures["calibration"] + figures["features"]
        rows.append(
            (
                label,
                int(figures["window_count"]),
                f"{figures['decode']:.0f}",
                f"{figures['calibration']:.0f}",
                f"{figures['features']:.0f}",
                f"{preprocessing:.0f}",
                f"{figures['baseline']:.1f}",
                f"{preprocessing / max(figures['baseline'], 1e-9):.1f}x",
            )
        )
    print_table(
        "Preprocessing, CPU µs per window (best of rounds; baseline: one 2.5 Hz low-pass of the accelerometer)",
        ("IMU rate", "windows", "decode", "calibration", "features", "total", "baseline", "x baseline"),
        rows,
    )
