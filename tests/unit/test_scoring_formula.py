"""The score formula: severity bands, points, exposure floor, monotonicity, driver rolling window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.scoring.domain import formula
from services.scoring.domain.driver import (
    DAY_S,
    DriverState,
    RollingWindow,
    TripContribution,
    apply_trip,
    summarize_driver,
)
from services.scoring.domain.formula import HARSH_ACCELERATION, HARSH_BRAKING, HARSH_CORNERING, SPEEDING


@pytest.mark.parametrize(
    ("event_type", "magnitude", "severity"),
    [
        (HARSH_BRAKING, 3.2, 1),
        (HARSH_BRAKING, 4.5, 2),
        (HARSH_BRAKING, 5.9, 2),
        (HARSH_BRAKING, 6.0, 3),
        (HARSH_BRAKING, 1.0, 1),  # below the threshold still counts as mild: the detector decided
        (HARSH_ACCELERATION, 3.6, 2),
        (HARSH_CORNERING, 9.0, 3),
        (SPEEDING, 3.0, 1),  # ~11 km/h over
        (SPEEDING, 6.0, 2),  # ~22 km/h over
        (SPEEDING, 9.0, 3),  # ~32 km/h over
        (HARSH_BRAKING, math.nan, 1),
    ],
)
def test_severity_follows_the_bands_of_each_type(event_type: int, magnitude: float, severity: int) -> None:
    assert formula.severity_for(event_type, magnitude) == severity


def test_braking_magnitude_ignores_the_sign_and_speeding_falls_back_to_speed_over_limit() -> None:
    assert formula.event_magnitude(HARSH_BRAKING, -5.0, 10.0, 0.0) == 5.0
    assert formula.event_magnitude(SPEEDING, 0.0, 25.0, 16.0) == pytest.approx(9.0)
    assert formula.event_magnitude(SPEEDING, 4.0, 25.0, 16.0) == 4.0


def test_points_are_weight_times_severity_multiplier() -> None:
    assert formula.points_for(HARSH_BRAKING, 1) == 3.0
    assert formula.points_for(HARSH_BRAKING, 2) == 4.5
    assert formula.points_for(HARSH_CORNERING, 3) == 6.0
    assert formula.points_for(HARSH_ACCELERATION, 1) == 2.0
    assert formula.points_for(SPEEDING, 3) == 4.0
    assert not formula.is_scored_type(6)  # confounder
    assert formula.points_for(6, 3) == 0.0


def test_no_points_is_a_perfect_score_and_the_constants_give_the_documented_anchors() -> None:
    assert formula.score_from_points(0.0, 120.0) == 100.0
    # Half at 25 points per 100 km.
    assert formula.score_from_points(25.0, 100.0) == pytest.approx(50.0)
    # One mild harsh brake in 100 km.
    assert formula.score_from_points(3.0, 100.0) == pytest.approx(92.0, abs=0.1)


@given(
    points=st.floats(0, 500),
    extra=st.floats(0.01, 100),
    distance=st.floats(0, 2000),
    duration=st.floats(0, 86_400),
)
def test_score_is_bounded_and_strictly_decreasing_in_points(
    points: float, extra: float, distance: float, duration: float
) -> None:
    exposure = formula.exposure_km(distance, duration)
    score = formula.score_from_points(points, exposure)
    worse = formula.score_from_points(points + extra, exposure)
    assert 0.0 <= worse < score <= 100.0


def test_exposure_floor_keeps_a_short_trip_with_one_event_from_scoring_zero() -> None:
    two_km = formula.exposure_km(2.0, 240.0)
    assert two_km == formula.EXPOSURE_FLOOR_KM
    score = formula.score_from_points(formula.points_for(HARSH_BRAKING, 1), two_km)
    assert 60.0 < score < 75.0
    # Without the floor the same trip would be near zero: that is what the floor prevents.
    assert formula.score_from_points(3.0, 2.0) == formula.score_from_points(3.0, formula.EXPOSURE_FLOOR_KM)


def test_exposure_counts_slow_urban_driving_by_time() -> None:
    assert formula.exposure_km(10.0, 2 * 3600.0) == pytest.approx(60.0)
    assert formula.exposure_km(150.0, 3600.0) == 150.0


def test_rates_per_100km_and_per_hour() -> None:
    assert formula.rate_per_100km(3, 50.0) == 6.0
    assert formula.rate_per_hour(3, 1800.0) == 6.0
    assert formula.rate_per_100km(3, 0.0) == 0.0


def _trip(trip_id: str, day: float, points: float, *, distance_km: float = 50.0, revision: int = 1) -> TripContribution:
    return TripContribution(
        trip_id, revision, day * DAY_S, distance_km, 3600.0, points, {HARSH_BRAKING: int(points // 3)}
    )


def test_driver_score_is_exposure_weighted_and_ignores_redelivered_trips() -> None:
    state = DriverState("driver-1")
    window = RollingWindow()
    assert apply_trip(state, _trip("a", 1, 6.0), window)
    assert apply_trip(state, _trip("b", 2, 0.0, distance_km=150.0), window)
    assert not apply_trip(state, _trip("a", 1, 6.0), window)
    summary = summarize_driver(state)
    assert summary.revision == 2
    assert summary.trips == 2
    assert summary.distance_km == 200.0
    assert summary.points == 6.0
    assert summary.score == pytest.approx(formula.score_from_points(6.0, 200.0))
    assert summary.event_counts == {HARSH_BRAKING: 2}


def test_driver_window_drops_trips_older_than_30_days_and_a_higher_revision_replaces() -> None:
    state = DriverState("driver-1")
    window = RollingWindow(days=30)
    apply_trip(state, _trip("old", 1, 30.0), window)
    apply_trip(state, _trip("new", 40, 0.0), window)
    assert set(state.trips) == {"new"}
    assert summarize_driver(state).score == 100.0
    assert not apply_trip(state, _trip("older", 2, 3.0), window)  # outside the window: changes nothing
    assert apply_trip(state, _trip("new", 40, 9.0, revision=2), window)  # a re-scored trip (labels, issue #5)
    assert summarize_driver(state).points == 9.0
    assert state.revision == 3


def test_driver_window_caps_the_number_of_trips() -> None:
    state = DriverState("driver-1")
    window = RollingWindow(days=30, max_trips=3)
    for day in range(5):
        apply_trip(state, _trip(f"trip-{day}", 10 + day, 3.0), window)
    assert set(state.trips) == {"trip-2", "trip-3", "trip-4"}
    assert not apply_trip(state, _trip("trip-0", 10, 3.0), window)


def test_driver_state_round_trips_through_json_types() -> None:
    import json

    state = DriverState("driver-1")
    apply_trip(state, _trip("a", 1, 6.0), RollingWindow())
    restored = DriverState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
