"""Events-only uploads: what a device running the edge bundle sends instead of every sample.

    upload = runtime.upload_to_send(recorded)   # EdgeRuntime (michi.edge.runtime): the events-only form, or the
                                                # recorded upload itself for the 1 in `full_every` sampled in full

`events_only_upload` turns a recorded `Upload` and what the runtime decided about it (`EdgeUploadResult`) into an
`Upload` with `edge` set and no IMU samples (docs/edge.md, "Events-only uploads"): every id, `sequence`,
`started_at`, `trip_end`, firmware, vehicle, rate, sensor kinds and `media_names` as recorded; `gps` as recorded,
or thinned to one fix per `gps_every_s`; and the report: the model, the calibration the calls were made with,
the duration, the windows scored and their most likely classes counted, and the windows sent — each called
window, and each uncalled one whose best risky probability lies within `uncertainty_band` of the threshold (for
people to label) — with their probabilities, packed features and raw samples from `snippet_s` before to
`snippet_s` after the window. Each sample is sent once: a window's snippet holds the samples of its range that an
earlier window's snippet does not.

`sampled_in_full` picks the uploads a device sends in full anyway (a hash of the upload id, 1 in `full_every`), so
the cloud keeps seeing ordinary windows: the monitor's feature drift, random-QA labels and the trainer's archive.
"""

from __future__ import annotations

import hashlib

import numpy as np

from michi.contracts.v1 import common_pb2, upload_pb2
from michi.windows.calibration import Calibration
from michi.windows.features import WINDOW_SECONDS, pack_features
from michi.windows.model_spec import CLASS_EVENT_TYPES, DECISION_THRESHOLD, RISKY_EVENT_TYPES, calibration_summary

# Send 1 upload in this many in full (1 %), chosen by upload id.
FULL_EVERY = 100
# Raw samples sent around each window sent (s before its start, s after its end).
SNIPPET_S = 3.0
# Uncalled windows whose best risky probability is within this of the threshold are sent too (inference's
# MICHI_INFERENCE_UNCERTAINTY_BAND default): they become UNCERTAIN label requests as in the cloud.
UNCERTAINTY_BAND = 0.15
# GPS fixes kept: at most one per this many seconds. 1 s keeps a 1 Hz receiver's fixes, which speeding needs
# (services/inference/domain/speeding.py: fixes over 2.5 s apart break an episode; each fix stands for 1 s).
GPS_EVERY_S = 1.0
IMU_ARRAYS = ("offset_ms", "offset_us", "accel_x", "accel_y", "accel_z", "gyro_x", "gyro_y", "gyro_z")
RISKY_COLUMNS = [column for column, event_type in enumerate(CLASS_EVENT_TYPES) if event_type in RISKY_EVENT_TYPES]
NO_CALL = int(common_pb2.EVENT_TYPE_UNSPECIFIED)


def sampled_in_full(upload_id: str, full_every: int = FULL_EVERY) -> bool:
    """Whether the device sends this upload in full: a hash of its id, 1 in `full_every` (never when 0)."""
    if full_every <= 0:
        return False
    digest = hashlib.blake2b(upload_id.encode(), digest_size=8, person=b"michi-edge-full").digest()
    return int.from_bytes(digest, "big") % full_every == 0


def windows_to_send(
    probabilities: np.ndarray, window_calls: np.ndarray, uncertainty_band: float = UNCERTAINTY_BAND
) -> list[int]:
    """Positions of the windows an events-only upload carries: the called ones and the uncertain uncalled ones."""
    if probabilities.shape[0] == 0:
        return []
    risky = probabilities[:, RISKY_COLUMNS].max(axis=1)
    uncertain = np.abs(risky - DECISION_THRESHOLD) <= uncertainty_band
    return [int(position) for position in np.flatnonzero((window_calls != NO_CALL) | uncertain)]


def thinned_gps(fixes: list[upload_pb2.GpsFix], every_s: float = GPS_EVERY_S) -> list[upload_pb2.GpsFix]:
    """The fixes at least `every_s` apart, the first and the last always kept."""
    kept: list[upload_pb2.GpsFix] = []
    for index, fix in enumerate(fixes):
        last = index == len(fixes) - 1
        if not kept or last or fix.offset_ms - kept[-1].offset_ms >= every_s * 1000 - 1e-6:
            if last and kept and kept[-1].offset_ms == fix.offset_ms:
                continue
            kept.append(fix)
    return kept


def _snippet(imu: upload_pb2.ImuSamples, positions: np.ndarray) -> upload_pb2.ImuSamples:
    """The samples at `positions` (indices into the upload's arrays), every array the device sent."""
    snippet = upload_pb2.ImuSamples()
    for name in IMU_ARRAYS:
        values = getattr(imu, name)
        if len(values):
            taken = np.asarray(values)[positions]
            getattr(snippet, name).extend(taken.tolist())
    return snippet


def events_only_upload(
    upload: upload_pb2.Upload,
    *,
    model: upload_pb2.EdgeModel,
    calibration: Calibration | None,
    duration_s: float,
    offsets_s: list[float],
    probabilities: np.ndarray,
    window_calls: np.ndarray,
    features: np.ndarray,
    uncertainty_band: float = UNCERTAINTY_BAND,
    snippet_s: float = SNIPPET_S,
    gps_every_s: float = GPS_EVERY_S,
) -> upload_pb2.Upload:
    """The events-only form of `upload`, from the runtime's windows (start offsets from `started_at`, in order)."""
    events = upload_pb2.Upload()
    events.CopyFrom(upload)
    events.ClearField("imu")
    del events.gps[:]
    events.gps.extend(thinned_gps(list(upload.gps), gps_every_s))
    report = events.edge
    report.model.CopyFrom(model)
    report.calibration.CopyFrom(calibration_summary(calibration))
    report.duration_s = duration_s
    report.windows = int(probabilities.shape[0])
    columns = np.argmax(probabilities, axis=1) if probabilities.shape[0] else np.zeros(0, dtype=np.int64)
    report.windows_per_class.extend(np.bincount(columns, minlength=len(CLASS_EVENT_TYPES)).tolist())
    imu = upload.imu
    times = (
        np.asarray(imu.offset_us, dtype=np.float64) / 1e6
        if len(imu.offset_us)
        else np.asarray(imu.offset_ms, dtype=np.float64) / 1000.0
    )
    sent = np.zeros(times.size, dtype=bool)
    packed = pack_features(features)
    for position in windows_to_send(probabilities, window_calls, uncertainty_band):
        start = offsets_s[position]
        around = (times >= start - snippet_s) & (times <= start + WINDOW_SECONDS + snippet_s) & ~sent
        sent |= around
        report.calls.append(
            upload_pb2.EdgeCall(
                start_offset_s=start,
                event_type=int(window_calls[position]),  # type: ignore[arg-type]
                probabilities=probabilities[position].astype(np.float32).tolist(),
                packed_features=packed[position],
                imu=_snippet(imu, np.flatnonzero(around)),
            )
        )
    return events
