"""Uploads held while a mount's forward axis is unknown, to be decided again once it is known.

Without GPS a risky window may become a detection only once the mount is calibrated
(`michi.windows.model_spec.detection_allowed`): until then braking cannot be told from cornering, nor
forward from backward. The mount did not move in the meantime, so the forward axis found later holds
for the minutes before it too. A device keeps, for its current mount session, the uploads decided
before that which may hold an event whatever the forward axis (`worth_holding`); when the mount
becomes calibrated, serving scores them again with that calibration and emits what it then finds as
*hindsight* detections (`Detection.hindsight`; `services.inference.handlers`).

What is held is the `UploadReceived` itself (protobuf bytes, zlib-compressed, base64 in the state's
JSON), so the windows are recomputed exactly as serving cuts them. The store is bounded three ways,
oldest dropped first: `HELD_UPLOADS_MAX` uploads, `HELD_BYTES_MAX` stored bytes, and `HELD_AGE_S`
seconds of device time before the newest. A moved mount empties it (the held uploads saw the old
one), but for an upload held while the mount was in question (`Calibration.mount_in_question`: its
gravity had moved, and the next upload confirmed the move) whose gravity is the new mount's: it saw
the new one. Using the store empties it too.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from michi.windows.calibration import MOVED_AGREEMENT_DEG
from michi.windows.signals import angle_between_deg

# Six minutes of 10 s uploads: a phone that needs a few minutes of driving to find its forward axis
# without GPS (docs/inference.md: the backwards-mounted phone, 340 s) still has its first manoeuvres held.
HELD_UPLOADS_MAX = 36
# Per device, counted as stored (base64 text): about 80 uploads at 17 Hz without a gyroscope, 15 at 50 Hz
# and 8 at 100 Hz with one and GPS (10 s uploads).
HELD_BYTES_MAX = 256 * 1024
# Device time between a held upload's start and the newest held one's.
HELD_AGE_S = 15 * 60.0
# Worth holding: gravity known, and some window without GPS whose horizontal acceleration (gravity removed,
# low-passed at 2.5 Hz: about a 0.5 s average; `horizontal_max_mps2`, which needs no forward axis) peaks at
# least this high. Harsh manoeuvres reach 2-3 m/s²; no served rule calls one below a 1.8 m/s² rise.
HELD_HORIZONTAL_PEAK_MPS2 = 1.5
# The calibration state under which an upload may be held: up known, forward not.
HOLDING_STATE = "gravity-only"


def worth_holding(calibration_state: str, horizontal_max_mps2: np.ndarray, gps_available: np.ndarray) -> bool:
    """Whether an upload decided under `calibration_state` may hold an event its forward axis would reveal.

    Windows GPS covered are left out: with gravity known they were decided when they came, under the same rule.
    """
    if calibration_state != HOLDING_STATE:
        return False
    uncovered = ~(np.asarray(gps_available) > 0)
    peaks = np.nan_to_num(np.asarray(horizontal_max_mps2, dtype=np.float64)[uncovered], nan=0.0)
    return bool(peaks.size) and float(peaks.max()) >= HELD_HORIZONTAL_PEAK_MPS2


def pack_upload(payload: bytes) -> str:
    """An `UploadReceived`'s protobuf bytes as the state stores them."""
    return base64.b64encode(zlib.compress(payload, 6)).decode("ascii")


def unpack_upload(stored: str) -> bytes:
    """The protobuf bytes `pack_upload` stored."""
    return zlib.decompress(base64.b64decode(stored))


@dataclass(frozen=True)
class HeldUpload:
    """One upload decided before the mount's forward axis was known."""

    upload_id: str
    trip_id: str
    # Device time (seconds since the epoch) the upload started at.
    started_at_s: float
    # `pack_upload` of its `UploadReceived`.
    payload: str
    # The risky calls serving made on it when it came, as (window position, event type): windows GPS covered,
    # decided then. An event they are part of was detected then, and hindsight does not detect it again.
    live_calls: tuple[tuple[int, int], ...] = ()
    # The W3C traceparent its record carried (ingest's span): what it yields in hindsight continues its trace.
    trace_parent: str = ""
    # Held while its mount was in question: the up direction (device axes) its own quiet gravity showed.
    mount_up: tuple[float, ...] = ()

    @property
    def size(self) -> int:
        return len(self.payload)

    def live_call_of(self, position: int) -> int | None:
        """The risky event type serving called at window `position` when the upload came, if any."""
        return dict(self.live_calls).get(position)

    def to_list(self) -> list[Any]:
        calls = [list(call) for call in self.live_calls]
        entry = [self.upload_id, self.trip_id, self.started_at_s, self.payload, calls, self.trace_parent]
        return [*entry, list(self.mount_up)] if self.mount_up else entry

    @classmethod
    def from_list(cls, data: Any) -> HeldUpload | None:
        """An entry as `to_list` stored it; one of four items (state version 4 and 5) made no live call, one of
        four or five has no traceparent, and one of up to six was not held while its mount was in question."""
        if not isinstance(data, list) or len(data) not in (4, 5, 6, 7):
            return None
        calls = data[4] if len(data) >= 5 and isinstance(data[4], list) else []
        live_calls = tuple((int(call[0]), int(call[1])) for call in calls if isinstance(call, list) and len(call) == 2)
        trace_parent = data[5] if len(data) >= 6 and isinstance(data[5], str) else ""
        mount_up = data[6] if len(data) == 7 and isinstance(data[6], list) and len(data[6]) == 3 else []
        return cls(
            str(data[0]),
            str(data[1]),
            float(data[2]),
            str(data[3]),
            live_calls,
            trace_parent,
            tuple(float(value) for value in mount_up),
        )

    def saw_mount(self, up: np.ndarray) -> bool:
        """Whether it was held while its mount was in question, its gravity that of the mount whose up is `up`."""
        return bool(self.mount_up) and angle_between_deg(np.array(self.mount_up), up) <= MOVED_AGREEMENT_DEG


def held_with(held: list[HeldUpload], entry: HeldUpload) -> list[HeldUpload]:
    """`held` with `entry` added (replacing an entry of the same upload) and the bounds applied, oldest first."""
    kept = [item for item in held if item.upload_id != entry.upload_id] + [entry]
    kept.sort(key=lambda item: item.started_at_s)
    newest = kept[-1].started_at_s
    kept = [item for item in kept if newest - item.started_at_s <= HELD_AGE_S]
    del kept[:-HELD_UPLOADS_MAX]
    total = sum(item.size for item in kept)
    while kept and total > HELD_BYTES_MAX:
        total -= kept.pop(0).size
    return kept
