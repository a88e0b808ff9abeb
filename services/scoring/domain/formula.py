"""The score formula (see docs/scoring.md for the reasoning behind every constant).

An event costs `points = weight(type) * multiplier(severity)`. A trip or a driver
is scored on points per 100 km of *exposure*, where exposure is the driven
distance, raised to what the driving time would cover at urban speed, and never
below a floor, so a short trip with one event is not scored 0:

    exposure_km = max(distance_km, URBAN_SPEED_KMH * hours, EXPOSURE_FLOOR_KM)
    score       = 100 * exp(-DECAY_PER_POINT * 100 * points / exposure_km)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from michi.contracts.v1 import common_pb2

EventType = int  # a `michi.v1.EventType` value

HARSH_BRAKING: EventType = common_pb2.EVENT_TYPE_HARSH_BRAKING
HARSH_ACCELERATION: EventType = common_pb2.EVENT_TYPE_HARSH_ACCELERATION
HARSH_CORNERING: EventType = common_pb2.EVENT_TYPE_HARSH_CORNERING
SPEEDING: EventType = common_pb2.EVENT_TYPE_SPEEDING
# Camera events (services/camera): the driver's attention and the distance kept.
DISTRACTION: EventType = common_pb2.EVENT_TYPE_DISTRACTION
DROWSINESS: EventType = common_pb2.EVENT_TYPE_DROWSINESS
TAILGATING: EventType = common_pb2.EVENT_TYPE_TAILGATING
# Each measured in a unit of its own: a label moving an event to or from one of them keeps no measurement.
CAMERA_TYPES = frozenset({DISTRACTION, DROWSINESS, TAILGATING})

# What one event of a type costs before severity (speeding counts per episode).
WEIGHTS: dict[EventType, float] = {
    HARSH_BRAKING: 3.0,
    HARSH_CORNERING: 3.0,
    HARSH_ACCELERATION: 2.0,
    SPEEDING: 2.0,
    # Inattention weighs most in fleet safety products (one puts it at 75 % of its driver risk score):
    # an episode of eyes off the road or eyes closing costs more than a harsh brake.
    DISTRACTION: 4.0,
    DROWSINESS: 4.0,
    # Close following is the next heaviest: as much as a harsh brake, which it often ends in.
    TAILGATING: 3.0,
}

SEVERITY_MULTIPLIERS: dict[int, float] = {1: 1.0, 2: 1.5, 3: 2.0}

# Score halves at 25 points per 100 km (about eight mild harsh brakes per 100 km).
DECAY_PER_POINT = math.log(2) / 25.0
# A trip counts as at least this much driving, so one event on a 2 km trip is not a 0.
EXPOSURE_FLOOR_KM = 20.0
# Slow urban driving earns exposure by time: an hour in traffic counts as 30 km.
URBAN_SPEED_KMH = 30.0

KMH_PER_MPS = 3.6


@dataclass(frozen=True)
class SeverityBands:
    """Magnitudes (absolute peak) at which an event of one type becomes moderate (2) and severe (3).

    `threshold` is where the detector calls the event at all (documentation and tests:
    anything the detector reports counts as at least mild). With `lower_is_worse` (time headway) the
    event is moderate at or below `moderate_at` and severe at or below `severe_at`.
    """

    threshold: float
    moderate_at: float
    severe_at: float
    lower_is_worse: bool = False


# m/s^2 for the harsh types (0.3 g / 0.45 g / 0.6 g for braking and cornering);
# m/s over the limit for speeding (10 / 20 / 30 km/h over).
SEVERITY_BANDS: dict[EventType, SeverityBands] = {
    HARSH_BRAKING: SeverityBands(threshold=3.0, moderate_at=4.5, severe_at=6.0),
    HARSH_CORNERING: SeverityBands(threshold=3.0, moderate_at=4.5, severe_at=6.0),
    HARSH_ACCELERATION: SeverityBands(threshold=2.5, moderate_at=3.5, severe_at=4.5),
    SPEEDING: SeverityBands(threshold=10 / KMH_PER_MPS, moderate_at=20 / KMH_PER_MPS, severe_at=30 / KMH_PER_MPS),
    # Seconds the driver's head stayed turned away (2 s off the road doubles the crash risk; 3 s, 5 s).
    DISTRACTION: SeverityBands(threshold=2.0, moderate_at=3.0, severe_at=5.0),
    # PERCLOS, the share of the sliding window with the eyes closed (0.15 drowsy, 0.3, 0.5).
    DROWSINESS: SeverityBands(threshold=0.15, moderate_at=0.3, severe_at=0.5),
    # Shortest time headway to the lead vehicle in seconds (called under 1.0 s; 0.8 s, 0.5 s).
    TAILGATING: SeverityBands(threshold=1.0, moderate_at=0.8, severe_at=0.5, lower_is_worse=True),
}


def is_scored_type(event_type: EventType) -> bool:
    """Whether an event of this type counts against the driver (confounders and normal windows do not)."""
    return event_type in WEIGHTS


def event_magnitude(event_type: EventType, peak_value: float, speed_mps: float, speed_limit_mps: float) -> float:
    """The magnitude the severity bands apply to: |peak| (m/s^2, or the camera events' measure), or m/s over the
    limit for speeding."""
    if event_type == SPEEDING:
        excess = abs(peak_value)
        if excess == 0.0 and speed_limit_mps > 0.0:
            excess = max(0.0, speed_mps - speed_limit_mps)
        return excess
    return abs(peak_value)


def severity_for(event_type: EventType, magnitude: float) -> int:
    """1 (mild) to 3 (severe); whatever the detector reported counts as at least mild."""
    bands = SEVERITY_BANDS.get(event_type)
    if bands is None or not math.isfinite(magnitude):
        return 1
    if bands.lower_is_worse:
        # 0 is "not measured" (a detection without its measure), not a headway of 0 s.
        if magnitude <= 0.0:
            return 1
        return 3 if magnitude <= bands.severe_at else 2 if magnitude <= bands.moderate_at else 1
    if magnitude >= bands.severe_at:
        return 3
    if magnitude >= bands.moderate_at:
        return 2
    return 1


def relabelled_severity(
    detected_type: EventType, labelled_type: EventType, peak_value: float, speed_mps: float, speed_limit_mps: float
) -> int:
    """Severity of an event whose type an annotator corrected, from what the detector measured.

    The harsh types share a unit (m/s^2), so the peak is read against the corrected type's bands;
    speeding is judged by speed over the limit. When the detector's measurement is in another unit
    (a speeding episode relabelled as harsh braking, a harsh brake relabelled as distraction), the event counts
    as mild.
    """
    if labelled_type == SPEEDING:
        peak = peak_value if detected_type == SPEEDING else 0.0
        if peak == 0.0 and speed_limit_mps <= 0.0:
            return 1
        return severity_for(SPEEDING, event_magnitude(SPEEDING, peak, speed_mps, speed_limit_mps))
    if detected_type == SPEEDING or peak_value == 0.0:
        return 1
    if detected_type != labelled_type and CAMERA_TYPES & {detected_type, labelled_type}:
        # A camera event's seconds, PERCLOS or headway against m/s^2 bands (or another camera type's): another unit.
        return 1
    return severity_for(labelled_type, event_magnitude(labelled_type, peak_value, speed_mps, speed_limit_mps))


def weight_for(event_type: EventType) -> float:
    return WEIGHTS.get(event_type, 0.0)


def points_for(event_type: EventType, severity: int) -> float:
    return weight_for(event_type) * SEVERITY_MULTIPLIERS[min(3, max(1, severity))]


def exposure_km(distance_km: float, duration_s: float) -> float:
    """Distance the score divides by: driven km, time-equivalent km at urban speed, or the floor."""
    hours = max(0.0, duration_s) / 3600.0
    return max(max(0.0, distance_km), URBAN_SPEED_KMH * hours, EXPOSURE_FLOOR_KM)


def score_from_points(points: float, exposure: float) -> float:
    """0-100, strictly decreasing in points per 100 km of exposure; 100 with no points."""
    points_per_100km = 100.0 * max(0.0, points) / max(exposure, EXPOSURE_FLOOR_KM)
    return 100.0 * math.exp(-DECAY_PER_POINT * points_per_100km)


def rate_per_100km(count: float, distance_km: float) -> float:
    """Events per 100 km of driven distance (0 when nothing was driven: the score covers that case)."""
    return 100.0 * count / distance_km if distance_km > 0.0 else 0.0


def rate_per_hour(count: float, duration_s: float) -> float:
    return 3600.0 * count / duration_s if duration_s > 0.0 else 0.0
