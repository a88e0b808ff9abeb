"""Vibration at the device: road and engine through the holder's resonance, sampled as a real sensor samples.

Each source is Gaussian noise with a one-sided power spectral density (PSD, (m/s²)²/Hz, or (rad/s)²/Hz):

* **road**: the body's response to the road surface, a broad body-bounce hump at the vehicle's suspension
  frequency (1.3-2 Hz) plus a wheel-hop hump (`WHEEL_HOP_HZ`), scaled with speed by `road_rms`;
* **engine**: idle shake while the engine runs, a broad hump around `ENGINE_HZ` (fitted to the stopped
  seconds of `auckland-backwards`, the only stopped real seconds);
* the **holder** passes both through its resonance (`transmissibility`), the same for angular rates.

A sensor sampling at `rate` Hz sees content above its Nyquist frequency folded back, after its own
first-order low-pass at rate/2 (`sampled_density`): a 16.7 Hz phone shows an aliased tail of wheel hop
and holder resonance, as the Auckland phone does. Noise is synthesised per upload slice in the frequency
domain (white noise shaped by the square root of the PSD), so any spectrum costs two FFTs.

Every constant is fitted in `docs/simulator-fit.md` (`python -m michi.simulator.fit_report`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Density = Callable[[FloatArray], FloatArray]

# Content above this is not modelled (engine harmonics and holder resonances sit below it).
MAX_CONTENT_HZ = 250.0
# Road: body bounce damping, the wheel-hop hump and its share of the road's power at the body (comma2k19's
# vertical PSD has its second hump at 10-14 Hz).
BODY_DAMPING = 0.45
WHEEL_HOP_HZ = 12.0
WHEEL_HOP_DAMPING = 0.2
WHEEL_HOP_SHARE = 0.65
# Road vibration at the body (vertical, rms m/s², vehicle harshness 1) at 10 m/s, and how it grows with
# speed: the Auckland phone's per-second vibration barely grows from 5 to 20 m/s.
ROAD_RMS_AT_10_MPS = 0.95
ROAD_SPEED_EXPONENT = 0.2
# Below this speed the wheels roll too slowly to shake anything (linear fade to 0 at standstill).
ROLLING_ONSET_MPS = 1.5
# Engine idle shake: a broad hump (engine rocking on its mounts and aliased firing harmonics).
ENGINE_HZ = 7.0
ENGINE_DAMPING = 0.8
_INTEGRATION_GRID = np.linspace(0.0, MAX_CONTENT_HZ, 25_001)


def resonance(frequencies: FloatArray, centre_hz: float, damping: float) -> FloatArray:
    """|H|² of a damped band-pass: 1 at `centre_hz`, falling as f² below and as f⁻² above."""
    ratio = frequencies / centre_hz
    width = (2.0 * damping * ratio) ** 2
    return np.asarray(width / ((1.0 - ratio**2) ** 2 + width), dtype=np.float64)


def transmissibility(frequencies: FloatArray, resonance_hz: float, quality: float) -> FloatArray:
    """|H|² of base excitation through a spring mount: 1 well below, about Q² at resonance, falling above."""
    ratio = frequencies / resonance_hz
    damping = 1.0 / (2.0 * quality)
    width = (2.0 * damping * ratio) ** 2
    return np.asarray((1.0 + width) / ((1.0 - ratio**2) ** 2 + width), dtype=np.float64)


@lru_cache(maxsize=64)
def _power(centre_hz: float, damping: float) -> float:
    """The integral of `resonance` over the modelled band (its power for unit peak density)."""
    return float(np.trapezoid(resonance(_INTEGRATION_GRID, centre_hz, damping), _INTEGRATION_GRID))


def road_density(body_hz: float, wheel_hop_share: float = WHEEL_HOP_SHARE) -> Density:
    """Unit-variance road vibration at the body (before the holder) of a vehicle bouncing at `body_hz`.

    The body's rotation rates (pitch and roll on the suspension) take `wheel_hop_share=0`: comma2k19's
    gyroscope has almost nothing at wheel-hop frequencies.
    """
    body = (1.0 - wheel_hop_share) / _power(body_hz, BODY_DAMPING)
    wheel = wheel_hop_share / _power(WHEEL_HOP_HZ, WHEEL_HOP_DAMPING)

    def density(frequencies: FloatArray) -> FloatArray:
        return np.asarray(
            body * resonance(frequencies, body_hz, BODY_DAMPING)
            + wheel * resonance(frequencies, WHEEL_HOP_HZ, WHEEL_HOP_DAMPING),
            dtype=np.float64,
        )

    return density


def engine_density() -> Density:
    """Unit-variance engine idle shake at the body."""
    scale = 1.0 / _power(ENGINE_HZ, ENGINE_DAMPING)

    def density(frequencies: FloatArray) -> FloatArray:
        return np.asarray(scale * resonance(frequencies, ENGINE_HZ, ENGINE_DAMPING), dtype=np.float64)

    return density


def through_holder(density: Density, resonance_hz: float, quality: float) -> Density:
    def held(frequencies: FloatArray) -> FloatArray:
        return np.asarray(density(frequencies) * transmissibility(frequencies, resonance_hz, quality))

    return held


def road_rms(speed_mps: FloatArray, harshness: float) -> FloatArray:
    """Road vibration at the body, rms m/s², at each speed (0 at standstill)."""
    speed = np.maximum(speed_mps, 0.0)
    growth = (np.maximum(speed, 1e-3) / 10.0) ** ROAD_SPEED_EXPONENT
    onset = np.minimum(speed / ROLLING_ONSET_MPS, 1.0)
    return np.asarray(harshness * ROAD_RMS_AT_10_MPS * growth * onset, dtype=np.float64)


def sampled_density(density: Density, rate_hz: float, frequencies: FloatArray) -> FloatArray:
    """What a sensor at `rate_hz` records at `frequencies` (0 to rate/2): every alias folded in after the
    sensor's first-order low-pass at rate/2 (a MEMS sensor's usual bandwidth setting)."""
    folds = max(1, math.ceil(MAX_CONTENT_HZ / rate_hz))
    multiples = np.arange(folds + 1, dtype=np.float64)[:, None] * rate_hz
    images = np.concatenate([multiples + frequencies[None, :], multiples[1:] - frequencies[None, :]])
    inside = (images >= 0.0) & (images <= MAX_CONTENT_HZ)
    low_pass = 1.0 / (1.0 + (images / (rate_hz / 2.0)) ** 2)
    values = np.where(inside, density(np.clip(images, 0.0, MAX_CONTENT_HZ)) * low_pass, 0.0)
    return np.asarray(values.sum(axis=0), dtype=np.float64)


def coloured_noise(
    random: np.random.Generator, channels: int, count: int, rate_hz: float, density: Density
) -> FloatArray:
    """`channels` independent series of `count` samples at `rate_hz` whose PSD is `density` as sampled."""
    if count == 0:
        return np.zeros((channels, 0))
    white = random.standard_normal((channels, count))
    frequencies = np.asarray(np.fft.rfftfreq(count, 1.0 / rate_hz), dtype=np.float64)
    # White N(0, 1) has a one-sided PSD of 2/rate: this gain gives it the target density.
    gain = np.sqrt(sampled_density(density, rate_hz, frequencies) * rate_hz / 2.0)
    gain[0] = 0.0
    return np.fft.irfft(np.fft.rfft(white, axis=1) * gain, n=count, axis=1)
