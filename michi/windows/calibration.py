"""Mount-orientation calibration: which device axes point forward, left and up in the vehicle.

Convention: the vehicle frame is ISO 8855 — x forward, y left, z up, right-handed — the same as
the simulator's. The accelerometer measures specific force, so at rest it reads +g along *up*.
The calibrated rotation `R` has rows (forward, left, up) written in device axes, so
`vehicle = R @ device`, and forward = left x up.

Everything is estimated from physics, per device, from running sums kept across uploads
(slowly forgotten, so the estimate improves with data and follows a slow change). GPS helps
but is never required, nor is a gyroscope. The IMU is reduced to 1-second blocks (mean
acceleration, mean bias-free rotation rate, vibration), which is what every rule reads:

* **stopped**: road and engine vibration drop several-fold when the vehicle stands still
  (the device's own driving vibration level is learned), the mean does not change and the
  gyroscope is calm; GPS speed, when present, decides instead.
* **up** (gravity): the mean specific force over stopped blocks (weighted most) and over
  calm moving blocks; accelerations average out over a drive. With gravity-removed
  ("linear") accelerometers, up is the direction in which the block means vary least
  (driving accelerates in the horizontal plane).
* **forward**, from whichever evidence the device gives, each with a confidence:
  - *yaw*: lateral acceleration follows the yaw rate (centripetal = v·ω, v > 0), so the
    horizontal acceleration that covaries with the rotation rate about up points *left*, sign
    included; forward = left x up. Needs a gyroscope.
  - *stops*: the seconds before a stop brake (acceleration backward) and the seconds after
    one accelerate (forward): (stopped mean - before) and (after - stopped mean) both point
    forward, and the road's tilt cancels in each difference. Needs neither GPS nor gyro. The
    two edges of a stop are paired (the brake waits in the sums for its start, across uploads):
    an edge counts in full only when confirmed — the start agreeing with the brake, or the stop
    settling for `SETTLED_STOP_BLOCKS` s — otherwise `LONE_EDGE_WEIGHT`; a start that contradicts
    its brake (a turn, a rocking car, a reversing manoeuvre) lowers the confidence instead.
  - *dips*: drivers brake into a manoeuvre (a turn, a give-way, a roundabout) and accelerate
    out of it, and go from brake to throttle within seconds at a speed minimum but cruise at a
    maximum: over block pairs a few seconds apart, the horizontal acceleration that *follows*
    a large one minus the one that *precedes* it points forward. No GPS, gyroscope or stop
    needed, but weak per upload: it only corroborates (or contradicts) the other sources.
  - *gps*: the horizontal acceleration that correlates with the GPS speed derivative.
  - *straight*: while the yaw rate is near zero, horizontal acceleration is longitudinal:
    the principal horizontal axis of straight-driving blocks (an axis, signed by the others).
* **mount moved** only when gravity moves *and stays moved*: right away when a hand visibly
  handled the device (rotation the GPS heading does not explain) and quiet gravity shifted
  by more than `GRAVITY_JUMP_DEG`; otherwise only when two successive uploads both show
  gravity more than `MOVED_STOPPED_DEG` (stopped) or `MOVED_MOVING_DEG` (calm driving) away
  in the same direction — hills, cambers, braking and turns never reach that twice in a row.
  The first of the two (a phone remounted between trips, or a steep ramp) is *in question*:
  it is read with its own gravity and no forward axis (`Calibration.mount_in_question`, state
  gravity-only), never with the axes of a mount that may be gone, and its evidence is left out
  of the sums; the next upload tells which. A mount **turned round** about up leaves gravity
  where it was: it moved when the recent uploads' own forward evidence points backward along the
  calibrated axis two uploads in a row (`_turned_round`); its gravity is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from michi.windows.signals import FloatArray, angle_between_deg, unit
from michi.windows.upload import UploadData

# Each upload scales the previous sums by this: about 100 uploads (17 minutes) dominate.
DECAY_PER_UPLOAD = 0.99
# A hand moving the device and gravity shifting this much: the mount moved.
GRAVITY_JUMP_DEG = 3.0
# Without handling, two successive uploads must show gravity this far away (stopped / calm driving).
MOVED_STOPPED_DEG = 10.0
MOVED_MOVING_DEG = 15.0
# ... and agree with each other within this.
MOVED_AGREEMENT_DEG = 6.0
# Device rotation not explained by the GPS heading above this (rad/s) means someone handled it.
HANDLING_RADPS = 0.8
# Blocks (seconds) of each kind that count as full evidence.
FULL_GRAVITY_EVIDENCE = 15.0
FULL_STRAIGHT_EVIDENCE = 60.0
# Yaw-rate variance x seconds ((rad/s)^2 s) that counts as full yaw evidence: a handful of turns.
FULL_YAW_EVIDENCE = 0.8
# Stop transitions (a braking into, or a start out of, a stop; weighted as below) that count as full stop evidence.
FULL_STOP_TRANSITIONS = 2.5
# A stop edge counts in full only when confirmed: a brake edge whose start agrees with it (or whose stop
# settled), a start edge that agrees with its stop's brake edge. An unconfirmed edge counts this much.
LONE_EDGE_WEIGHT = 0.5
# A brake edge and the start edge of the same stop agree when their horizontal directions are this close.
# Each 1 s difference of a 1-2 m/s^2 brake or start carries 0.2-0.4 m/s^2 of lateral noise (camber,
# steering, the mount's own sway), 10-15 degrees each; a start that is a turn (lateral over 0.6 of the
# longitudinal) or a rocking car's rebound lands further off.
PAIR_AGREEMENT_DEG = 30.0
# A stop that stays still this many blocks has settled: its brake edge, read against the stop's blocks
# after the first (a hard stop's rebound rocks the car for about a second), is not a creep or a rocking
# car and counts in full even before its start is seen (the start may be a turn, or never come).
SETTLED_STOP_BLOCKS = 5
# A brake edge waits this long (seconds) for its start; a longer stop is parked, not a traffic stop.
PENDING_BRAKE_MAX_S = 300.0
# Sum of squared centred GPS dv/dt ((m/s^2)^2 s) that counts as full GPS evidence.
FULL_GPS_EVIDENCE = 12.0
# Stopped: vibration under this share of the device's driving level (or under the floor), mean steady.
STOPPED_VIBRATION_SHARE = 0.4
STOPPED_VIBRATION_FLOOR_MPS2 = 0.04
STOPPED_MEAN_CHANGE_MPS2 = 0.35
# ... and reads gravity within this (a steep hill's grade is about 6 degrees; a 2 m/s^2 brake tilts 11).
STOPPED_TILT_DEG = 7.0
CALM_GYRO_RADPS = 0.04
STRAIGHT_YAW_RADPS = 0.02
# Driving vibration level: follows a rougher upload at once, a smoother one slowly.
VIBRATION_LEVEL_DECAY = 0.95
# A stop transition must show at least this much horizontal change to count.
MIN_TRANSITION_MPS2 = 0.3
# Blocks of the previous upload kept to see stops that straddle two uploads (and a stop's first
# `SETTLED_STOP_BLOCKS` blocks whole, when it began in the previous upload's tail).
TAIL_BLOCKS = 6
# Speed dips: block pairs up to this many seconds apart are compared.
DIP_LAG_BLOCKS = 4
# Uploads of comparable dip evidence (their participation ratio) that count as full dip evidence.
FULL_DIP_UPLOADS = 8.0
# Dips only corroborate: alone they never make the forward axis reliable (at most this confidence).
DIP_MAX_CONFIDENCE = 0.35
# A high-confidence calibration (features and the detection rule rely on it).
RELIABLE_CONFIDENCE = 0.5
# A mount turned round about up (gravity unchanged: a phone lying flat, or put back in its holder facing the
# other way): the recent uploads' own forward evidence (each upload's forward confidence x its horizontal forward
# axis, decayed by this per upload: about 50 s) ...
RECENT_DECAY_PER_UPLOAD = 0.8
# ... pointing backward along the calibrated forward axis by at least this much (its projection on that axis),
# in this many successive uploads: the mount moved. Per upload the evidence is GPS, yaw and stops (never the
# speed dips, too weak alone): see docs/inference.md for what it gave on the shared real drives.
TURNED_BACKWARD_EVIDENCE = 0.05
TURNED_UPLOADS = 2
# The forward method of an upload whose mount is in question (gravity moved; moved or not, the next upload says).
IN_QUESTION_METHOD = "mount-in-question"


@dataclass
class CalibrationSums:
    """Running sums; everything the estimate needs, small enough to live in a table row."""

    gravity_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    gravity_weight: float = 0.0
    # Per GPS interval: mean acceleration a_i (3) and speed derivative d_i.
    interval_count: float = 0.0
    accel_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    dvdt_sum: float = 0.0
    dvdt_squared_sum: float = 0.0
    accel_dvdt_sum: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    accel_outer_sum: list[float] = field(default_factory=lambda: [0.0] * 9)
    orientation_changes: int = 0
    # Moving 1 s blocks: acceleration and rotation-rate moments (yaw evidence, linear-accelerometer up).
    moving_count: float = 0.0
    moving_accel_sum: list[float] = field(default_factory=lambda: [0.0] * 3)
    moving_accel_outer: list[float] = field(default_factory=lambda: [0.0] * 9)
    moving_gyro_sum: list[float] = field(default_factory=lambda: [0.0] * 3)
    moving_gyro_outer: list[float] = field(default_factory=lambda: [0.0] * 9)
    # Sum of accel (rows) x gyro (columns) over moving blocks.
    moving_cross: list[float] = field(default_factory=lambda: [0.0] * 9)
    # Straight, calm moving blocks: acceleration moments (the longitudinal axis).
    straight_count: float = 0.0
    straight_accel_sum: list[float] = field(default_factory=lambda: [0.0] * 3)
    straight_accel_outer: list[float] = field(default_factory=lambda: [0.0] * 9)
    # Stop transitions: sum of the forward-pointing differences, of their lengths, and how many.
    stop_sum: list[float] = field(default_factory=lambda: [0.0] * 3)
    stop_length_sum: float = 0.0
    stop_count: float = 0.0
    # Speed dips (see `_dip_evidence`): per upload a vector pointing forward; their sum, lengths and squares.
    dip_sum: list[float] = field(default_factory=lambda: [0.0] * 3)
    dip_length_sum: float = 0.0
    dip_square_sum: float = 0.0
    # Not evidence (never scaled): the device's state between uploads.
    vibration_level: float = 0.0
    gyro_bias: list[float] = field(default_factory=lambda: [0.0] * 3)
    gyro_bias_weight: float = 0.0
    # The last blocks of the previous upload: [time_s, ax, ay, az, vibration, gx, gy, gz, stopped(0/1)].
    tail: list[list[float]] = field(default_factory=list)
    # Absolute time of the latest stop transition counted (so a straddling one is counted once).
    last_transition_s: float = 0.0
    # The latest brake edge waiting for its stop's start edge: [time_s, dx, dy, dz, weight counted so far];
    # empty when none (and in sums serialised before stop edges were paired).
    pending_brake: list[float] = field(default_factory=list)
    # A gravity direction seen once far from the estimate, waiting for a second upload to confirm it.
    moved_candidate: list[float] = field(default_factory=list)
    # The recent uploads' own forward evidence while the mount is calibrated (see `_turned_round`): the decayed
    # sum of each one's forward confidence x horizontal forward (device axes), of those confidences, and how many
    # successive uploads it has pointed the other way.
    recent_forward: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    recent_weight: float = 0.0
    turned_uploads: int = 0
    # The forward and up axes (device axes, 6 numbers) of the last calibrated estimate since the mount last moved
    # (kept while contradicting evidence holds the confidence down); empty before.
    calibrated_axes: list[float] = field(default_factory=list)

    _EVIDENCE = (
        "gravity_sum",
        "gravity_weight",
        "interval_count",
        "accel_sum",
        "dvdt_sum",
        "dvdt_squared_sum",
        "accel_dvdt_sum",
        "accel_outer_sum",
        "moving_count",
        "moving_accel_sum",
        "moving_accel_outer",
        "moving_gyro_sum",
        "moving_gyro_outer",
        "moving_cross",
        "straight_count",
        "straight_accel_sum",
        "straight_accel_outer",
        "stop_sum",
        "stop_length_sum",
        "stop_count",
        "dip_sum",
        "dip_length_sum",
        "dip_square_sum",
    )

    def to_dict(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationSums:
        names = {item.name for item in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})

    def copy(self) -> CalibrationSums:
        return CalibrationSums.from_dict(
            {key: (list(value) if isinstance(value, list) else value) for key, value in self.to_dict().items()}
        )

    def scaled(self, factor: float) -> CalibrationSums:
        result = self.copy()
        for name in self._EVIDENCE:
            value = getattr(result, name)
            setattr(result, name, [item * factor for item in value] if isinstance(value, list) else value * factor)
        return result

    def plus(self, other: CalibrationSums) -> CalibrationSums:
        """Evidence added; the device state (level, bias, tail, candidate) taken from `other`."""
        result = other.copy()
        for name in self._EVIDENCE:
            mine, theirs = getattr(self, name), getattr(other, name)
            if isinstance(mine, list):
                setattr(result, name, [a + b for a, b in zip(mine, theirs, strict=True)])
            else:
                setattr(result, name, mine + theirs)
        result.orientation_changes = self.orientation_changes
        return result


@dataclass(frozen=True)
class Calibration:
    """The estimate used for one upload."""

    rotation: FloatArray  # rows forward, left, up in device axes: vehicle = rotation @ device
    gravity_mps2: float
    confidence: float
    gravity_confidence: float
    forward_confidence: float
    # The evidence behind forward: "gps", "yaw", "stops", "dips", "straight" joined by "+", "none", or
    # `IN_QUESTION_METHOD` when the mount is in question.
    forward_method: str
    orientation_changed: bool
    # Gravity moved away in this upload; the next upload says whether the mount moved (see the module docstring).
    mount_in_question: bool = False
    # The mount moved by turning round about up (`_turned_round`): gravity kept, the forward evidence started afresh.
    turned_round: bool = False

    @property
    def state(self) -> str:
        """ "calibrated", "gravity-only" or "uncalibrated" (see `CalibrationState` in common.proto)."""
        if self.gravity_confidence >= RELIABLE_CONFIDENCE and self.forward_confidence >= RELIABLE_CONFIDENCE:
            return "calibrated"
        if self.gravity_confidence >= RELIABLE_CONFIDENCE:
            return "gravity-only"
        return "uncalibrated"


@dataclass
class _Blocks:
    """One-second summaries of an upload (and the previous upload's tail): what every rule reads."""

    times_s: FloatArray  # absolute block centres
    accel: FloatArray  # (B, 3) mean specific force
    vibration: FloatArray  # (B,) rms of what a 2 Hz low-pass removes
    gyro: FloatArray  # (B, 3) mean rotation rate minus bias (zeros without a gyroscope)
    stopped: np.ndarray  # (B,) bool
    own: np.ndarray  # (B,) bool: the block belongs to this upload (not the carried tail)
    spin: FloatArray  # (B,) rms rotation rate minus bias (0 for the carried tail)


def _block_summaries(upload: UploadData, previous: CalibrationSums) -> tuple[_Blocks, float, list[float], float]:
    """Blocks of this upload joined to the previous tail, stopped flags, and the updated device state."""
    rate = upload.sample_rate_hz
    times, accel = upload.times_s, upload.accel
    index = np.floor(times).astype(np.int64)
    count_blocks = int(index[-1]) + 1
    counts = np.bincount(index, minlength=count_blocks).astype(np.float64)
    filled = counts >= max(3.0, 0.4 * rate)
    safe = np.maximum(counts, 1.0)
    means = np.stack([np.bincount(index, accel[:, axis], count_blocks) for axis in range(3)], axis=1) / safe[:, None]
    # Vibration: the rms of sample-to-sample change (a first difference passes what a low-pass removes,
    # for the price of one subtraction), divided by sqrt(2) so white noise reads its own rms.
    steps = np.diff(accel, axis=0, prepend=accel[:1])
    vibration = np.sqrt(np.bincount(index, np.einsum("ij,ij->i", steps, steps), count_blocks) / (2.0 * safe))
    gyro = (
        np.stack([np.bincount(index, upload.gyro[:, axis], count_blocks) for axis in range(3)], axis=1) / safe[:, None]
    )
    # Rotation energy per block (a hand shaking the device spins it at 2-7 Hz: its mean hides it).
    spin_squared = np.bincount(index, np.einsum("ij,ij->i", upload.gyro, upload.gyro), count_blocks) / safe
    block_times = upload.started_at_s + np.arange(count_blocks) + 0.5
    means, vibration, gyro, block_times = means[filled], vibration[filled], gyro[filled], block_times[filled]

    level = previous.vibration_level
    if vibration.size:
        level = max(float(np.median(vibration)), VIBRATION_LEVEL_DECAY * level)
    bias, bias_weight = list(previous.gyro_bias), previous.gyro_bias_weight

    tail = previous.tail
    if tail and block_times.size and block_times[0] - tail[-1][0] > 2.0:
        tail = []  # not contiguous with this upload: a stop cannot straddle the gap
    carried = np.array(tail, dtype=np.float64).reshape(-1, 9)
    all_times = np.concatenate([carried[:, 0], block_times])
    all_accel = np.vstack([carried[:, 1:4], means])
    all_vibration = np.concatenate([carried[:, 4], vibration])
    raw_gyro = np.vstack([carried[:, 5:8], gyro])
    own = np.concatenate([np.zeros(carried.shape[0], dtype=bool), np.ones(block_times.size, dtype=bool)])

    # Until the device has been seen stopped its gyroscope bias is taken as zero (MEMS biases are
    # hundredths of a rad/s): a median over a drive would swallow the turns themselves.
    gyro_free = raw_gyro - np.array(bias) if upload.has_gyroscope else np.zeros_like(raw_gyro)

    change = np.linalg.norm(np.diff(all_accel, axis=0, prepend=all_accel[:1]), axis=1)
    stopped = (all_vibration < max(STOPPED_VIBRATION_SHARE * level, STOPPED_VIBRATION_FLOOR_MPS2)) & (
        change < STOPPED_MEAN_CHANGE_MPS2
    )
    if previous.gravity_weight >= 20.0 and not upload.linear_acceleration:
        # A smooth, steady brake is quiet too: a stopped vehicle reads gravity, a braking one does not.
        gravity = np.array(previous.gravity_sum) / previous.gravity_weight
        cosine = all_accel @ gravity / np.maximum(np.linalg.norm(all_accel, axis=1) * np.linalg.norm(gravity), 1e-9)
        stopped &= cosine > math.cos(math.radians(STOPPED_TILT_DEG))
    if upload.has_gyroscope:
        stopped &= np.linalg.norm(gyro_free, axis=1) < CALM_GYRO_RADPS
    if upload.has_gps:
        speed = np.interp(all_times - upload.started_at_s, upload.gps_times_s, upload.speed_mps)
        inside = (all_times - upload.started_at_s >= upload.gps_times_s[0] - 1.0) & (
            all_times - upload.started_at_s <= upload.gps_times_s[-1] + 1.0
        )
        stopped = np.where(inside & (speed < 0.3), True, np.where(inside & (speed > 1.5), False, stopped))

    # The gyroscope's bias, learned while stopped (a turn cannot bias it then).
    if upload.has_gyroscope:
        still = stopped & own
        if np.count_nonzero(still) >= 2:
            weight = float(np.count_nonzero(still))
            total = bias_weight * 0.9 + weight
            bias = ((np.array(bias) * bias_weight * 0.9 + raw_gyro[still].sum(axis=0)) / total).tolist()
            bias_weight = min(total, 300.0)
            gyro_free = raw_gyro - np.array(bias)
    # mean |w - b|^2 = mean |w|^2 - 2 b.mean(w) + |b|^2, per block.
    bias_array = np.array(bias)
    own_spin = np.sqrt(np.maximum(spin_squared[filled] - 2.0 * gyro @ bias_array + float(bias_array @ bias_array), 0.0))
    spin = np.concatenate([np.zeros(carried.shape[0]), own_spin])
    blocks = _Blocks(all_times, all_accel, all_vibration, gyro_free, stopped, own, spin)
    return blocks, level, bias, bias_weight


@dataclass(frozen=True)
class _StopEdge:
    """A stop's braking edge (stopped - before), starting edge (after - stopped), both pointing forward,
    or "settled": the stop of the brake edge at `time_s` has lasted `SETTLED_STOP_BLOCKS` (its edge read anew)."""

    kind: str  # "brake", "settled" or "start"
    time_s: float
    difference: FloatArray
    settled: bool = False


def _stop_edges(blocks: _Blocks, after_s: float, pending_s: float | None) -> tuple[list[_StopEdge], float]:
    """The edges of stops (runs of >= 2 stopped blocks) later than `after_s`, in time order, and the latest.

    The stopped reference of a brake edge skips the stop's first block once the stop is 3 blocks long:
    a hard stop's rebound rocks the car for about a second. A stop that began in the previous upload's
    tail with its brake edge pending (`pending_s`) and has now settled gives a "settled" edge.
    """
    stopped = blocks.stopped
    found: list[_StopEdge] = []
    latest = after_s
    count = stopped.size
    contiguous = np.concatenate([[True], np.diff(blocks.times_s) < 1.5])
    position = 0
    while position < count:
        if not stopped[position]:
            position += 1
            continue
        end = position
        while end + 1 < count and stopped[end + 1] and contiguous[end + 1]:
            end += 1
        length = end - position + 1
        if length >= 2:
            first = position + 1 if length >= 3 else position
            still = blocks.accel[first : min(end + 1, first + 3)]
            before = np.arange(position - 2, position)
            if before[0] >= 0 and not stopped[before].any() and contiguous[before[0] + 1 : position + 1].all():
                moment = float(blocks.times_s[position])
                difference = still.mean(axis=0) - blocks.accel[before].mean(axis=0)
                settled = length >= SETTLED_STOP_BLOCKS
                if moment > latest:
                    found.append(_StopEdge("brake", moment, difference, settled))
                    latest = max(latest, moment)
                elif settled and pending_s is not None and abs(moment - pending_s) < 0.25:
                    found.append(_StopEdge("settled", moment, difference, True))
            after = np.arange(end + 1, end + 3)
            if after[-1] < count and not stopped[after].any() and contiguous[end + 1 : after[-1] + 1].all():
                moment = float(blocks.times_s[end + 1])
                if moment > latest:
                    still_end = blocks.accel[max(position, end - 2) : end + 1]
                    difference = blocks.accel[after].mean(axis=0) - still_end.mean(axis=0)
                    found.append(_StopEdge("start", moment, difference, length >= SETTLED_STOP_BLOCKS))
                    latest = max(latest, moment)
        position = end + 1
    return found, latest


def _add_stop_edge(
    sums: CalibrationSums, difference: FloatArray, weight: float, length_weight: float | None = None
) -> None:
    """Add `weight` of an edge to the direction and count, `length_weight` (default the same) to the lengths."""
    sums.stop_sum = [a + weight * float(b) for a, b in zip(sums.stop_sum, difference, strict=True)]
    sums.stop_length_sum += (weight if length_weight is None else length_weight) * float(np.linalg.norm(difference))
    sums.stop_count += weight


def _edges_agree(first: FloatArray, second: FloatArray, up: FloatArray | None) -> bool:
    if up is not None:
        first, second = _horizontal(first, up), _horizontal(second, up)
    return angle_between_deg(first, second) <= PAIR_AGREEMENT_DEG


def _count_stop_edges(
    sums: CalibrationSums, edges: list[_StopEdge], pending: list[float], up: FloatArray | None
) -> list[float]:
    """Add the stop edges to `sums`, pairing each start with its stop's brake; returns the brake still pending.

    An edge counts in full when confirmed, `LONE_EDGE_WEIGHT` otherwise: a brake edge by its stop settling
    or by its start agreeing with it; a start edge by agreeing with its brake, or, when the device did not
    see the braking (the trip began parked), by leaving a settled stop. A start that disagrees with its
    brake (a start that is a turn, a car rocking after a hard stop, a reversing manoeuvre) leaves both
    edges steering at `LONE_EDGE_WEIGHT`, while their full lengths count against the stops' coherence:
    a contradiction lowers the confidence instead of pulling the direction halfway.
    """
    for edge in edges:
        if pending and edge.time_s - pending[0] > PENDING_BRAKE_MAX_S:
            pending = []
        if edge.kind == "settled":
            if pending and abs(pending[0] - edge.time_s) < 0.25 and pending[4] < 1.0:
                # Read anew past the rebound, in full: replaces what the edge of the short stop added.
                _add_stop_edge(sums, np.array(pending[1:4]), -pending[4])
                _add_stop_edge(sums, edge.difference, 1.0)
                pending = [edge.time_s, *map(float, edge.difference), 1.0]
            continue
        if float(np.linalg.norm(edge.difference)) < MIN_TRANSITION_MPS2:
            pending = []
            continue
        if edge.kind == "brake":
            weight = 1.0 if edge.settled else LONE_EDGE_WEIGHT
            _add_stop_edge(sums, edge.difference, weight)
            pending = [edge.time_s, *map(float, edge.difference), weight]
            continue
        brake, pending = pending, []
        if not brake:
            _add_stop_edge(sums, edge.difference, 1.0 if edge.settled else LONE_EDGE_WEIGHT)
        elif _edges_agree(np.array(brake[1:4]), edge.difference, up):
            _add_stop_edge(sums, edge.difference, 1.0)
            _add_stop_edge(sums, np.array(brake[1:4]), 1.0 - brake[4])
        else:
            # One of the two is wrong: each steers at lone weight, and both count in full against coherence.
            _add_stop_edge(sums, edge.difference, LONE_EDGE_WEIGHT, 1.0)
            _add_stop_edge(sums, np.array(brake[1:4]), LONE_EDGE_WEIGHT - brake[4], 1.0 - brake[4])
    return pending


def _dip_evidence(blocks: _Blocks, gravity: FloatArray) -> FloatArray:
    """This upload's speed-dip vector: what follows a manoeuvre minus what precedes it, summed.

    For block pairs up to `DIP_LAG_BLOCKS` s apart (the later one in this upload): the later
    horizontal acceleration weighted by the earlier one's size, minus the earlier weighted by the
    later's. Within one push in one direction the two cancel exactly, and a constant road tilt
    telescopes away; what is left counts sign changes: braking followed by acceleration (a speed
    minimum) adds forward, acceleration followed by braking (a maximum) backward, and a turn adds
    the braking into it and the acceleration out of it, both forward.
    """
    deviation = blocks.accel - gravity
    marker = np.linalg.norm(deviation, axis=1)
    total = np.zeros(3)
    for lag in range(1, DIP_LAG_BLOCKS + 1):
        if blocks.times_s.size <= lag:
            break
        pair = (np.abs(blocks.times_s[lag:] - blocks.times_s[:-lag] - lag) < 0.5) & blocks.own[lag:]
        later, earlier = deviation[lag:][pair], deviation[:-lag][pair]
        total += (later * marker[:-lag][pair, None]).sum(axis=0) - (earlier * marker[lag:][pair, None]).sum(axis=0)
    return total


def _outer(values: FloatArray) -> list[float]:
    return [float(value) for value in (values.T @ values).reshape(-1)]


def _cross(first: FloatArray, second: FloatArray) -> list[float]:
    return [float(value) for value in (first.T @ second).reshape(-1)]


def _sum(values: FloatArray) -> list[float]:
    return [float(value) for value in values.sum(axis=0)]


def upload_sums(upload: UploadData, previous: CalibrationSums | None = None) -> tuple[CalibrationSums, bool, _Blocks]:
    """The evidence one upload contributes, whether a hand moved the device in it, and its blocks."""
    previous = previous or CalibrationSums()
    sums = CalibrationSums()
    blocks, sums.vibration_level, sums.gyro_bias, sums.gyro_bias_weight = _block_summaries(upload, previous)
    own = blocks.own
    stopped, moving = blocks.stopped & own, ~blocks.stopped & own
    gyro_magnitude = np.linalg.norm(blocks.gyro, axis=1)
    if upload.has_gyroscope:
        calm = moving & (gyro_magnitude < CALM_GYRO_RADPS)
    else:
        change = np.linalg.norm(np.diff(blocks.accel, axis=0, prepend=blocks.accel[:1]), axis=1)
        calm = moving & (change < STOPPED_MEAN_CHANGE_MPS2)
    if not upload.linear_acceleration:
        # Stopped blocks are pure gravity: they count three times a calm moving block.
        weights = np.where(stopped, 3.0, np.where(calm, 1.0, 0.0))
        if weights.sum() > 0:
            sums.gravity_sum = _sum(blocks.accel * weights[:, None])
            sums.gravity_weight = float(weights.sum())

    moving_accel, moving_gyro = blocks.accel[moving], blocks.gyro[moving]
    if moving_accel.shape[0]:
        sums.moving_count = float(moving_accel.shape[0])
        sums.moving_accel_sum = _sum(moving_accel)
        sums.moving_accel_outer = _outer(moving_accel)
        if upload.has_gyroscope:
            sums.moving_gyro_sum = _sum(moving_gyro)
            sums.moving_gyro_outer = _outer(moving_gyro)
            sums.moving_cross = _cross(moving_accel, moving_gyro)
    if upload.has_gyroscope:
        straight = moving & (gyro_magnitude < STRAIGHT_YAW_RADPS)
        if np.any(straight):
            sums.straight_count = float(np.count_nonzero(straight))
            sums.straight_accel_sum = _sum(blocks.accel[straight])
            sums.straight_accel_outer = _outer(blocks.accel[straight])

    if upload.linear_acceleration:
        reference = np.zeros(3)
        up = _up_of_linear(previous)[0] if previous.moving_count >= 10 else None
    else:
        if previous.gravity_weight > 0:
            reference = np.array(previous.gravity_sum) / previous.gravity_weight
        else:
            reference = blocks.accel[blocks.own].mean(axis=0) if np.any(blocks.own) else np.zeros(3)
        up = unit(reference) if float(np.linalg.norm(reference)) > 0 else None

    pending = previous.pending_brake
    edges, sums.last_transition_s = _stop_edges(blocks, previous.last_transition_s, pending[0] if pending else None)
    sums.pending_brake = _count_stop_edges(sums, edges, list(pending), up)
    dip = _dip_evidence(blocks, reference)
    dip_length = float(np.linalg.norm(dip))
    if dip_length > 0:
        sums.dip_sum = [float(value) for value in dip]
        sums.dip_length_sum = dip_length
        sums.dip_square_sum = dip_length**2

    keep = blocks.own.nonzero()[0][-TAIL_BLOCKS:]
    sums.tail = [
        [
            float(blocks.times_s[position]),
            *map(float, blocks.accel[position]),
            float(blocks.vibration[position]),
            *map(float, blocks.gyro[position] + np.array(sums.gyro_bias if upload.has_gyroscope else [0.0] * 3)),
            float(blocks.stopped[position]),
        ]
        for position in keep
    ]

    explained = 0.0
    if upload.has_gps:
        _gps_sums(upload, sums)
        gaps = np.diff(upload.gps_times_s)
        heading_rate = np.abs(_wrapped_degrees(np.diff(upload.heading_deg))) / np.where(gaps > 0, gaps, 1.0)
        explained = float(np.radians(heading_rate).max()) if heading_rate.size else 0.0
    handled = bool(upload.has_gyroscope and blocks.spin.size and float(blocks.spin.max()) - explained > HANDLING_RADPS)
    return sums, handled, blocks


def _gps_sums(upload: UploadData, sums: CalibrationSums) -> None:
    """Per GPS interval: mean acceleration and speed derivative (the GPS forward evidence)."""
    times, accel = upload.times_s, upload.accel
    gps_times, speed = upload.gps_times_s, upload.speed_mps
    if gps_times.size >= 2 and float(np.median(np.diff(gps_times))) < 0.5:
        # Faster receivers (5-10 Hz): intervals of about a second, like a 1 Hz one.
        keep = np.concatenate([[0], np.searchsorted(gps_times, np.arange(gps_times[0] + 1.0, gps_times[-1], 1.0))])
        keep = np.unique(np.minimum(keep, gps_times.size - 1))
        gps_times, speed = gps_times[keep], speed[keep]
    gaps = np.diff(gps_times)
    dvdt = np.diff(speed) / np.where(gaps > 0, gaps, 1.0)
    usable = (gaps > 0.5) & (gaps < 2.5)
    starts = np.searchsorted(times, gps_times[:-1], side="left")
    ends = np.searchsorted(times, gps_times[1:], side="left")
    counts = ends - starts
    cumulative = np.vstack([np.zeros((1, 3)), np.cumsum(accel, axis=0)])
    valid = usable & (counts >= max(3, int(0.5 * upload.sample_rate_hz)))
    if np.any(valid):
        means = (cumulative[ends[valid]] - cumulative[starts[valid]]) / counts[valid, None]
        derivatives = dvdt[valid]
        sums.interval_count = float(valid.sum())
        sums.accel_sum = _sum(means)
        sums.dvdt_sum = float(derivatives.sum())
        sums.dvdt_squared_sum = float(np.dot(derivatives, derivatives))
        sums.accel_dvdt_sum = _sum(means * derivatives[:, None])
        sums.accel_outer_sum = _outer(means)


def _wrapped_degrees(delta: FloatArray) -> FloatArray:
    return np.asarray((delta + 180.0) % 360.0 - 180.0, dtype=np.float64)


def _upload_gravity(upload: UploadData, blocks: _Blocks) -> tuple[FloatArray, float] | None:
    """This upload's own view of gravity and the move threshold that applies to it, if it has a clean one."""
    own_stopped = blocks.stopped & blocks.own
    if np.count_nonzero(own_stopped) >= 3:
        return blocks.accel[own_stopped].mean(axis=0), MOVED_STOPPED_DEG
    own_moving = ~blocks.stopped & blocks.own
    calm = own_moving & (np.linalg.norm(blocks.gyro, axis=1) < CALM_GYRO_RADPS) if upload.has_gyroscope else own_moving
    if np.count_nonzero(calm) >= 5:
        return blocks.accel[calm].mean(axis=0), MOVED_MOVING_DEG
    return None


def update_calibration(previous: CalibrationSums, upload: UploadData) -> tuple[CalibrationSums, Calibration]:
    """Fold one upload into the device's sums and return the estimate to use for it."""
    current, handled, blocks = upload_sums(upload, previous)
    changed = turned = False
    # This upload's own quiet gravity: confirming a move, or putting the mount in question.
    moved_gravity: FloatArray | None = None
    current.moved_candidate = []
    established = previous.gravity_weight >= 20.0 and not upload.linear_acceleration
    if established:
        old_up = np.array(previous.gravity_sum)
        own = _upload_gravity(upload, blocks)
        if handled and current.gravity_weight >= 5.0:
            if angle_between_deg(old_up, np.array(current.gravity_sum)) > GRAVITY_JUMP_DEG:
                changed = True
        elif own is not None:
            gravity, threshold = own
            if angle_between_deg(old_up, gravity) > threshold:
                moved_gravity = gravity
                candidate = previous.moved_candidate
                if candidate and angle_between_deg(np.array(candidate), gravity) <= MOVED_AGREEMENT_DEG:
                    changed = True
                else:
                    current.moved_candidate = [float(value) for value in gravity]
        if not changed and moved_gravity is None and _turned_round(previous, current):
            changed = turned = True
    if changed:
        # Part of this upload (and the carried tail) saw the old mount: start the evidence afresh. A mount turned
        # round about up keeps its gravity, weighed as just enough evidence, so the new mount's own soon leads.
        kept = min(1.0, FULL_GRAVITY_EVIDENCE / previous.gravity_weight) if turned else 0.0
        combined = CalibrationSums(
            gravity_sum=[value * kept for value in previous.gravity_sum],
            gravity_weight=previous.gravity_weight * kept,
            orientation_changes=previous.orientation_changes + 1,
            vibration_level=current.vibration_level,
            gyro_bias=current.gyro_bias,
            gyro_bias_weight=current.gyro_bias_weight,
            last_transition_s=current.last_transition_s,
        )
    elif current.moved_candidate and moved_gravity is not None:
        # The old mount's axes may be gone: this upload is read with its own gravity and no forward axis, and
        # its evidence, of another mount or of a ramp steeper than any road's camber, is left out.
        combined = previous.plus(current.scaled(0.0))
        combined.calibrated_axes = list(previous.calibrated_axes)
        return combined, _in_question(estimate(combined), moved_gravity)
    else:
        combined = previous.scaled(DECAY_PER_UPLOAD).plus(current)
    if combined.gravity_weight <= 0 and not upload.linear_acceleration:
        # No calm moment yet: the upload's quiet gravity (a confirmed move's), or its whole mean, is the best guess.
        hint = moved_gravity if moved_gravity is not None else upload.accel.mean(axis=0)
        fallback = estimate(combined, gravity_hint=hint)
        return combined, _with_change(fallback, changed)
    calibration = estimate(combined, linear=upload.linear_acceleration)
    if calibration.state == "calibrated":
        combined.calibrated_axes = [float(value) for value in (*calibration.rotation[0], *calibration.rotation[2])]
    elif not changed:
        # Evidence of a turned mount takes the confidence down first: the axes it contradicts stay the reference.
        combined.calibrated_axes = list(previous.calibrated_axes)
    return combined, _with_change(calibration, changed, turned)


def _turned_round(previous: CalibrationSums, current: CalibrationSums) -> bool:
    """Whether the recent uploads' own forward evidence has pointed backward along the calibrated forward axis
    for `TURNED_UPLOADS` uploads in a row (a mount turned round about up); keeps that evidence in `current`.

    Gravity does not move when a mount turns about up, and the old evidence, minutes of it, fades slowly: the
    calibration would read braking as acceleration, with full confidence, for minutes.
    """
    if len(previous.calibrated_axes) != 6:
        return False
    forward, up = np.array(previous.calibrated_axes[:3]), np.array(previous.calibrated_axes[3:])
    recent = np.array(previous.recent_forward) * RECENT_DECAY_PER_UPLOAD
    weight = previous.recent_weight * RECENT_DECAY_PER_UPLOAD
    # The speed dips left out: one upload's are too weak to say anything alone.
    combined, total, _ = _signed_evidence(current, up, dips=False)
    confidence = _signed_confidence(combined, total)
    if confidence > 0.0:
        recent = recent + confidence * unit(_horizontal(combined, up))
        weight += confidence
    current.recent_forward = [float(value) for value in recent]
    current.recent_weight = float(weight)
    turned = float(np.dot(recent, forward)) <= -TURNED_BACKWARD_EVIDENCE
    current.turned_uploads = previous.turned_uploads + 1 if turned else 0
    return current.turned_uploads >= TURNED_UPLOADS


def _with_change(calibration: Calibration, changed: bool, turned: bool = False) -> Calibration:
    return replace(calibration, orientation_changed=True, turned_round=turned) if changed else calibration


def _in_question(calibration: Calibration, gravity: FloatArray) -> Calibration:
    """`calibration` (the old mount's gravity confidence) with `gravity` as up and no forward axis."""
    return replace(
        calibration,
        rotation=_rotation(_any_forward(unit(gravity)), unit(gravity)),
        gravity_mps2=float(np.linalg.norm(gravity)),
        confidence=0.0,
        forward_confidence=0.0,
        forward_method=IN_QUESTION_METHOD,
        mount_in_question=True,
    )


def _any_forward(up: FloatArray) -> FloatArray:
    """With nothing to go on: any horizontal axis (the device's x projected, or its y)."""
    seed_axis = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    return unit(_horizontal(seed_axis, up))


def _rotation(forward: FloatArray, up: FloatArray) -> FloatArray:
    """Rows forward, left, up."""
    return np.vstack([forward, unit(_cross_product(up, forward)), up])


def _cross_product(first: FloatArray, second: FloatArray) -> FloatArray:
    # np.cross costs tens of microseconds of argument handling for two 3-vectors.
    return np.array(
        [
            first[1] * second[2] - first[2] * second[1],
            first[2] * second[0] - first[0] * second[2],
            first[0] * second[1] - first[1] * second[0],
        ]
    )


def _matrix(values: list[float]) -> FloatArray:
    return np.array(values, dtype=np.float64).reshape(3, 3)


def _horizontal(vector: FloatArray, up: FloatArray) -> FloatArray:
    return np.asarray(vector - np.dot(vector, up) * up, dtype=np.float64)


def _forward_from_gps(sums: CalibrationSums, up: FloatArray) -> tuple[FloatArray, float] | None:
    """Horizontal direction whose acceleration follows dv/dt, and its confidence."""
    count = sums.interval_count
    if count < 3:
        return None
    evidence = sums.dvdt_squared_sum - sums.dvdt_sum**2 / count
    if evidence <= 1e-6:
        return None
    mean_accel = np.array(sums.accel_sum) / count
    covariance = np.array(sums.accel_dvdt_sum) / count - mean_accel * sums.dvdt_sum / count
    horizontal = _horizontal(covariance, up)
    if float(np.linalg.norm(horizontal)) <= 1e-9:
        return None
    direction = unit(horizontal)
    scatter = _matrix(sums.accel_outer_sum) / count - np.outer(mean_accel, mean_accel)
    # Correlation along the estimated axis only: lateral acceleration in turns is orthogonal to it.
    forward_variance = float(direction @ scatter @ direction)
    correlation = float(np.dot(covariance, direction)) / math.sqrt(max(evidence / count * forward_variance, 1e-12))
    confidence = float(np.clip(correlation, 0.0, 1.0)) * min(1.0, evidence / FULL_GPS_EVIDENCE)
    return direction, confidence


def _forward_from_yaw(sums: CalibrationSums, up: FloatArray) -> tuple[FloatArray, float] | None:
    """Forward = left x up, left being the horizontal acceleration that follows the yaw rate."""
    count = sums.moving_count
    if count < 10 or not any(sums.moving_gyro_outer):
        return None
    mean_accel = np.array(sums.moving_accel_sum) / count
    mean_gyro = np.array(sums.moving_gyro_sum) / count
    yaw_variance = float(up @ (_matrix(sums.moving_gyro_outer) / count - np.outer(mean_gyro, mean_gyro)) @ up)
    if yaw_variance <= 1e-8:
        return None
    covariance = (_matrix(sums.moving_cross) / count - np.outer(mean_accel, mean_gyro)) @ up
    left = _horizontal(covariance, up)
    if float(np.linalg.norm(left)) <= 1e-9:
        return None
    left = unit(left)
    accel_scatter = _matrix(sums.moving_accel_outer) / count - np.outer(mean_accel, mean_accel)
    lateral_variance = float(left @ accel_scatter @ left)
    correlation = float(np.dot(covariance, left)) / math.sqrt(max(yaw_variance * lateral_variance, 1e-12))
    strength = min(1.0, yaw_variance * count / FULL_YAW_EVIDENCE)
    confidence = strength * float(np.clip((correlation - 0.2) / 0.4, 0.0, 1.0))
    return unit(_cross_product(left, up)), confidence


def _forward_from_stops(sums: CalibrationSums, up: FloatArray) -> tuple[FloatArray, float] | None:
    """The mean of the forward-pointing stop transitions, and how consistently they point."""
    if sums.stop_count < 0.5 * LONE_EDGE_WEIGHT or sums.stop_length_sum <= 0:  # one lone edge, decayed, still counts
        return None
    horizontal = _horizontal(np.array(sums.stop_sum), up)
    length = float(np.linalg.norm(horizontal))
    if length <= 1e-9:
        return None
    coherence = length / sums.stop_length_sum
    confidence = min(1.0, sums.stop_count / FULL_STOP_TRANSITIONS) * float(np.clip((coherence - 0.4) / 0.4, 0.0, 1.0))
    return horizontal / length, confidence


def _forward_from_dips(sums: CalibrationSums, up: FloatArray) -> tuple[FloatArray, float] | None:
    """The direction of the summed speed-dip vectors, and a confidence that never reaches reliable alone.

    Each upload's vector is noisy (parking, reversing, a bump between two stops point it anywhere):
    the confidence needs many uploads contributing alike (their participation ratio against
    `FULL_DIP_UPLOADS`) and their sum to be coherent; it is capped at `DIP_MAX_CONFIDENCE`, so dips
    only corroborate another source (a stop, a turn with a gyroscope, GPS) or lower its confidence
    by disagreeing.
    """
    if sums.dip_length_sum <= 0 or sums.dip_square_sum <= 0:
        return None
    horizontal = _horizontal(np.array(sums.dip_sum), up)
    length = float(np.linalg.norm(horizontal))
    if length <= 1e-9:
        return None
    coherence = length / sums.dip_length_sum
    effective = sums.dip_length_sum**2 / sums.dip_square_sum
    strength = min(1.0, effective / FULL_DIP_UPLOADS)
    confidence = DIP_MAX_CONFIDENCE * strength * float(np.clip((coherence - 0.3) / 0.4, 0.0, 1.0))
    return horizontal / length, confidence


def _longitudinal_axis(sums: CalibrationSums, up: FloatArray) -> tuple[FloatArray, float] | None:
    """The principal horizontal axis of straight-driving acceleration (no sign), and its confidence."""
    count = sums.straight_count
    if count < 10:
        return None
    mean = np.array(sums.straight_accel_sum) / count
    scatter = _matrix(sums.straight_accel_outer) / count - np.outer(mean, mean)
    projector = np.eye(3) - np.outer(up, up)
    values, vectors = np.linalg.eigh(projector @ scatter @ projector)
    largest, second = float(values[2]), float(values[1])
    if largest <= 1e-6:
        return None
    axis = unit(_horizontal(vectors[:, 2], up))
    ratio = second / largest
    confidence = min(1.0, count / FULL_STRAIGHT_EVIDENCE) * float(np.clip((0.7 - ratio) / 0.5, 0.0, 1.0))
    return axis, confidence


def _up_of_linear(sums: CalibrationSums) -> tuple[FloatArray, float]:
    """Gravity-removed accelerometers: up is where the block means vary least (driving is horizontal)."""
    count = sums.moving_count
    if count < 10:
        return np.array([0.0, 0.0, 1.0]), 0.0
    mean = np.array(sums.moving_accel_sum) / count
    scatter = _matrix(sums.moving_accel_outer) / count - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(scatter)
    up = vectors[:, 0]
    # Which way is up cannot be seen: take the device's +z side (screens face the cabin).
    up = up if up[2] >= 0 else -up
    ratio = float(values[0] / max(values[1], 1e-9))
    return unit(up), min(1.0, count / FULL_GRAVITY_EVIDENCE) * float(np.clip((0.5 - ratio) / 0.4, 0.0, 1.0)) * 0.6


def _signed_evidence(
    sums: CalibrationSums, up: FloatArray, *, dips: bool = True
) -> tuple[FloatArray, float, list[str]]:
    """The forward evidence that knows its sign: the confidence-weighted sum of the finders' directions (the
    speed dips' only when `dips`), the sum of their confidences, and the finders that count (0.05 or more)."""
    signed: list[tuple[str, FloatArray, float]] = []
    finders = [("gps", _forward_from_gps), ("yaw", _forward_from_yaw), ("stops", _forward_from_stops)]
    if dips:
        finders.append(("dips", _forward_from_dips))
    for name, finder in finders:
        found = finder(sums, up)
        if found is not None and found[1] > 0.0:
            signed.append((name, found[0], found[1]))
    total = sum(confidence for _, _, confidence in signed)
    combined = sum((confidence * direction for _, direction, confidence in signed), np.zeros(3))
    return combined, float(total), [name for name, _, confidence in signed if confidence >= 0.05]


def _signed_confidence(combined: FloatArray, total: float) -> float:
    """How far `_signed_evidence` can be trusted: its amount (capped at 1), discounted by how much its finders
    disagree (the length of their weighted sum over the sum of their weights, squared)."""
    length = float(np.linalg.norm(combined))
    if total <= 0 or length <= 1e-9:
        return 0.0
    return min(1.0, total) * (length / total) ** 2


def estimate(sums: CalibrationSums, gravity_hint: FloatArray | None = None, *, linear: bool = False) -> Calibration:
    """Rotation and confidence from the sums alone (deterministic)."""
    if linear:
        up, gravity_confidence = _up_of_linear(sums)
        gravity_mps2 = 0.0
    else:
        if gravity_hint is not None or sums.gravity_weight <= 0:
            gravity_mean = np.asarray(gravity_hint if gravity_hint is not None else sums.gravity_sum, dtype=np.float64)
        else:
            gravity_mean = np.array(sums.gravity_sum, dtype=np.float64) / sums.gravity_weight
        up = unit(gravity_mean) if np.linalg.norm(gravity_mean) > 0 else np.array([0.0, 0.0, 1.0])
        gravity_mps2 = float(np.linalg.norm(gravity_mean))
        gravity_confidence = min(1.0, sums.gravity_weight / FULL_GRAVITY_EVIDENCE) if gravity_hint is None else 0.1

    combined, total, methods = _signed_evidence(sums, up)
    forward: FloatArray | None = None
    forward_confidence = 0.0
    if total > 0 and float(np.linalg.norm(combined)) > 1e-9:
        coherence = float(np.linalg.norm(combined)) / total
        forward_confidence = _signed_confidence(combined, total)
        axis = _longitudinal_axis(sums, up)
        if axis is not None and axis[1] > 0.0:
            signed_direction = combined / float(np.linalg.norm(combined))
            agreement = abs(float(np.dot(axis[0], signed_direction)))
            direction = axis[0] if np.dot(axis[0], combined) >= 0 else -axis[0]
            # The axis refines the direction; the signed evidence says which way is forward.
            combined = combined + axis[1] * min(1.0, total) * direction * float(np.linalg.norm(combined)) / total
            if axis[1] >= 0.05:
                methods.append("straight")
            # With a well-evidenced axis only its sign is in question, which takes half the evidence
            # a direction does; an axis far from the signed estimate lends nothing.
            sign_strength = min(1.0, 2.0 * total) * coherence**2
            forward_confidence = max(forward_confidence, axis[1] * sign_strength * max(0.0, 2.0 * agreement - 1.0))
        forward = unit(_horizontal(combined, up))
    if forward is None or float(np.linalg.norm(forward)) < 0.5:
        forward = _any_forward(up)
        forward_confidence = 0.0
        methods = []
    return Calibration(
        rotation=_rotation(forward, up),
        gravity_mps2=gravity_mps2,
        confidence=float(min(gravity_confidence, forward_confidence)),
        gravity_confidence=float(gravity_confidence),
        forward_confidence=float(forward_confidence),
        forward_method="+".join(methods) if methods else "none",
        orientation_changed=False,
    )
