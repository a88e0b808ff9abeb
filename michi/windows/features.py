"""Windows over one upload and the features of each, in the vehicle frame (vectorised).

Windows: 2 s long, hop 1 s, aligned on whole seconds from the upload's `started_at`
(window k covers offsets [k, k + 2) s). Features are reduced per 1 s block with
`np.*.reduceat` and a window combines its two blocks, so the cost is linear in samples.

Signals: longitudinal and lateral acceleration low-passed at 2.5 Hz (kills road vibration,
keeps a braking ramp), vertical acceleration raw (a pothole is a sharp vertical spike), yaw rate
low-passed, GPS speed/heading interpolated at the window edges. GPS corroboration: a harsh
brake lowers the GPS speed; a pothole, a speed bump or a phone moved in its mount does not.
Onsets: how fast the low-passed deceleration, acceleration and lateral magnitude rose (over 0.4 s)
into a run beyond 2.0 / 2.0 / 2.5 m/s² lasting 0.2 s — a harsh manoeuvre builds fast, firm everyday
driving of the same strength slowly (`onset_rates`).

The feature list is append-only: a model whose `features` input declares fewer columns reads the
first ones, whose meaning never changes (`michi.windows.model_spec.model_features`).

Signals: the same calibrated series resampled on a fixed 25 Hz grid over each window
(`SIGNAL_CHANNELS` by `SIGNAL_STEPS`), whatever the device's sample rate, for learned models
that look at the shape of an event rather than its summary (a 1D-CNN).

The *evidence* features are each "IMU magnitude ÷ its threshold" and-ed (min) with "GPS
magnitude ÷ its threshold": ≥ 1 means both sensors agree the event happened. Without GPS the
IMU term stands alone once the mount is calibrated (forward and up known with high
confidence); before that it is capped just under 1. They are what the baseline model weighs;
learned models may use any feature. Whether a window may become a detection at all is decided
for every model in one place, `michi.windows.model_spec.detection_allowed`.

When the forward axis is not known yet (calibration state "gravity-only" or "uncalibrated"),
the longitudinal and lateral signal channels are zero rather than device axes passed off as
vehicle axes; the horizontal magnitude stays in the features.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from michi.contracts import stable_event_id
from michi.windows.calibration import RELIABLE_CONFIDENCE, Calibration
from michi.windows.model_spec import ACCEPTED_FEATURE_WIDTHS
from michi.windows.signals import FloatArray, low_pass
from michi.windows.upload import UploadData

WINDOW_SECONDS = 2.0
HOP_SECONDS = 1.0
LOW_PASS_HZ = 2.5
# Thresholds the evidence features are normalised by (m/s^2, or m/s^2 of GPS-derived acceleration).
# Real cars' harsh manoeuvres reach 2.5-3 m/s² (0.25-0.3 g); ordinary firm driving reaches them too
# (docs/inference.md): below these, magnitude cannot tell the two apart.
BRAKING_IMU_MPS2 = 2.5
ACCELERATION_IMU_MPS2 = 2.3
CORNERING_IMU_MPS2 = 3.4
BRAKING_GPS_MPS2 = 1.2
ACCELERATION_GPS_MPS2 = 1.2
CORNERING_GPS_MPS2 = 1.8
VERTICAL_PEAK_TO_PEAK_MPS2 = 6.0
# ... and this many times the upload's typical per-second vertical peak-to-peak (rough roads, phone holders).
JOLT_OVER_ROAD = 2.5
ROTATION_UNEXPLAINED_RADPS = 0.8
# Time beyond EVENT_HOLD_SHARE of its threshold a calibrated IMU peak must hold to count as a manoeuvre.
MIN_EVENT_SECONDS = 0.2
EVENT_HOLD_SHARE = 0.8
# Onset: how fast a manoeuvre's acceleration rose (m/s³, over ONSET_SPAN_S of the low-passed signal)
# into a run beyond these lower bars lasting MIN_EVENT_SECONDS. A harsh brake, pull-away or swerve
# builds within half a second; firm everyday driving of the same strength builds over seconds, and a
# hill's grade does not build at all (docs/inference.md).
ONSET_BAR_LONGITUDINAL_MPS2 = 1.8
ONSET_BAR_LATERAL_MPS2 = 2.5
ONSET_SPAN_S = 0.4
# The level a manoeuvre rises from: the mean over this span before each sample (seconds back).
PRE_LEVEL_S = (0.8, 1.6)
# ... from a level no further than this share of its bar below the upload's median (else it is the
# end of the opposite manoeuvre).
ONSET_FLOOR_SHARE = 0.75
# The GPS may corroborate a window up to this much later than the IMU saw it (receiver lag).
GPS_LAG_S = 2.5
# Below this calibration confidence the forward axis is not trusted (fresh device, mount just
# moved): the IMU terms use the horizontal magnitude, which needs no forward axis, and the GPS
# terms alone tell braking, acceleration and cornering apart.
RELIABLE_CALIBRATION = RELIABLE_CONFIDENCE
# No GPS and no calibrated mount: the IMU alone may reach at most this evidence — just under 1, so
# never a detection but (with the baseline gains) a probability inside the uncertainty band: a person
# decides. With a calibrated mount the IMU evidence stands alone.
NO_GPS_EVIDENCE_CAP = 0.97

FEATURE_NAMES: tuple[str, ...] = (
    "longitudinal_min_mps2",
    "longitudinal_max_mps2",
    "lateral_abs_max_mps2",
    "horizontal_max_mps2",
    "vertical_peak_to_peak_mps2",
    "vertical_jerk_max_mps3",
    "yaw_rate_abs_max_radps",
    "rotation_unexplained_radps",
    "gps_speed_mps",
    "gps_speed_change_mps",
    "gps_dvdt_mps2",
    "gps_yaw_rate_radps",
    "gps_lateral_mps2",
    "braking_seconds",
    "acceleration_seconds",
    "cornering_seconds",
    "braking_evidence",
    "acceleration_evidence",
    "cornering_evidence",
    "confounder_evidence",
    "gps_available",
    "sample_rate_hz",
    "calibration_confidence",
    # features-4 (appended: a model declaring the first 23 columns reads features-3's meaning of them).
    "braking_onset_mps3",
    "acceleration_onset_mps3",
    "cornering_onset_mps3",
)
FEATURE_INDEX = {name: index for index, name in enumerate(FEATURE_NAMES)}
if len(FEATURE_NAMES) not in ACCEPTED_FEATURE_WIDTHS:
    raise RuntimeError("michi.windows.model_spec.ACCEPTED_FEATURE_WIDTHS must list the current feature count")
FEATURE_SPEC_VERSION = "features-4"
# `Prediction.packed_features`: the row of `FEATURE_NAMES` as float32 little-endian, 4 bytes per feature.
PACKED_FEATURE_TYPE = np.dtype("<f4")


def pack_features(features: np.ndarray) -> list[bytes]:
    """Each row of `features` [N, F] as `Prediction.packed_features` carries it."""
    return [row.tobytes() for row in np.ascontiguousarray(features, dtype=PACKED_FEATURE_TYPE)]


def unpack_features(blocks: Sequence[bytes]) -> np.ndarray:
    """Packed rows back to a float64 matrix [N, widest row], NaN beyond a shorter row's end (a model that reads
    fewer features): one copy for a batch of rows of one width. A block whose length is not a whole number of
    features is the caller's to refuse first (`packed_width`)."""
    if not blocks:
        return np.zeros((0, 0))
    size = PACKED_FEATURE_TYPE.itemsize
    shortest, longest = min(map(len, blocks)), max(map(len, blocks))
    if shortest == longest:
        joined = np.frombuffer(b"".join(blocks), dtype=PACKED_FEATURE_TYPE)
        return joined.reshape(len(blocks), longest // size).astype(np.float64)
    rows = np.full((len(blocks), longest // size), np.nan)
    for position, block in enumerate(blocks):
        rows[position, : len(block) // size] = np.frombuffer(block, dtype=PACKED_FEATURE_TYPE)
    return rows


def packed_width(block: bytes) -> int | None:
    """How many features a packed row holds, or None when its length is no whole number of them."""
    count, rest = divmod(len(block), PACKED_FEATURE_TYPE.itemsize)
    return None if rest else count


# The window as a time series: channel order of `UploadWindows.signals` [K, channels, steps].
SIGNAL_CHANNELS: tuple[str, ...] = (
    "longitudinal_mps2",  # low-passed at LOW_PASS_HZ
    "lateral_mps2",  # low-passed at LOW_PASS_HZ
    "vertical_mps2",  # gravity removed, low-passed at VERTICAL_LOW_PASS_HZ
    "yaw_rate_radps",  # low-passed at LOW_PASS_HZ
    "rotation_radps",  # device rotation beyond its bias
    "gps_speed_mps",  # interpolated between fixes (0 without GPS)
)
SIGNAL_RATE_HZ = 25.0
SIGNAL_STEPS = round(WINDOW_SECONDS * SIGNAL_RATE_HZ)
VERTICAL_LOW_PASS_HZ = 10.0
SIGNAL_SPEC_VERSION = "signals-1"


def feature_spec() -> dict[str, object]:
    """Everything that changes what a feature means; its hash is the data version."""
    return {
        "version": FEATURE_SPEC_VERSION,
        "names": list(FEATURE_NAMES),
        "window_seconds": WINDOW_SECONDS,
        "hop_seconds": HOP_SECONDS,
        "low_pass_hz": LOW_PASS_HZ,
        "thresholds": {
            "braking_imu": BRAKING_IMU_MPS2,
            "acceleration_imu": ACCELERATION_IMU_MPS2,
            "cornering_imu": CORNERING_IMU_MPS2,
            "braking_gps": BRAKING_GPS_MPS2,
            "acceleration_gps": ACCELERATION_GPS_MPS2,
            "cornering_gps": CORNERING_GPS_MPS2,
            "vertical_peak_to_peak": VERTICAL_PEAK_TO_PEAK_MPS2,
            "jolt_over_road": JOLT_OVER_ROAD,
            "gps_lag_s": GPS_LAG_S,
            "min_event_seconds": MIN_EVENT_SECONDS,
            "event_hold_share": EVENT_HOLD_SHARE,
            "rotation_unexplained": ROTATION_UNEXPLAINED_RADPS,
            "no_gps_cap": NO_GPS_EVIDENCE_CAP,
            "reliable_calibration": RELIABLE_CALIBRATION,
            "onset_bar_longitudinal": ONSET_BAR_LONGITUDINAL_MPS2,
            "onset_bar_lateral": ONSET_BAR_LATERAL_MPS2,
            "onset_span_s": ONSET_SPAN_S,
            "pre_level_s": list(PRE_LEVEL_S),
            "onset_floor_share": ONSET_FLOOR_SHARE,
        },
        "frame": "ISO 8855 forward-left-up",
        "signals": {
            "version": SIGNAL_SPEC_VERSION,
            "channels": list(SIGNAL_CHANNELS),
            "rate_hz": SIGNAL_RATE_HZ,
            "steps": SIGNAL_STEPS,
            "vertical_low_pass_hz": VERTICAL_LOW_PASS_HZ,
        },
    }


DATA_VERSION = hashlib.sha256(json.dumps(feature_spec(), sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class UploadWindows:
    """The windows of one upload: offsets (s from started_at), features (K, F) and signals (K, C, T) float32, places."""

    starts_s: FloatArray
    ends_s: FloatArray
    features: np.ndarray
    signals: np.ndarray
    latitude: FloatArray
    longitude: FloatArray
    speed_mps: FloatArray
    heading_deg: FloatArray

    @property
    def count(self) -> int:
        return int(self.starts_s.size)


def empty_windows() -> UploadWindows:
    nothing = np.zeros(0)
    return UploadWindows(
        nothing,
        nothing,
        np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32),
        np.zeros((0, len(SIGNAL_CHANNELS), SIGNAL_STEPS), dtype=np.float32),
        nothing,
        nothing,
        nothing,
        nothing,
    )


def window_id(upload_id: str, start_s: float) -> str:
    """The stable id of the window starting `start_s` seconds into an upload (labels join on it)."""
    return stable_event_id(upload_id, round(start_s / HOP_SECONDS))


def window_offsets(duration_s: float) -> tuple[FloatArray, FloatArray]:
    """Start and end offsets of every full window fitting in `duration_s`."""
    blocks = math.floor(duration_s / HOP_SECONDS + 1e-3)
    per_window = round(WINDOW_SECONDS / HOP_SECONDS)
    count = max(0, blocks - per_window + 1)
    starts = np.arange(count, dtype=np.float64) * HOP_SECONDS
    return starts, starts + WINDOW_SECONDS


def extract_windows(upload: UploadData, calibration: Calibration) -> UploadWindows:
    """Features of every window of a non-degenerate upload."""
    rate = upload.sample_rate_hz
    times = upload.times_s
    imu_end = float(times[-1]) + 1.0 / rate
    starts, ends = window_offsets(imu_end)
    if starts.size == 0:
        return empty_windows()
    block_count = starts.size + 1
    boundaries = np.searchsorted(times, np.arange(block_count + 1, dtype=np.float64) * HOP_SECONDS - 1e-9)
    block_starts, block_ends = boundaries[:-1], boundaries[1:]
    block_ok = block_ends > block_starts
    index = np.minimum(block_starts, times.size - 1)

    vehicle = upload.accel @ calibration.rotation.T
    smooth = low_pass(vehicle[:, :2], rate, LOW_PASS_HZ)
    longitudinal, lateral = smooth[:, 0], smooth[:, 1]
    vertical = vehicle[:, 2] - calibration.gravity_mps2
    vertical_jerk = np.abs(np.diff(vertical, prepend=vertical[0])) * rate
    rotation_rate = upload.gyro @ calibration.rotation.T
    yaw_rate = low_pass(rotation_rate[:, 2], rate, LOW_PASS_HZ)
    # Rotation of the device beyond its bias: a hand moving the phone spins it at 2-7 Hz, so keep up to 10 Hz.
    rotation_free = low_pass(upload.gyro - np.median(upload.gyro, axis=0), rate, 10.0)
    rotation_magnitude = np.linalg.norm(rotation_free, axis=1)
    # A vehicle turns about up; rotation about the other axes is a road's jolt or a hand moving the
    # device. Reading it from the gyroscope alone needs no GPS (whose heading lags by up to seconds).
    about_up = rotation_free @ calibration.rotation[2]
    rotation_off_yaw = np.sqrt(np.maximum(rotation_magnitude**2 - about_up**2, 0.0))

    def block_max(values: FloatArray) -> FloatArray:
        return np.where(block_ok, np.maximum.reduceat(values, index), -np.inf)

    def block_min(values: FloatArray) -> FloatArray:
        return np.where(block_ok, np.minimum.reduceat(values, index), np.inf)

    def block_seconds(condition: np.ndarray) -> FloatArray:
        cumulative = np.concatenate([[0], np.cumsum(condition)])
        return np.asarray((cumulative[block_ends] - cumulative[block_starts]) / rate, dtype=np.float64)

    def pair_max(values: FloatArray) -> FloatArray:
        return np.maximum(values[:-1], values[1:])

    def pair_min(values: FloatArray) -> FloatArray:
        return np.minimum(values[:-1], values[1:])

    window_ok = block_ok[:-1] & block_ok[1:]
    longitudinal_min = pair_min(block_min(longitudinal))
    longitudinal_max = pair_max(block_max(longitudinal))
    lateral_abs_max = pair_max(block_max(np.abs(lateral)))
    horizontal_max = pair_max(block_max(np.hypot(longitudinal, lateral)))
    vertical_peak_to_peak = pair_max(block_max(vertical)) - pair_min(block_min(vertical))
    vertical_jerk_max = pair_max(block_max(vertical_jerk))
    yaw_rate_abs_max = pair_max(block_max(np.abs(yaw_rate)))
    rotation_unexplained = pair_max(block_max(rotation_off_yaw))

    def pair_sum(values: FloatArray) -> FloatArray:
        return np.asarray(values[:-1] + values[1:], dtype=np.float64)

    def onset_feature(rates: FloatArray) -> FloatArray:
        return pair_max(block_max(rates)) if rates.any() else np.zeros(starts.size)

    acceleration_rates, braking_rates = onset_rates_both_ways(longitudinal, rate, ONSET_BAR_LONGITUDINAL_MPS2)
    braking_onset = onset_feature(braking_rates)
    acceleration_onset = onset_feature(acceleration_rates)
    cornering_onset = onset_feature(np.maximum(*onset_rates_both_ways(lateral, rate, ONSET_BAR_LATERAL_MPS2)))
    braking_seconds = pair_sum(block_seconds(longitudinal < -BRAKING_IMU_MPS2))
    acceleration_seconds = pair_sum(block_seconds(longitudinal > ACCELERATION_IMU_MPS2))
    cornering_seconds = pair_sum(block_seconds(np.abs(lateral) > CORNERING_IMU_MPS2))

    gps = _gps_features(upload, starts, ends)
    gps_available = gps["available"]

    calibrated = calibration.state == "calibrated"
    if calibrated:
        # The IMU in vehicle axes is the measurement; GPS speed lags it by one to three seconds, often
        # into the next upload, so in a 2 s window it would veto real brakes. A manoeuvre lasts: a peak
        # held for less than MIN_EVENT_SECONDS beyond EVENT_HOLD_SHARE of its threshold is a vibration
        # burst (a rough road on a loose holder), not a brake; below the threshold evidence falls smoothly.
        def held(condition: np.ndarray) -> FloatArray:
            return pair_sum(block_seconds(condition)) / MIN_EVENT_SECONDS

        hold = EVENT_HOLD_SHARE
        braking_evidence = np.minimum(
            -longitudinal_min / BRAKING_IMU_MPS2, held(longitudinal < -hold * BRAKING_IMU_MPS2)
        )
        acceleration_evidence = np.minimum(
            longitudinal_max / ACCELERATION_IMU_MPS2, held(longitudinal > hold * ACCELERATION_IMU_MPS2)
        )
        cornering_evidence = np.minimum(
            lateral_abs_max / CORNERING_IMU_MPS2, held(np.abs(lateral) > hold * CORNERING_IMU_MPS2)
        )
    else:
        if calibration.gravity_confidence >= RELIABLE_CALIBRATION:
            # Forward unknown, horizontal plane known: split the horizontal magnitude with the GPS
            # (longitudinal part = what the GPS lateral does not explain, and the other way round).
            longitudinal_part = np.sqrt(np.maximum(horizontal_max**2 - gps["lateral"] ** 2, 0.0))
            lateral_part = np.sqrt(np.maximum(horizontal_max**2 - gps["dvdt"] ** 2, 0.0))
            imu_braking = longitudinal_part / BRAKING_IMU_MPS2
            imu_acceleration = longitudinal_part / ACCELERATION_IMU_MPS2
            imu_cornering = lateral_part / CORNERING_IMU_MPS2
        else:
            # Not even gravity is known yet: never detect, let people look at what stands out.
            cap = np.full(starts.size, NO_GPS_EVIDENCE_CAP)
            imu_braking = np.minimum(-longitudinal_min / BRAKING_IMU_MPS2, cap)
            imu_acceleration = np.minimum(longitudinal_max / ACCELERATION_IMU_MPS2, cap)
            imu_cornering = np.minimum(lateral_abs_max / CORNERING_IMU_MPS2, cap)
        # The GPS corroborates a mount not calibrated yet (and tells braking from cornering), in step
        # with the IMU or up to GPS_LAG_S later (receivers filter speed and heading); without GPS the
        # evidence stays capped just under 1.
        late = _gps_features(upload, starts + GPS_LAG_S, ends + GPS_LAG_S)
        corroborated = gps_available > 0
        gps_braking = np.where(
            corroborated, np.maximum(-gps["dvdt"], -late["dvdt"]) / BRAKING_GPS_MPS2, NO_GPS_EVIDENCE_CAP
        )
        gps_acceleration = np.where(
            corroborated, np.maximum(gps["dvdt"], late["dvdt"]) / ACCELERATION_GPS_MPS2, NO_GPS_EVIDENCE_CAP
        )
        gps_cornering = np.where(
            corroborated,
            np.maximum(np.abs(gps["lateral"]), np.abs(late["lateral"])) / CORNERING_GPS_MPS2,
            NO_GPS_EVIDENCE_CAP,
        )
        braking_evidence = np.minimum(imu_braking, gps_braking)
        acceleration_evidence = np.minimum(imu_acceleration, gps_acceleration)
        cornering_evidence = np.minimum(imu_cornering, gps_cornering)
    # A jolt (pothole, bump) stands out of the road's own vibration: the bar is the larger of a fixed
    # minimum and a multiple of this upload's typical per-second vertical peak-to-peak.
    block_spread = block_max(vertical) - block_min(vertical)
    typical = float(np.median(block_spread[block_ok])) if np.any(block_ok) else 0.0
    jolt_bar = max(VERTICAL_PEAK_TO_PEAK_MPS2, JOLT_OVER_ROAD * typical)
    confounder_evidence = np.maximum(
        vertical_peak_to_peak / jolt_bar, rotation_unexplained / ROTATION_UNEXPLAINED_RADPS
    )

    columns = [
        longitudinal_min,
        longitudinal_max,
        lateral_abs_max,
        horizontal_max,
        vertical_peak_to_peak,
        vertical_jerk_max,
        yaw_rate_abs_max,
        rotation_unexplained,
        gps["speed"],
        gps["change"],
        gps["dvdt"],
        gps["yaw_rate"],
        gps["lateral"],
        braking_seconds,
        acceleration_seconds,
        cornering_seconds,
        braking_evidence,
        acceleration_evidence,
        cornering_evidence,
        confounder_evidence,
        gps_available,
        np.full(starts.size, rate),
        np.full(starts.size, calibration.confidence),
        braking_onset,
        acceleration_onset,
        cornering_onset,
    ]
    features = np.column_stack(columns)
    features = np.where(np.isfinite(features), features, 0.0).astype(np.float32)
    keep = window_ok
    vertical_smooth = low_pass(vertical, rate, VERTICAL_LOW_PASS_HZ)
    if not calibrated:
        # The forward axis is a guess: do not hand device axes to a model as vehicle axes.
        longitudinal, lateral = np.zeros_like(longitudinal), np.zeros_like(lateral)
    series = np.column_stack([longitudinal, lateral, vertical_smooth, yaw_rate, rotation_magnitude])
    return UploadWindows(
        starts_s=starts[keep],
        ends_s=ends[keep],
        features=features[keep],
        signals=_resample_windows(times, series, upload, starts[keep]),
        latitude=gps["latitude"][keep],
        longitude=gps["longitude"][keep],
        speed_mps=gps["speed"][keep],
        heading_deg=gps["heading"][keep],
    )


def onset_rates(values: FloatArray, sample_rate_hz: float, bar: float) -> FloatArray:
    """Per sample: in each run where `values` stand `bar` above their level of a second before
    (`PRE_LEVEL_S`), lasting at least MIN_EVENT_SECONDS, the fastest rise (m/s³ over ONSET_SPAN_S, ≥ 0)
    from ONSET_SPAN_S before the run to its end; 0 elsewhere. The floor (ONSET_FLOOR_SHARE of `bar`)
    keeps the end of the opposite manoeuvre from counting: a rise from a level more than the floor
    *below* the upload's median is a pull-away released, not a brake; and the run must stand more than
    the floor above zero, or it is a brake ending as the car comes to a halt, not a pull-away.

    Measured against the level before, a brake on a hill (whose grade puts up to 1.5 m/s² of gravity
    on the longitudinal axis, for the whole upload) counts like one on the flat. The steepest part of a
    build-up comes before the signal crosses a bar set near its peak, so the rise is looked for ahead
    of the crossing too."""
    return onset_rates_both_ways(values, sample_rate_hz, bar)[0]


def onset_rates_both_ways(values: FloatArray, sample_rate_hz: float, bar: float) -> tuple[FloatArray, FloatArray]:
    """`onset_rates` of `values` and of `-values`, sharing the work (one pass for a signed axis)."""
    size = values.size
    lag = max(1, round(ONSET_SPAN_S * sample_rate_hz))
    # A change of more than `bar` needs a range of more than `bar` (most uploads: nothing to look for).
    if size <= lag or float(values.max() - values.min()) <= bar:
        return np.zeros(size), np.zeros(size)
    # The mean over [t - PRE_LEVEL_S[1], t - PRE_LEVEL_S[0]] (clipped to the upload's start).
    cumulative = np.empty(size + 1)
    cumulative[0] = 0.0
    np.cumsum(values, out=cumulative[1:])
    index = np.arange(size)
    first = np.clip(index - round(PRE_LEVEL_S[1] * sample_rate_hz), 0, size - 1)
    last = np.maximum(np.clip(index - round(PRE_LEVEL_S[0] * sample_rate_hz), 0, size - 1), first + 1)
    before = (cumulative[last] - cumulative[first]) / (last - first)
    change = values - before
    # The upload's typical level: the grade of a hill and the mount's tilt, not the manoeuvre.
    typical = float(np.median(values))
    floor = ONSET_FLOOR_SHARE * bar
    rising = (change > bar) & (before - typical > -floor) & (values > floor)
    falling = (change < -bar) & (typical - before > -floor) & (values < -floor)
    return _runs_onsets(values, rising, lag, sample_rate_hz), _runs_onsets(-values, falling, lag, sample_rate_hz)


def _runs_onsets(values: FloatArray, standing: np.ndarray, lag: int, sample_rate_hz: float) -> FloatArray:
    onsets = np.zeros(values.size)
    if not standing.any():
        return onsets
    marks = np.concatenate([[0], standing.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(marks))
    shortest = max(1, math.ceil(MIN_EVENT_SECONDS * sample_rate_hz - 1e-9))
    for begin, end in zip(edges[::2], edges[1::2], strict=True):
        if end - begin >= shortest:
            low = max(0, begin - 2 * lag)
            window = values[low:end]
            rise = (window[lag:] - window[:-lag]) * (sample_rate_hz / lag)
            onsets[begin:end] = max(float(rise.max()), 0.0) if rise.size else 0.0
    return onsets


def _resample_windows(times: FloatArray, series: FloatArray, upload: UploadData, starts: FloatArray) -> np.ndarray:
    """Every window's series on the fixed signal grid: [K, SIGNAL_CHANNELS, SIGNAL_STEPS] float32."""
    grid = starts[:, None] + np.arange(SIGNAL_STEPS, dtype=np.float64)[None, :] / SIGNAL_RATE_HZ
    flat = grid.ravel()
    channels = [np.interp(flat, times, series[:, column]) for column in range(series.shape[1])]
    if upload.gps_times_s.size >= 1:
        channels.append(np.interp(flat, upload.gps_times_s, upload.speed_mps))
    else:
        channels.append(np.zeros(flat.size))
    stacked = np.stack(channels, axis=0).reshape(len(SIGNAL_CHANNELS), starts.size, SIGNAL_STEPS)
    stacked = np.where(np.isfinite(stacked), stacked, 0.0)
    return np.ascontiguousarray(stacked.transpose(1, 0, 2), dtype=np.float32)


def _gps_features(upload: UploadData, starts: FloatArray, ends: FloatArray) -> dict[str, FloatArray]:
    count = starts.size
    if not upload.has_gps:
        zeros = np.zeros(count)
        single = upload.gps_times_s.size == 1
        return {
            "available": zeros,
            "speed": np.full(count, float(upload.speed_mps[0])) if single else zeros,
            "change": zeros,
            "dvdt": zeros,
            "yaw_rate": zeros,
            "lateral": zeros,
            "latitude": np.full(count, float(upload.latitude[0])) if single else zeros,
            "longitude": np.full(count, float(upload.longitude[0])) if single else zeros,
            "heading": np.full(count, float(upload.heading_deg[0])) if single else zeros,
        }
    times = upload.gps_times_s
    # The GPS span covering each window (fixes are 1 Hz; the last window may reach past the last fix).
    first = np.maximum(starts, times[0])
    last = np.minimum(ends, times[-1])
    covered = last - first
    available = (covered >= 0.9).astype(np.float64)
    speed_first = np.interp(first, times, upload.speed_mps)
    speed_last = np.interp(last, times, upload.speed_mps)
    change = speed_last - speed_first
    span = np.where(covered > 0, covered, 1.0)
    dvdt = np.where(covered > 0, change / span, 0.0)
    heading = np.degrees(np.unwrap(np.radians(upload.heading_deg.astype(np.float64))))
    heading_first = np.interp(first, times, heading)
    heading_last = np.interp(last, times, heading)
    # Heading is clockwise from north, so a left turn (positive yaw) lowers it.
    yaw_rate = np.where(covered > 0, -np.radians(heading_last - heading_first) / span, 0.0)
    middle = (starts + ends) / 2.0
    speed = (speed_first + speed_last + np.interp(middle, times, upload.speed_mps)) / 3.0
    return {
        "available": available,
        "speed": speed,
        "change": change,
        "dvdt": dvdt,
        "yaw_rate": yaw_rate,
        "lateral": speed * yaw_rate,
        "latitude": np.interp(middle, times, upload.latitude),
        "longitude": np.interp(middle, times, upload.longitude),
        "heading": np.interp(middle, times, heading) % 360.0,
    }
