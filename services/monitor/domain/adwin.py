"""ADWIN, the adaptive-window change detector the monitor runs over per-label correctness (concept drift).

ADWIN2 of Bifet & Gavaldà, "Learning from time-changing data with adaptive windowing", SIAM International
Conference on Data Mining 2007, pp. 443-448: the window of recent values is kept as an exponential histogram
(level i holds up to `max_buckets` buckets of 2**i values each, summarised by their sum and their sum of squared
deviations, merged two by two as a level overflows), so memory and the cost of a check grow with
log(window). Every `clock` values, once the window is longer than `grace_period`, every split of the window at a
bucket boundary into an older part W0 and a newer part W1 (each at least `min_window_length` values) is tested:
when |mean(W0) - mean(W1)| exceeds

    epsilon = sqrt(2 m sigma^2 delta') + 2/3 delta' m,   m = 1/(n0 - min + 1) + 1/(n1 - min + 1),
    delta' = ln(2 ln(width) / delta),   sigma^2 the variance of the whole window,

the oldest bucket is dropped and the splits are tested again, until no split differs; the update that dropped
anything reports a change.

This is a transcription of river's `river.drift.ADWIN` (river 0.26.1: `rust_src/adwin.rs` and
`river/drift/adwin.py`), with the same defaults (delta=0.002, clock=32, max_buckets=5, min_window_length=5,
grace_period=10) and the same floating-point operations in the same order, so it reports changes at the same
updates and the same `estimation` and `width` after every update. Like river, the update after a change starts
again from an empty window (and restarts the clock) before taking its value. Where the names differ from river:
`variance` here is the variance of the values in the window (river's `variance` is their sum of squared
deviations), `total` is the count of values ever seen (river's is the sum of the window) and `drifts` counts every
change since construction (river's `n_detections` restarts with the window). `tests/unit/test_monitor_adwin.py`
checks all of that against river itself on seeded Bernoulli and Gaussian streams with and without change points,
and measures the detection delay and false alarms the monitor's issue asks for.
"""

from __future__ import annotations

import math

# The number of values in a bucket of each level, as floats because all window arithmetic is in floats.
_BUCKET_SIZES = tuple(float(1 << level) for level in range(64))


