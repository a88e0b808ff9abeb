"""Preprocessed windows the int8 model is calibrated and checked on: simulated fleets and the shipped real drives.

Every window is computed as serving computes it: uploads in device order through `michi.windows.chain`
(calibration chained from one upload to the next, `extract_windows`), so quantisation sees the activations
the model sees in the field. Two disjoint sets come out of `quantisation_windows()`:

* **calibration** — what onnxruntime's calibrator reads to set each activation's int8 range: a simulated
  fleet rich in harsh events and confounders (seed 9101, 50 Hz) and the shipped real drives
  `auckland-forward` and `comma2k19` (real vibration and real mounts);
* **held out** — what the int8 model's agreement with fp32 is measured on, never seen by the calibrator:
  simulated fleets at 25 Hz and 100 Hz (seeds 9102, 9103: other devices, trips and rates) and the real drive
  `auckland-backwards` (a phone mounted backwards).

A real drive missing from the installation (no `datasets/`, `MICHI_DATASETS_DIR`) is left out and named in
`sources_missing`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from michi.contracts.v1 import upload_pb2
from michi.recordings import RecordingError, recording_uploads, shared_recording
from michi.simulator.config import DEFAULT_START_TIME, SimulationConfig
from michi.simulator.fleet import FleetSimulator
from michi.windows.chain import windows_in_order
from michi.windows.features import FEATURE_INDEX, FEATURE_NAMES, SIGNAL_CHANNELS, SIGNAL_STEPS, window_id
from michi.windows.model_spec import detection_allowed
from michi.windows.upload import upload_from_proto


@dataclass(frozen=True)
class FleetSource:
    """A simulated fleet (`michi.simulator`), rich in events so harsh activations are covered."""

    seed: int
    sample_rate_hz: int
    devices: int = 6
    duration_s: float = 600.0
    event_rate_per_10min: float = 10.0
    confounder_rate_per_10min: float = 8.0

    @property
    def name(self) -> str:
        return f"simulated:seed={self.seed},rate={self.sample_rate_hz}Hz,{self.devices}x{self.duration_s:g}s"


CALIBRATION_FLEETS = (FleetSource(9101, 50),)
CALIBRATION_RECORDINGS = ("auckland-forward", "comma2k19")
HELD_OUT_FLEETS = (FleetSource(9102, 25), FleetSource(9103, 100))
HELD_OUT_RECORDINGS = ("auckland-backwards",)


@dataclass
class WindowSet:
    """Windows as the model reads them, with what the decision rule needs and where they came from."""

    features: np.ndarray  # [N, F] float32
    signals: np.ndarray  # [N, C, T] float32
    allowed: np.ndarray  # [N] bool: `detection_allowed` for the window's upload
    window_ids: list[str]
    sources: list[str] = field(default_factory=list)
    sources_missing: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return int(self.features.shape[0])

    @staticmethod
    def empty() -> WindowSet:
        return WindowSet(
            np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32),
            np.zeros((0, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32),
            np.zeros(0, dtype=bool),
            [],
        )

    @staticmethod
    def concatenate(parts: Iterable[WindowSet]) -> WindowSet:
        chosen = list(parts)
        if not chosen:
            return WindowSet.empty()
        return WindowSet(
            np.concatenate([part.features for part in chosen]),
            np.concatenate([part.signals for part in chosen]),
            np.concatenate([part.allowed for part in chosen]),
            [identifier for part in chosen for identifier in part.window_ids],
            [source for part in chosen for source in part.sources],
            [source for part in chosen for source in part.sources_missing],
        )


def windows_of_uploads(uploads: Iterable[upload_pb2.Upload], source: str) -> WindowSet:
    """The windows serving would compute for these uploads (each device's in order)."""
    features: list[np.ndarray] = []
    signals: list[np.ndarray] = []
    allowed: list[np.ndarray] = []
    identifiers: list[str] = []
    datas = (upload_from_proto(upload_pb2.UploadReceived(upload=upload)) for upload in uploads)
    for chained in windows_in_order(datas):
        windows = chained.windows
        if not windows.count or chained.calibration is None:
            continue
        features.append(windows.features)
        signals.append(windows.signals)
        gps = windows.features[:, FEATURE_INDEX["gps_available"]] > 0
        allowed.append(detection_allowed(chained.calibration.state, gps))
        identifiers.extend(window_id(chained.data.upload_id, float(start)) for start in windows.starts_s)
    if not features:
        return WindowSet.empty()
    return WindowSet(
        np.concatenate(features).astype(np.float32),
        np.concatenate(signals).astype(np.float32),
        np.concatenate(allowed),
        identifiers,
        [source],
    )


def fleet_windows(fleet: FleetSource) -> WindowSet:
    config = SimulationConfig(
        devices=fleet.devices,
        duration_s=fleet.duration_s,
        seed=fleet.seed,
        sample_rate_hz=fleet.sample_rate_hz,
        event_rate_per_10min=fleet.event_rate_per_10min,
        confounder_rate_per_10min=fleet.confounder_rate_per_10min,
    )
    return windows_of_uploads(FleetSimulator(config).uploads(), fleet.name)


def recording_windows(name: str) -> WindowSet:
    """A shipped real drive cut into the uploads a device sends (empty, named as missing, when absent)."""
    try:
        recording = shared_recording(name)
    except (RecordingError, OSError):
        missing = WindowSet.empty()
        missing.sources_missing.append(f"recording:{name}")
        return missing
    uploads = recording_uploads(
        recording, device_id=f"edge-{name}", trip_id=f"edge-{name}", started_at_s=DEFAULT_START_TIME
    )
    return windows_of_uploads(uploads, f"recording:{name}")


def quantisation_windows(
    calibration_fleets: Iterable[FleetSource] = CALIBRATION_FLEETS,
    calibration_recordings: Iterable[str] = CALIBRATION_RECORDINGS,
    held_out_fleets: Iterable[FleetSource] = HELD_OUT_FLEETS,
    held_out_recordings: Iterable[str] = HELD_OUT_RECORDINGS,
) -> tuple[WindowSet, WindowSet]:
    """(calibration, held out): disjoint by construction (other seeds, devices, drives), checked by window id."""
    calibration = WindowSet.concatenate(
        [fleet_windows(fleet) for fleet in calibration_fleets]
        + [recording_windows(name) for name in calibration_recordings]
    )
    held_out = WindowSet.concatenate(
        [fleet_windows(fleet) for fleet in held_out_fleets] + [recording_windows(name) for name in held_out_recordings]
    )
    shared = set(calibration.window_ids) & set(held_out.window_ids)
    if shared:
        raise ValueError(f"{len(shared)} held-out windows were also calibration windows")
    return calibration, held_out
