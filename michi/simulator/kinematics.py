"""The longitudinal driver and vehicle model, stepped at 10 Hz along a planned path.

A speed controller follows the posted limit (times the driver's cruise fraction), slows on
comfortable braking curves for turns and stop lines, waits at stops, and parks at the end of
the trip. Scheduled events take over the controller for a moment (harsh braking, harsh
acceleration, a too-fast turn, a burst of speeding) or add an overlay the IMU renderer draws
(potholes, speed bumps, a device moved in its mount, winter slips). What really happened is
measured afterwards from the same arrays the sensors are rendered from.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from michi.simulator.path import Constraint, Path
from michi.simulator.vehicles import GRAVITY_MPS2, DriverStyle, MountOrientation, VehicleType

logger = logging.getLogger(__name__)

CONTROL_STEP_S = 0.1
NORMAL_JERK = 2.5
HARSH_JERK = 12.0
SPEED_GAIN = 0.6
# Normal driving never brakes harder than this, even to correct a late reaction.
NORMAL_DECELERATION_LIMIT = 0.24 * GRAVITY_MPS2
NORMAL_ACCELERATION_LIMIT = 0.2 * GRAVITY_MPS2
# Injected events keep this far apart, and this far from the start and end of a trip.
ISOLATION_S = 22.0
TRIP_START_MARGIN_S = 20.0
TRIP_END_MARGIN_S = 45.0
# An event that finds no suitable moment within this long after its slot is dropped.
EVENT_TIMEOUT_S = 180.0
SPEEDING_MARGIN_MPS = 10.0 / 3.6

RISKY_KINDS = ("harsh_braking", "harsh_acceleration", "harsh_cornering", "speeding")
# How hard harsh events are by default (g, drawn uniformly; `SimulationConfig.harsh_peak_g` overrides them).
HARSH_PEAK_G: dict[str, tuple[float, float]] = {
    "harsh_braking": (0.5, 0.7),
    "harsh_acceleration": (0.38, 0.5),
    "harsh_cornering": (0.5, 0.62),
}
CONFOUNDER_KINDS = ("pothole", "speed_bump", "mount_moved")
# The firmest an everyday brake gets over its planned deceleration (the default's 0.24 g limit over 0.19 g).
FIRM_BRAKE_RATIO = NORMAL_DECELERATION_LIMIT / (0.19 * GRAVITY_MPS2)
# A z-score of 1.645 is the 95th percentile of a normal distribution.
_Z95 = 1.6448536269514722


@dataclass(frozen=True)
class EverydayStrength:
    """How hard everyday brakes and pull-aways are, drawn afresh for each manoeuvre (opt-in,
    `SimulationConfig.everyday_braking_g` and `everyday_acceleration_g`).

    Each range is (median, 95th percentile) in g of a log-normal draw. A brake's draw is the deceleration its
    braking curve is planned at (at most 0.36 g and half what the vehicle can), and its firmest correction reaches
    `FIRM_BRAKE_RATIO` times that; a pull-away's is the most it accelerates (at most 0.4 g and 80 % of what the
    vehicle can). Unset, every manoeuvre of a trip keeps the driver's vehicle comfort values (at most 0.19 g
    planned, 0.24 g firmest brake, 0.2 g pull-away). `michi.simulator.everyday_fit` compares both with real
    drives."""

    braking_g: tuple[float, float] | None = None
    acceleration_g: tuple[float, float] | None = None

    def draw(
        self,
        random: np.random.Generator,
        vehicle: VehicleType,
        defaults: tuple[float, float, float],
        winter: bool,
    ) -> tuple[float, float, float]:
        """(planned deceleration, firmest brake, pull-away), m/s², for the next manoeuvre; a value whose range is
        unset keeps the trip's default. On winter roads a drawn brake is x0.7 and a drawn pull-away x0.8, as the
        comfort values are."""
        deceleration, firmest, acceleration = defaults
        if self.braking_g is not None:
            drawn = min(_log_normal(random, self.braking_g), 0.36 * GRAVITY_MPS2, 0.5 * vehicle.max_deceleration)
            deceleration = drawn * (0.7 if winter else 1.0)
            firmest = FIRM_BRAKE_RATIO * deceleration
        if self.acceleration_g is not None:
            drawn = min(_log_normal(random, self.acceleration_g), 0.4 * GRAVITY_MPS2, 0.8 * vehicle.max_acceleration)
            acceleration = drawn * (0.8 if winter else 1.0)
        return deceleration, firmest, acceleration


def _log_normal(random: np.random.Generator, median_and_95th_g: tuple[float, float]) -> float:
    median, high = median_and_95th_g
    spread = math.log(high / median) / _Z95
    return median * math.exp(spread * float(random.standard_normal())) * GRAVITY_MPS2


@dataclass(frozen=True)
class ScheduledEvent:
    time_s: float
    kind: str


@dataclass
class Overlay:
    """A short IMU disturbance the renderer adds on top of the vehicle motion."""

    kind: str
    start_s: float
    duration_s: float
    amplitude: float
    axle_delay_s: float = 0.0
    seed: int = 0
    mount_after: MountOrientation | None = None
    # A swerve's ramp (s) and first side (+1 left, -1 right).
    ramp_s: float = 0.0
    side: float = 1.0


@dataclass
class InjectedEvent:
    """An event as it really happened, in trip-relative seconds."""

    kind: str
    start_s: float
    end_s: float
    peak_magnitude: float
    magnitude_unit: str
    position_s: float
    speed_mps: float
    risky: bool
    detail: dict[str, float] = field(default_factory=dict)


@dataclass
class TripKinematics:
    times_s: NDArray[np.float64]
    positions_s: NDArray[np.float64]
    speeds_mps: NDArray[np.float64]
    # Acceleration held during each step [t, t + step).
    accelerations_mps2: NDArray[np.float64]
    events: list[InjectedEvent]
    overlays: list[Overlay]

    def speed_at(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(times_s, self.times_s, self.speeds_mps)

    def position_at(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(times_s, self.times_s, self.positions_s)

    def acceleration_at(self, times_s: NDArray[np.float64]) -> NDArray[np.float64]:
        # Each step's constant acceleration is centred on the step, so the interpolated curve
        # integrates to the same speed change the 10 Hz integration produced.
        return np.interp(times_s, self.times_s + CONTROL_STEP_S / 2.0, self.accelerations_mps2)


@dataclass
class _Active:
    kind: str
    started_s: float
    hold_end_s: float = 0.0
    command: float = 0.0
    target_speed: float = 0.0
    limit_mps: float = 0.0
    constraint: Constraint | None = None
    releasing: bool = False
    closed_s: float = 0.0
    jerk: float = HARSH_JERK
    swerve: Overlay | None = None


@dataclass
class _Conditions:
    friction: float = 1.0
    slips_per_10min: float = 0.0
    dwell_scale: float = 1.0


def schedule_events(
    random: np.random.Generator,
    duration_s: float,
    risky_rate_per_10min: float,
    confounder_rate_per_10min: float,
    risky_mix: tuple[tuple[str, float], ...],
    confounder_mix: tuple[tuple[str, float], ...],
) -> list[ScheduledEvent]:
    """Slots for injected events: a Poisson process with a minimum gap, inside the trip margins."""
    eligible_s = duration_s - TRIP_START_MARGIN_S - TRIP_END_MARGIN_S
    if eligible_s <= 0:
        return []
    # Slots only fit between the trip margins; scale up so the rate holds per driving time.
    total_rate = (risky_rate_per_10min + confounder_rate_per_10min) / 600.0 * duration_s / eligible_s
    if total_rate <= 0:
        return []
    risky_names = [name for name, _ in risky_mix]
    risky_weights = np.array([weight for _, weight in risky_mix]) / sum(weight for _, weight in risky_mix)
    confounder_names = [name for name, _ in confounder_mix]
    confounder_weights = np.array([weight for _, weight in confounder_mix]) / sum(
        weight for _, weight in confounder_mix
    )
    risky_share = risky_rate_per_10min / (risky_rate_per_10min + confounder_rate_per_10min)
    schedule: list[ScheduledEvent] = []
    time_s = TRIP_START_MARGIN_S + float(random.exponential(1.0 / total_rate)) * 0.5
    while time_s < duration_s - TRIP_END_MARGIN_S:
        if random.uniform() < risky_share:
            kind = risky_names[int(random.choice(len(risky_names), p=risky_weights))]
        else:
            kind = confounder_names[int(random.choice(len(confounder_names), p=confounder_weights))]
        schedule.append(ScheduledEvent(time_s, kind))
        # Slots closer than the isolation gap would only queue up behind each other.
        time_s += ISOLATION_S + 8.0 + float(random.exponential(max(1.0 / total_rate - ISOLATION_S - 8.0, 1.0)))
    return schedule


def simulate_trip(
    *,
    path: Path,
    constraints: list[Constraint],
    start_s: float,
    vehicle: VehicleType,
    style: DriverStyle,
    duration_s: float,
    schedule: list[ScheduledEvent],
    random: np.random.Generator,
    mount: MountOrientation,
    friction: float = 1.0,
    slips_per_10min: float = 0.0,
    harsh_peak_g: dict[str, tuple[float, float]] | None = None,
    harsh_jerk_mps3: tuple[float, float] | None = None,
    swerve_share: float = 0.0,
    everyday: EverydayStrength | None = None,
    everyday_random: np.random.Generator | None = None,
) -> TripKinematics:
    """Drive the path for `duration_s` seconds and return the speed profile and what happened.

    With `everyday` (and its own `everyday_random`, so the trip's stream is drawn as without it), each
    manoeuvre's braking and pull-away strength is drawn afresh whenever the next stop or turn changes."""
    step = CONTROL_STEP_S
    winter = friction < 1.0
    comfort_deceleration = min(vehicle.comfort_deceleration * style.briskness, 0.19 * GRAVITY_MPS2)
    comfort_acceleration = min(vehicle.comfort_acceleration * style.briskness, NORMAL_ACCELERATION_LIMIT)
    if winter:
        comfort_deceleration *= 0.7
        comfort_acceleration *= 0.8
    firmest_brake = NORMAL_DECELERATION_LIMIT
    if everyday is not None and everyday_random is None:
        raise ValueError("everyday strengths need a random stream of their own (everyday_random)")
    trip_strengths = (comfort_deceleration, firmest_brake, comfort_acceleration)
    drawn_for = -1
    count = round(duration_s / step) + 1
    times = np.arange(count, dtype=np.float64) * step
    positions = np.empty(count)
    speeds = np.empty(count)
    accelerations = np.zeros(count)

    position, speed, acceleration = start_s, 0.0, 0.0
    pointer = 0
    dwell_until = float(random.uniform(4.0, 10.0))
    parking = False
    schedule_index = 0
    last_event_end = -math.inf
    active: _Active | None = None
    finished: list[_Active] = []
    overlays: list[Overlay] = []
    current_mount = mount

    for index in range(count):
        now = index * step
        positions[index] = position
        speeds[index] = speed
        while (
            pointer < len(constraints) and constraints[pointer].kind == "turn" and position > constraints[pointer].end_s
        ):
            pointer += 1
        if everyday is not None and everyday_random is not None and pointer != drawn_for:
            drawn_for = pointer
            comfort_deceleration, firmest_brake, comfort_acceleration = everyday.draw(
                everyday_random, vehicle, trip_strengths, winter
            )
        element = path.element_index(position)
        limit = float(path.limit_mps[element])
        in_arc = path.elements[element].curvature != 0.0
        cruise = min(limit * style.cruise_fraction, vehicle.top_speed_mps)
        if not parking and now >= duration_s - (speed / comfort_deceleration + 12.0):
            parking = True
        dwelling = now < dwell_until

        # ---- injected events: start one when its slot has come and the moment suits it
        if (
            active is None
            and schedule_index < len(schedule)
            and now >= schedule[schedule_index].time_s
            and now >= last_event_end + ISOLATION_S
        ):
            slot = schedule[schedule_index]
            if now > slot.time_s + EVENT_TIMEOUT_S or now > duration_s - TRIP_END_MARGIN_S or parking:
                schedule_index += 1
            else:
                next_constraint = constraints[pointer] if pointer < len(constraints) else None
                free_distance = next_constraint.position_s - position if next_constraint else math.inf
                active = _try_start(
                    slot.kind,
                    now=now,
                    speed=speed,
                    cruise=cruise,
                    limit=limit,
                    in_arc=in_arc,
                    dwelling=dwelling,
                    free_distance=free_distance,
                    next_constraint=next_constraint,
                    vehicle=vehicle,
                    friction=friction,
                    comfort_acceleration=comfort_acceleration,
                    comfort_deceleration=comfort_deceleration,
                    random=random,
                    peak_g={**HARSH_PEAK_G, **(harsh_peak_g or {})},
                    harsh_jerk_mps3=harsh_jerk_mps3,
                    swerve_share=swerve_share,
                )
                if active is not None:
                    schedule_index += 1
                    if active.swerve is not None:
                        overlays.append(active.swerve)
                    if active.kind in CONFOUNDER_KINDS:
                        overlay = _confounder_overlay(active.kind, now, speed, vehicle, random, current_mount)
                        if overlay.mount_after is not None:
                            current_mount = overlay.mount_after
                        overlays.append(overlay)
                        active.hold_end_s = now + overlay.duration_s
                        active.command = overlay.amplitude

        if winter and not dwelling and speed > 4.0 and random.uniform() < slips_per_10min / 600.0 * step:
            overlays.append(
                Overlay("slip", now, 1.2, float(random.uniform(0.5, 1.1)), seed=int(random.integers(2**31)))
            )

        # ---- the controller
        jerk = NORMAL_JERK
        if dwelling:
            command = 0.0
            acceleration = 0.0
        else:
            target = 0.0 if parking else cruise
            if active is not None and active.kind == "speeding" and now < active.hold_end_s:
                target = active.target_speed
            feedforward = 0.0
            horizon = speed * speed / (2.0 * comfort_deceleration) + 25.0
            for constraint in constraints[pointer : pointer + 4]:
                distance = constraint.position_s - position
                if constraint.kind == "turn" and distance <= 0.0:
                    target = min(target, constraint.speed_mps)
                    continue
                if distance > horizon:
                    break
                allowed = math.sqrt(constraint.speed_mps**2 + 2.0 * comfort_deceleration * max(distance, 0.0))
                if allowed < target:
                    target = allowed
                    feedforward = -comfort_deceleration if speed > constraint.speed_mps + 0.1 else 0.0
                if constraint.kind == "stop":
                    break
            command = feedforward + SPEED_GAIN * (target - speed)
            command = min(max(command, -firmest_brake), comfort_acceleration)

            if active is not None:
                command, jerk = _event_command(active, now, speed, cruise, acceleration, command, jerk)

            change = command - acceleration
            acceleration += min(max(change, -jerk * step), jerk * step)

        # ---- arrival at a stop line
        if pointer < len(constraints) and constraints[pointer].kind == "stop" and not dwelling:
            stop = constraints[pointer]
            if stop.position_s - position < 3.0 and speed <= 0.0 and acceleration <= 0.0:
                acceleration = 0.0
                dwell_until = now + stop.dwell_s
                pointer += 1

        # ---- integrate
        new_speed = speed + acceleration * step
        if new_speed < 0.0:
            acceleration = -speed / step
            new_speed = 0.0
        accelerations[index] = acceleration
        position += speed * step + 0.5 * acceleration * step * step
        speed = new_speed

        # ---- close finished events
        if active is not None and _event_done(active, now, position, speed, acceleration, comfort_deceleration):
            active.closed_s = now
            finished.append(active)
            last_event_end = now
            active = None

    kinematics = TripKinematics(times, positions, speeds, accelerations, [], overlays)
    kinematics.events = [
        event for event in (_measure(done, kinematics, path) for done in finished) if event is not None
    ]
    return kinematics


def _try_start(
    kind: str,
    *,
    now: float,
    speed: float,
    cruise: float,
    limit: float,
    in_arc: bool,
    dwelling: bool,
    free_distance: float,
    next_constraint: Constraint | None,
    vehicle: VehicleType,
    friction: float,
    comfort_acceleration: float,
    comfort_deceleration: float,
    random: np.random.Generator,
    peak_g: dict[str, tuple[float, float]] | None = None,
    harsh_jerk_mps3: tuple[float, float] | None = None,
    swerve_share: float = 0.0,
) -> _Active | None:
    peaks = peak_g or HARSH_PEAK_G
    if kind == "mount_moved":
        return _Active(kind, now)
    if dwelling or in_arc:
        return None
    if kind == "harsh_braking":
        deceleration = min(
            float(random.uniform(*peaks[kind])) * GRAVITY_MPS2, vehicle.max_deceleration, 0.95 * friction * GRAVITY_MPS2
        )
        # Drawn only when asked for, so the default fleet's random stream is the one it always was.
        jerk = float(random.uniform(*harsh_jerk_mps3)) if harsh_jerk_mps3 is not None else HARSH_JERK
        hold = min(float(random.uniform(0.7, 1.6)), (speed - 2.0) / deceleration - deceleration / jerk)
        if speed < 7.0 or hold < 0.5 or free_distance < 3.0 * speed:
            return None
        return _Active(kind, now, hold_end_s=now + deceleration / jerk + hold, command=-deceleration, jerk=jerk)
    if kind == "harsh_acceleration":
        push = min(
            float(random.uniform(*peaks[kind])) * GRAVITY_MPS2, vehicle.max_acceleration, 0.9 * friction * GRAVITY_MPS2
        )
        jerk = float(random.uniform(*harsh_jerk_mps3)) if harsh_jerk_mps3 is not None else HARSH_JERK
        hold = min(float(random.uniform(1.2, 2.5)), (cruise - speed) / push - 0.3)
        if speed > 0.5 * cruise or hold < 1.0 or free_distance < 80.0:
            return None
        return _Active(kind, now, hold_end_s=now + push / jerk + hold, command=push, jerk=jerk)
    # Drawn only when asked for, so the default fleet's random stream is the one it always was.
    if kind == "harsh_cornering" and swerve_share > 0.0 and float(random.uniform()) < swerve_share:
        return _start_swerve(now, speed, free_distance, friction, peaks[kind], harsh_jerk_mps3, random)
    if kind == "harsh_cornering":
        if next_constraint is None or next_constraint.kind != "turn" or next_constraint.after_stop:
            return None
        # As hard as drawn, unless the approach speed only allows a little less (never under the range's lowest).
        lowest, highest = peaks[kind]
        reachable = (min(speed, cruise) - 0.3) ** 2 / next_constraint.radius_m
        lateral = min(float(random.uniform(lowest, highest)) * GRAVITY_MPS2, 0.95 * friction * GRAVITY_MPS2, reachable)
        corner_speed = math.sqrt(lateral * next_constraint.radius_m)
        if lateral < min(lowest, 0.95 * friction) * GRAVITY_MPS2 - 1e-9 or not 30.0 <= free_distance <= 400.0:
            return None
        next_constraint.speed_mps = corner_speed
        return _Active(kind, now, constraint=next_constraint, command=lateral)
    if kind == "speeding":
        over = float(random.uniform(15.0, 30.0)) / 3.6
        target = min(limit + over, vehicle.top_speed_mps - 0.5)
        if target < limit + SPEEDING_MARGIN_MPS + 4.0 / 3.6 or speed < 0.7 * cruise:
            return None
        climb_time = (target - speed) / (0.7 * comfort_acceleration)
        climb_distance = (target * target - speed * speed) / (2.0 * 0.7 * comfort_acceleration)
        braking_distance = target * target / (2.0 * comfort_deceleration)
        hold = min(
            float(random.uniform(8.0, 20.0)), (free_distance - climb_distance - braking_distance - 30.0) / target
        )
        if hold < 7.0:
            return None
        return _Active(kind, now, hold_end_s=now + climb_time + hold, target_speed=target, limit_mps=limit)
    if kind == "pothole":
        return _Active(kind, now) if speed >= 5.0 else None
    if kind == "speed_bump":
        return _Active(kind, now) if 3.0 <= speed <= 15.0 else None
    raise ValueError(f"unknown event kind {kind!r}")


def _start_swerve(
    now: float,
    speed: float,
    free_distance: float,
    friction: float,
    peak_g: tuple[float, float],
    harsh_jerk_mps3: tuple[float, float] | None,
    random: np.random.Generator,
) -> _Active | None:
    """An evasive swerve into the next lane on a straight: lateral one way, then the other."""
    lateral = min(float(random.uniform(*peak_g)) * GRAVITY_MPS2, 0.95 * friction * GRAVITY_MPS2)
    jerk = float(random.uniform(*harsh_jerk_mps3)) if harsh_jerk_mps3 is not None else HARSH_JERK
    ramp = lateral / jerk
    hold = float(random.uniform(0.3, 1.0))
    side = 1.0 if random.uniform() < 0.5 else -1.0
    duration = 2.0 * (2.0 * ramp + hold)
    if speed < 8.0 or free_distance < speed * (duration + 2.0):
        return None
    overlay = Overlay("swerve", now, duration, lateral, seed=int(random.integers(2**31)), ramp_s=ramp, side=side)
    return _Active("harsh_cornering", now, hold_end_s=now + duration, command=lateral, swerve=overlay)


def _event_command(
    active: _Active, now: float, speed: float, cruise: float, acceleration: float, command: float, jerk: float
) -> tuple[float, float]:
    if active.kind == "harsh_braking":
        if now < active.hold_end_s and speed > 1.5:
            return active.command, active.jerk
        active.releasing = True
        return command, active.jerk
    if active.kind == "harsh_acceleration":
        if now < active.hold_end_s and speed < cruise - 1.0:
            return active.command, active.jerk
        active.releasing = True
        return command, active.jerk
    return command, jerk


def _event_done(
    active: _Active, now: float, position: float, speed: float, acceleration: float, comfort_deceleration: float
) -> bool:
    if active.kind == "harsh_braking":
        return active.releasing and acceleration >= -0.2 * GRAVITY_MPS2
    if active.kind == "harsh_acceleration":
        return active.releasing and acceleration <= 0.2 * GRAVITY_MPS2
    if active.kind == "harsh_cornering" and active.swerve is not None:
        return now >= active.hold_end_s
    if active.kind == "harsh_cornering":
        return active.constraint is not None and position > active.constraint.end_s
    if active.kind == "speeding":
        return now >= active.hold_end_s and speed < active.limit_mps + SPEEDING_MARGIN_MPS - 1.0
    return now >= active.hold_end_s


def _confounder_overlay(
    kind: str,
    now: float,
    speed: float,
    vehicle: VehicleType,
    random: np.random.Generator,
    mount: MountOrientation,
) -> Overlay:
    seed = int(random.integers(2**31))
    if kind == "pothole":
        delay = vehicle.wheelbase_m / max(speed, 1.0)
        amplitude = float(random.uniform(5.0, 11.0)) * vehicle.suspension_harshness
        return Overlay(kind, now, delay + 0.5, amplitude, axle_delay_s=delay, seed=seed)
    if kind == "speed_bump":
        delay = vehicle.wheelbase_m / max(speed, 1.0)
        amplitude = float(random.uniform(2.5, 5.5)) * vehicle.suspension_harshness
        return Overlay(kind, now, delay + 1.2, amplitude, axle_delay_s=delay, seed=seed)
    duration = float(random.uniform(0.6, 1.5))
    return Overlay(kind, now, duration, float(random.uniform(2.0, 4.5)), seed=seed, mount_after=mount.moved(random))


def _measure(active: _Active, kinematics: TripKinematics, path: Path) -> InjectedEvent | None:
    """What the event really looked like in the arrays the sensors are rendered from."""
    times, speeds, accelerations = kinematics.times_s, kinematics.speeds_mps, kinematics.accelerations_mps2
    step = CONTROL_STEP_S
    first = round(active.started_s / step)
    closed = round(active.closed_s / step)
    position = float(kinematics.positions_s[first])
    speed = float(speeds[first])
    threshold = {"harsh_braking": 0.45, "harsh_acceleration": 0.35, "harsh_cornering": 0.45}.get(active.kind, 0.0)
    if active.kind in ("harsh_braking", "harsh_acceleration"):
        sign = -1.0 if active.kind == "harsh_braking" else 1.0
        window = sign * accelerations[first : closed + 1]
        return InjectedEvent(
            kind=active.kind,
            start_s=float(times[first]),
            end_s=float(times[closed]) + step,
            peak_magnitude=float(window.max()),
            magnitude_unit="m/s^2",
            position_s=position,
            speed_mps=speed,
            risky=True,
            detail={
                "peak_g": float(window.max()) / GRAVITY_MPS2,
                "seconds_over_threshold": float(np.count_nonzero(window >= threshold * GRAVITY_MPS2)) * step,
                "speed_change_mps": float(speeds[min(closed + 1, len(speeds) - 1)] - speed),
            },
        )
    if active.kind == "harsh_cornering" and active.swerve is not None:
        return InjectedEvent(
            kind=active.kind,
            start_s=active.started_s,
            end_s=active.hold_end_s,
            peak_magnitude=active.command,
            magnitude_unit="m/s^2",
            position_s=position,
            speed_mps=speed,
            risky=True,
            detail={"peak_g": active.command / GRAVITY_MPS2, "swerve": 1.0, "ramp_s": active.swerve.ramp_s},
        )
    if active.kind == "harsh_cornering":
        constraint = active.constraint
        assert constraint is not None
        entry = int(np.searchsorted(kinematics.positions_s, constraint.position_s))
        leave = int(np.searchsorted(kinematics.positions_s, constraint.end_s))
        if leave <= entry:
            return None
        lateral = speeds[entry:leave] ** 2 / constraint.radius_m
        return InjectedEvent(
            kind=active.kind,
            start_s=float(times[entry]),
            end_s=float(times[leave]),
            peak_magnitude=float(lateral.max()),
            magnitude_unit="m/s^2",
            position_s=float(kinematics.positions_s[entry]),
            speed_mps=float(speeds[entry]),
            risky=True,
            detail={
                "peak_g": float(lateral.max()) / GRAVITY_MPS2,
                "seconds_over_threshold": float(np.count_nonzero(lateral >= threshold * GRAVITY_MPS2)) * step,
                "radius_m": constraint.radius_m,
                "turn_direction": 1.0 if path.curvature[path.element_index(constraint.position_s + 0.1)] > 0 else -1.0,
            },
        )
    if active.kind == "speeding":
        over = speeds[first : closed + 1] - active.limit_mps
        above = np.flatnonzero(over > SPEEDING_MARGIN_MPS)
        if above.size == 0:
            return None
        begin, end = first + int(above[0]), first + int(above[-1])
        seconds_over = float(above.size) * step
        return InjectedEvent(
            kind=active.kind,
            start_s=float(times[begin]),
            end_s=float(times[end]),
            peak_magnitude=float(over.max()) * 3.6,
            magnitude_unit="km/h over limit",
            position_s=float(kinematics.positions_s[begin]),
            speed_mps=float(speeds[begin]),
            risky=seconds_over >= 5.0,
            detail={
                "limit_kmh": active.limit_mps * 3.6,
                "peak_speed_kmh": float(speeds[first : closed + 1].max()) * 3.6,
                "seconds_over_threshold": seconds_over,
            },
        )
    return InjectedEvent(
        kind=active.kind,
        start_s=active.started_s,
        end_s=active.hold_end_s,
        peak_magnitude=active.command,
        magnitude_unit="m/s^2",
        position_s=position,
        speed_mps=speed,
        risky=False,
        detail={},
    )