class Adwin:
    """An ADWIN change detector over a stream of numbers: `update` each value, read the window's figures."""

    def __init__(
        self,
        delta: float = 0.002,
        clock: int = 32,
        max_buckets: int = 5,
        min_window_length: int = 5,
        grace_period: int = 10,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must be in (0, 1), got {delta}")
        if clock < 1:
            raise ValueError(f"clock must be at least 1, got {clock}")
        if max_buckets < 1:
            raise ValueError(f"max_buckets must be at least 1, got {max_buckets}")
        if min_window_length < 1:
            raise ValueError(f"min_window_length must be at least 1, got {min_window_length}")
        if grace_period < 0:
            raise ValueError(f"grace_period must not be negative, got {grace_period}")
        self.delta = delta
        self.clock = clock
        self.max_buckets = max_buckets
        self.min_window_length = min_window_length
        self.grace_period = grace_period
        self._drifts = 0
        self._values_seen = 0
        self._drift_detected = False
        self._start_window()

    def _start_window(self) -> None:
        """Empties the window and restarts the clock (at construction and on the update after a change)."""
        # `_bucket_sums[i]` / `_bucket_deviations[i]`: the sum and the sum of squared deviations from their own mean
        # of each bucket of level i (2**i values), oldest first.
        self._bucket_sums: list[list[float]] = [[]]
        self._bucket_deviations: list[list[float]] = [[]]
        self._width = 0.0
        self._sum = 0.0
        # Sum of squared deviations from the window's mean.
        self._squared_deviations = 0.0
        self._tick = 0

    @property
    def estimation(self) -> float:
        """Mean of the values in the current window (0.0 while it is empty)."""
        if self._width == 0.0:
            return 0.0
        return self._sum / self._width

    @property
    def width(self) -> int:
        """Number of values in the current window."""
        return int(self._width)

    @property
    def variance(self) -> float:
        """Variance (population, divided by `width`) of the values in the current window (0.0 while it is empty)."""
        if self._width == 0.0:
            return 0.0
        return self._squared_deviations / self._width

    @property
    def drifts(self) -> int:
        """Number of changes detected since construction."""
        return self._drifts

    @property
    def total(self) -> int:
        """Number of values seen since construction."""
        return self._values_seen

    @property
    def drift_detected(self) -> bool:
        """Whether the last update detected a change (and so cut the window)."""
        return self._drift_detected

    def update(self, value: float) -> bool:
        """Adds `value` to the window; True when this update detected a change, i.e. cut the oldest values off."""
        if self._drift_detected:
            self._start_window()
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"ADWIN takes finite values, got {value}")
        self._values_seen += 1

        level_sums = self._bucket_sums[0]
        level_sums.append(value)
        self._bucket_deviations[0].append(0.0)
        # Streaming update of the squared deviations; the operations are river's, in river's order.
        width = self._width + 1.0
        if width > 1.0:
            deviation = value - self._sum / (width - 1.0)
            self._squared_deviations += (width - 1.0) * deviation * deviation / width
        self._sum += value
        self._width = width
        if len(level_sums) > self.max_buckets:
            self._merge_buckets()

        self._tick += 1
        detected = self._tick % self.clock == 0 and width > self.grace_period and self._cut_window()
        self._drift_detected = detected
        if detected:
            self._drifts += 1
        return detected

    def _merge_buckets(self) -> None:
        """Merges the two oldest buckets of each overflowing level into one of the next level."""
        bucket_sums = self._bucket_sums
        bucket_deviations = self._bucket_deviations
        max_buckets = self.max_buckets
        level = 0
        while len(bucket_sums[level]) > max_buckets:
            size = _BUCKET_SIZES[level]
            sums = bucket_sums[level]
            deviations = bucket_deviations[level]
            first_sum, second_sum = sums[0], sums[1]
            first_mean = first_sum / size
            second_mean = second_sum / size
            merged_deviations = (
                deviations[0] + deviations[1] + size * 0.5 * (first_mean - second_mean) * (first_mean - second_mean)
            )
            if level + 1 == len(bucket_sums):
                bucket_sums.append([])
                bucket_deviations.append([])
            bucket_sums[level + 1].append(first_sum + second_sum)
            bucket_deviations[level + 1].append(merged_deviations)
            del sums[:2]
            del deviations[:2]
            level += 1

    def _cut_window(self) -> bool:
        """Drops the oldest bucket while some split of the window has sub-windows whose means differ; True if any."""
        bucket_sums = self._bucket_sums
        minimum = float(self.min_window_length)
        two_thirds = 2.0 / 3.0
        cut = False
        while True:
            width = self._width
            if width < 2.0:
                # No split leaves values on both sides (and ln(ln(1)) is undefined).
                return cut
            variance = self._squared_deviations / width
            if variance < 0.0:
                # Rounding can leave a tiny negative sum of squares: river's bound is then NaN and no split differs.
                return cut
            delta_prime = math.log(2.0 * math.log(width) / self.delta)
            linear_term = two_thirds * delta_prime
            older_width = 0.0
            newer_width = width
            older_sum = 0.0
            newer_sum = self._sum
            found = False
            for level in range(len(bucket_sums) - 1, -1, -1):
                size = _BUCKET_SIZES[level]
                sums = bucket_sums[level]
                # The split after the newest bucket leaves W1 empty and is never tested.
                last = len(sums) - 1 if level == 0 else len(sums)
                for index in range(last):
                    bucket_sum = sums[index]
                    older_width += size
                    newer_width -= size
                    older_sum += bucket_sum
                    newer_sum -= bucket_sum
                    if newer_width >= minimum and older_width >= minimum:
                        harmonic = 1.0 / (older_width - minimum + 1.0) + 1.0 / (newer_width - minimum + 1.0)
                        epsilon = math.sqrt(2.0 * harmonic * variance * delta_prime) + linear_term * harmonic
                        if abs(older_sum / older_width - newer_sum / newer_width) > epsilon:
                            found = True
                            break
                if found:
                    break
            if not found:
                return cut
            cut = True
            self._drop_oldest_bucket()

    def _drop_oldest_bucket(self) -> None:
        """Removes the oldest bucket from the window and its figures."""
        level = len(self._bucket_sums) - 1
        size = _BUCKET_SIZES[level]
        sums = self._bucket_sums[level]
        deviations = self._bucket_deviations[level]
        bucket_sum = sums.pop(0)
        bucket_deviations = deviations.pop(0)
        bucket_mean = bucket_sum / size
        self._width -= size
        self._sum -= bucket_sum
        window_mean = self._sum / self._width
        self._squared_deviations -= bucket_deviations + size * self._width * (bucket_mean - window_mean) * (
            bucket_mean - window_mean
        ) / (size + self._width)
        if not sums and level > 0:
            self._bucket_sums.pop()
            self._bucket_deviations.pop()
