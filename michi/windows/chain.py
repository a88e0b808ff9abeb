"""A device's uploads in order, calibration chained from one upload to the next, as serving does.

    for chained in windows_in_order(uploads):           # UploadData in per-device order
        chained.windows.features, chained.windows.signals, chained.calibration

Inference (`services/inference/handlers.py::process_uploads`) keeps one `CalibrationSums` per device,
folds every upload into it in partition order with `update_calibration`, and extracts the upload's
windows with the estimate that fold returned. A degenerate upload (or one whose extraction raises)
yields no windows and leaves the device's sums as they were. This module does exactly that for any
sequence of uploads, without the serving state machinery (redeliveries, speeding, episodes), so the
trainer computes the same windows a served model saw. `sums` may carry the state to start from.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass

from michi.windows.calibration import Calibration, CalibrationSums, update_calibration
from michi.windows.features import UploadWindows, empty_windows, extract_windows
from michi.windows.upload import UploadData


@dataclass(frozen=True)
class ChainedUpload:
    """One upload, the calibration estimate serving used for it, and its windows."""

    data: UploadData
    calibration: Calibration | None
    windows: UploadWindows
    # Why no windows were extracted ("too-few-imu-samples", "failed: ValueError: ..."), None otherwise.
    skipped_reason: str | None


def windows_in_order(
    uploads: Iterable[UploadData],
    sums: MutableMapping[str, CalibrationSums] | None = None,
    starting: Mapping[str, CalibrationSums] | None = None,
) -> Iterator[ChainedUpload]:
    """Each upload with its windows; `sums` (device_id → sums) is updated in place when given.

    `starting` (upload_id → sums): an upload that carries its device's own sums (`Upload.device_calibration`, an
    edge device's upload sent in full) starts from them instead of the chain's, as inference does.
    """
    state: MutableMapping[str, CalibrationSums] = sums if sums is not None else {}
    given = starting or {}
    for data in uploads:
        own = given.get(data.upload_id)
        reason = data.degenerate_reason()
        if reason is not None:
            if own is not None:  # as inference: the device's sums are kept even when the upload is too short
                state[data.device_id] = own
            yield ChainedUpload(data, None, empty_windows(), reason)
            continue
        before = own if own is not None else (state.get(data.device_id) or CalibrationSums())
        try:
            after, calibration = update_calibration(before, data)
            windows = extract_windows(data, calibration)
        except Exception as error:  # serving skips such an upload and keeps the device's sums
            yield ChainedUpload(data, None, empty_windows(), f"failed: {type(error).__name__}: {error}")
            continue
        state[data.device_id] = after
        yield ChainedUpload(data, calibration, windows, None)
