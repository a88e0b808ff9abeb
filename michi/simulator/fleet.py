"""The fleet simulator: devices driving trips on the road map and streaming `Upload`s.

    from michi.roads import RoadMap
    from michi.simulator import FleetSimulator, SimulationConfig

    simulator = FleetSimulator(SimulationConfig(devices=20, duration_s=600, seed=7), road_map=RoadMap.default())
    for upload in simulator.uploads():  # time-ordered across devices
        ...
    simulator.write_ground_truth("truth.jsonl")

Each device simulates one trip at a time (its 10 Hz motion and 1 Hz GPS) and renders IMU per
upload slice, so memory stays bounded by one trip per device. Every random draw comes from a
generator seeded with (seed, purpose, device, trip, slice): the same configuration gives
byte-identical uploads and ground truth. Each device's hardware (holder, sensor range, clock, GPS
receiver; `michi.simulator.hardware`) is drawn from a stream of its own, so the fleet's vehicles,
drivers and trips do not depend on how widely hardware is randomised.
"""

from __future__ import annotations

import heapq
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path as FilePath

import numpy as np

from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, upload_pb2
from michi.roads import RoadMap
from michi.simulator.config import SimulationConfig
from michi.simulator.hardware import DeviceHardware
from michi.simulator.kinematics import (
    CONFOUNDER_KINDS,
    EverydayStrength,
    InjectedEvent,
    TripKinematics,
    schedule_events,
    simulate_trip,
)
from michi.simulator.path import Path, plan_route
from michi.simulator.road import RoadSurface
from michi.simulator.scenarios import BASE_FIRMWARE_VERSION, Scenario, resolve_scenario
from michi.simulator.signals import GpsTrack, SensorModel, render_gps, render_imu
from michi.simulator.truth import EVENT_TYPE_BY_KIND, GroundTruthEvent, TripTruth, write_ground_truth_lines
from michi.simulator.vehicles import (
    DEFAULT_VEHICLE_MIX,
    GRAVITY_MPS2,
    VEHICLE_TYPES,
    DeviceProfile,
    DriverStyle,
    MountOrientation,
)

logger = logging.getLogger(__name__)

# Purposes that keep the random streams of one device independent of each other.
_PROFILE_STREAM, _TRIP_STREAM, _SLICE_STREAM, _TIMELINE_STREAM = 1, 2, 3, 4
_HARDWARE_STREAM, _GPS_STREAM, _ROAD_STREAM = 5, 6, 7
# Opt-in driving habits (`ordinary_turn_lateral_g`, `turn_in_s`): a stream of their own, so the default fleet's
# other draws never move.
_HABIT_STREAM = 8
# Opt-in everyday strengths (`everyday_braking_g`, `everyday_acceleration_g`): drawn per manoeuvre from a stream of
# their own per trip, for the same reason.
_EVERYDAY_STREAM = 9
MINIMUM_TRIP_SECONDS = 60.0


@dataclass(frozen=True)
class TripSetup:
    """What applies to one trip once the scenario is resolved."""

    vehicle_type: str
    sample_rate_hz: float
    firmware_version: str
    accelerometer_scale: float
    friction: float
    vibration_scale: float
    slips_per_10min: float
    scenario: str | None


class FleetSimulator:
    def __init__(self, config: SimulationConfig, road_map: RoadMap | None = None) -> None:
        self.config = config
        self.road_map = road_map if road_map is not None else RoadMap.default()
        self.scenario: Scenario | None = resolve_scenario(config.scenario)
        self._affected: dict[int, bool] = {}
        self._scenario_vehicle: dict[int, str] = {}
        self._base: dict[int, DeviceProfile] = {}
        self.hardware: dict[int, DeviceHardware] = {}
        self._turn_in_s: dict[int, float] = {}
        self.devices: list[DeviceProfile] = [self._make_device(index) for index in range(config.devices)]
        self.ground_truth: list[GroundTruthEvent] = []
        self.trips: list[TripTruth] = []

    # ------------------------------------------------------------------ public

    def uploads(self) -> Iterator[upload_pb2.Upload]:
        """Every upload of the run, ordered by `started_at` (ties by device), generated lazily."""
        self.ground_truth = []
        self.trips = []
        streams = [self._device_uploads(profile) for profile in self.devices]
        for _, _, upload in heapq.merge(*streams, key=lambda item: (item[0], item[1])):
            yield upload
        self.ground_truth.sort(key=lambda event: (event.started_at, event.device_id))
        self.trips.sort(key=lambda trip: (trip.started_at, trip.device_id))

    def run(self) -> list[upload_pb2.Upload]:
        """All uploads in a list (small runs and tests)."""
        return list(self.uploads())

    def write_ground_truth(self, path: str | FilePath) -> None:
        write_ground_truth_lines(path, self.trips, self.ground_truth)

    # ------------------------------------------------------------------ devices

    def _make_device(self, index: int) -> DeviceProfile:
        config = self.config
        random = np.random.default_rng([config.seed, _PROFILE_STREAM, index])
        hardware = config.randomization.draw(
            np.random.default_rng([config.seed, _HARDWARE_STREAM, index]), config.sample_rate_range_hz
        )
        self.hardware[index] = hardware
        base_type = _draw_vehicle(random, DEFAULT_VEHICLE_MIX)
        scenario_mix = self.scenario.vehicle_mix if self.scenario and self.scenario.vehicle_mix else None
        # Drawn whatever the scenario, so a scenario run shares its base fleet with a healthy run.
        self._scenario_vehicle[index] = _draw_vehicle(random, scenario_mix or DEFAULT_VEHICLE_MIX)
        mount = MountOrientation.draw(random)
        style = DriverStyle.draw(random)
        habits = np.random.default_rng([config.seed, _HABIT_STREAM, index])
        if config.ordinary_turn_lateral_g is not None:
            style = replace(style, turn_lateral=float(habits.uniform(*config.ordinary_turn_lateral_g)) * GRAVITY_MPS2)
        self._turn_in_s[index] = float(habits.uniform(*config.turn_in_s)) if config.turn_in_s is not None else 0.0
        accelerometer_bias = tuple(float(value) for value in random.normal(0.0, 0.04, 3))
        gyroscope_bias = tuple(float(value) for value in random.normal(0.0, 0.003, 3))
        affected_draw = float(random.uniform())
        self._affected[index] = self.scenario is not None and affected_draw < self.scenario.device_fraction
        base = DeviceProfile(
            device_id=f"sim-{config.seed}-{index:04d}",
            driver_id=f"driver-{config.seed}-{index:04d}",
            vehicle_type=base_type,
            mount=mount,
            sample_rate_hz=hardware.sample_rate_hz or config.sample_rate_hz,
            firmware_version=BASE_FIRMWARE_VERSION,
            driver_style=style,
            accelerometer_bias=(accelerometer_bias[0], accelerometer_bias[1], accelerometer_bias[2]),
            gyroscope_bias=(gyroscope_bias[0], gyroscope_bias[1], gyroscope_bias[2]),
            index=index,
        )
        self._base[index] = base
        setup = self._trip_setup(base, config.start_time)
        return DeviceProfile(
            device_id=base.device_id,
            driver_id=base.driver_id,
            vehicle_type=setup.vehicle_type,
            mount=mount,
            sample_rate_hz=setup.sample_rate_hz,
            firmware_version=setup.firmware_version,
            driver_style=style,
            accelerometer_bias=base.accelerometer_bias,
            gyroscope_bias=base.gyroscope_bias,
            index=index,
        )

    def _trip_setup(self, profile: DeviceProfile, trip_start: float) -> TripSetup:
        scenario = self.scenario
        active = (
            scenario is not None
            and self._affected[profile.index]
            and trip_start - self.config.start_time >= scenario.start_offset_s
        )
        base = self._base[profile.index]
        if not active or scenario is None:
            return TripSetup(
                vehicle_type=base.vehicle_type,
                sample_rate_hz=base.sample_rate_hz,
                firmware_version=base.firmware_version,
                accelerometer_scale=1.0,
                friction=1.0,
                vibration_scale=1.0,
                slips_per_10min=0.0,
                scenario=None,
            )
        return TripSetup(
            vehicle_type=self._scenario_vehicle[profile.index] if scenario.vehicle_mix else base.vehicle_type,
            sample_rate_hz=scenario.sample_rate_hz or base.sample_rate_hz,
            firmware_version=scenario.firmware_version or base.firmware_version,
            accelerometer_scale=scenario.accelerometer_scale,
            friction=scenario.friction,
            vibration_scale=scenario.vibration_scale,
            slips_per_10min=scenario.slips_per_10min,
            scenario=scenario.name,
        )

    # ------------------------------------------------------------------ one device

    def _device_uploads(self, profile: DeviceProfile) -> Iterator[tuple[float, int, upload_pb2.Upload]]:
        config = self.config
        timeline = np.random.default_rng([config.seed, _TIMELINE_STREAM, profile.index])
        clock = config.start_time + float(timeline.uniform(0.0, config.upload_seconds))
        end = config.start_time + config.duration_s
        mount = profile.mount
        trip_index = 0
        while end - clock >= MINIMUM_TRIP_SECONDS:
            random = np.random.default_rng([config.seed, _TRIP_STREAM, profile.index, trip_index])
            lengths = config.trip_seconds
            if trip_index == 0 and config.first_trip_seconds is not None:
                lengths = config.first_trip_seconds
            # One draw either way, so the rest of the trip's stream is drawn as without a short first trip.
            duration = float(math.floor(min(float(random.uniform(*lengths)), end - clock)))
            setup = self._trip_setup(profile, clock)
            trip = self._simulate_trip(profile, setup, trip_index, clock, duration, mount, random)
            mount = trip.sensor.mounts[-1][1]
            for sequence in range(trip.slice_count):
                upload = self._render_upload(trip, sequence)
                yield clock + sequence * config.upload_seconds, profile.index, upload
            clock += duration + float(timeline.uniform(*config.park_seconds))
            trip_index += 1

    def _simulate_trip(
        self,
        profile: DeviceProfile,
        setup: TripSetup,
        trip_index: int,
        started_at: float,
        duration: float,
        mount: MountOrientation,
        random: np.random.Generator,
    ) -> _Trip:
        config = self.config
        vehicle = VEHICLE_TYPES[setup.vehicle_type]
        reach = min(vehicle.top_speed_mps, 36.0) * duration + 600.0
        path, constraints, start_s = plan_route(
            self.road_map, random, reach, profile.driver_style, dwell_scale=1.5 if setup.friction < 1.0 else 1.0
        )
        everyday = (
            EverydayStrength(config.everyday_braking_g, config.everyday_acceleration_g)
            if config.everyday_braking_g is not None or config.everyday_acceleration_g is not None
            else None
        )
        schedule = schedule_events(
            random,
            duration,
            config.event_rate_per_10min,
            config.confounder_rate_per_10min,
            config.risky_mix,
            config.confounder_mix,
        )
        kinematics = simulate_trip(
            path=path,
            constraints=constraints,
            start_s=start_s,
            vehicle=vehicle,
            style=profile.driver_style,
            duration_s=duration,
            schedule=schedule,
            random=random,
            mount=mount,
            friction=setup.friction,
            slips_per_10min=setup.slips_per_10min,
            harsh_peak_g={kind: (lowest, highest) for kind, lowest, highest in config.harsh_peak_g},
            harsh_jerk_mps3=config.harsh_jerk_mps3,
            swerve_share=config.swerve_share,
            everyday=everyday,
            everyday_random=(
                np.random.default_rng([config.seed, _EVERYDAY_STREAM, profile.index, trip_index])
                if everyday is not None
                else None
            ),
        )
        mounts: list[tuple[float, MountOrientation]] = [(0.0, mount)]
        for overlay in kinematics.overlays:
            if overlay.mount_after is not None:
                mounts.append((overlay.start_s + overlay.duration_s / 2.0, overlay.mount_after))
        sensor = SensorModel(
            vehicle=vehicle,
            sample_rate_hz=setup.sample_rate_hz,
            accelerometer_scale=setup.accelerometer_scale,
            vibration_scale=setup.vibration_scale,
            accelerometer_bias=np.array(profile.accelerometer_bias),
            gyroscope_bias=np.array(profile.gyroscope_bias),
            mounts=mounts,
            hardware=self.hardware[profile.index],
            road=RoadSurface.draw(
                np.random.default_rng([config.seed, _ROAD_STREAM, profile.index, trip_index]),
                start_m=float(kinematics.positions_s[0]),
                length_m=float(kinematics.positions_s[-1] - kinematics.positions_s[0]) + 100.0,
                grade_std=self.hardware[profile.index].road_grade,
            ),
            fitted=config.sensor_model == "fitted",
            turn_in_s=self._turn_in_s[profile.index],
        )
        if sensor.fitted:
            hardware = sensor.hardware
            gps = render_gps(
                path,
                kinematics,
                self.road_map.projection,
                duration,
                random,
                lag_s=hardware.gps_lag_s,
                dropouts_per_10min=hardware.gps_dropouts_per_10min,
                dropout_random=np.random.default_rng([config.seed, _GPS_STREAM, profile.index, trip_index]),
            )
        else:
            gps = render_gps(path, kinematics, self.road_map.projection, duration, random)
        trip_id = stable_event_id("simulated-trip", config.seed, config.start_time, profile.device_id, trip_index)
        slice_count = max(1, math.ceil(duration / config.upload_seconds - 1e-9))
        upload_ids = [stable_event_id("simulated-upload", trip_id, sequence) for sequence in range(slice_count)]
        trip = _Trip(
            profile=profile,
            setup=setup,
            trip_id=trip_id,
            trip_index=trip_index,
            started_at=started_at,
            duration_s=duration,
            path=path,
            kinematics=kinematics,
            sensor=sensor,
            gps=gps,
            upload_ids=upload_ids,
        )
        self._record_truth(trip)
        return trip

    def _record_truth(self, trip: _Trip) -> None:
        kinematics = trip.kinematics
        events = kinematics.events
        for index, event in enumerate(events):
            self.ground_truth.append(self._ground_truth_event(trip, index, event))
        distance = float(kinematics.positions_s[-1] - kinematics.positions_s[0])
        self.trips.append(
            TripTruth(
                trip_id=trip.trip_id,
                device_id=trip.profile.device_id,
                driver_id=trip.profile.driver_id,
                vehicle_type=trip.setup.vehicle_type,
                firmware_version=trip.setup.firmware_version,
                sample_rate_hz=trip.setup.sample_rate_hz,
                started_at=trip.started_at,
                ended_at=trip.started_at + trip.duration_s,
                duration_s=trip.duration_s,
                distance_km=distance / 1000.0,
                upload_count=trip.slice_count,
                scenario=trip.setup.scenario,
                risky_event_count=sum(1 for event in events if event.risky),
                confounder_count=sum(1 for event in events if event.kind in CONFOUNDER_KINDS),
            )
        )
        logger.debug("simulated trip %s of %s (%d events)", trip.trip_id, trip.profile.device_id, len(events))

    def _ground_truth_event(self, trip: _Trip, index: int, event: InjectedEvent) -> GroundTruthEvent:
        upload_seconds = self.config.upload_seconds
        first = int(event.start_s // upload_seconds)
        last = min(int(event.end_s // upload_seconds), trip.slice_count - 1)
        east, north, _, _ = trip.path.sample(np.array([event.position_s]))
        latitude, longitude = self.road_map.projection.to_geographic(float(east[0]), float(north[0]))
        detail = dict(event.detail)
        if event.kind == "mount_moved":
            overlay = next(
                overlay
                for overlay in trip.kinematics.overlays
                if overlay.kind == "mount_moved" and overlay.start_s == event.start_s
            )
            previous = next(mount for since, mount in reversed(trip.sensor.mounts) if since < event.start_s)
            assert overlay.mount_after is not None
            detail["yaw_change_deg"] = (overlay.mount_after.yaw_deg - previous.yaw_deg + 180.0) % 360.0 - 180.0
            detail["new_yaw_deg"] = overlay.mount_after.yaw_deg
            detail["new_pitch_deg"] = overlay.mount_after.pitch_deg
            detail["new_roll_deg"] = overlay.mount_after.roll_deg
        return GroundTruthEvent(
            event_id=stable_event_id("simulated-event", trip.trip_id, index),
            kind=event.kind,
            risky=event.risky,
            event_type=common_pb2.EventType.Name(EVENT_TYPE_BY_KIND[event.kind]),  # type: ignore[arg-type]
            device_id=trip.profile.device_id,
            driver_id=trip.profile.driver_id,
            trip_id=trip.trip_id,
            vehicle_type=trip.setup.vehicle_type,
            upload_ids=tuple(trip.upload_ids[first : last + 1]),
            started_at=trip.started_at + event.start_s,
            ended_at=trip.started_at + event.end_s,
            latitude=latitude,
            longitude=longitude,
            peak_magnitude=event.peak_magnitude,
            magnitude_unit=event.magnitude_unit,
            speed_mps=event.speed_mps,
            detail=detail,
        )

    # ------------------------------------------------------------------ rendering

    def _render_upload(self, trip: _Trip, sequence: int) -> upload_pb2.Upload:
        config = self.config
        slice_start = sequence * config.upload_seconds
        slice_end = min(slice_start + config.upload_seconds, trip.duration_s)
        random = np.random.default_rng([config.seed, _SLICE_STREAM, trip.profile.index, trip.trip_index, sequence])
        imu = render_imu(trip.path, trip.kinematics, trip.sensor, slice_start, slice_end, random)
        rate = trip.setup.sample_rate_hz
        upload = upload_pb2.Upload(
            upload_id=trip.upload_ids[sequence],
            device_id=trip.profile.device_id,
            driver_id=trip.profile.driver_id,
            trip_id=trip.trip_id,
            sequence=sequence,
            trip_end=sequence == trip.slice_count - 1,
            firmware_version=trip.setup.firmware_version,
            sample_rate_hz=round(rate),
            started_at=timestamp_from_seconds(trip.started_at + slice_start),
            vehicle_type=trip.setup.vehicle_type,
        )
        if rate != round(rate):
            upload.sample_rate_exact_hz = rate
        accelerometer = imu.accelerometer.astype(np.float32)
        gyroscope = imu.gyroscope.astype(np.float32)
        if imu.microseconds:
            upload.imu.offset_us.extend(imu.offset_us.tolist())
        # Beside offset_us too, for readers that know only milliseconds (ingest allows them 1 ms apart).
        upload.imu.offset_ms.extend((imu.offset_us // 1000).tolist())
        upload.imu.accel_x.extend(accelerometer[:, 0].tolist())
        upload.imu.accel_y.extend(accelerometer[:, 1].tolist())
        upload.imu.accel_z.extend(accelerometer[:, 2].tolist())
        upload.imu.gyro_x.extend(gyroscope[:, 0].tolist())
        upload.imu.gyro_y.extend(gyroscope[:, 1].tolist())
        upload.imu.gyro_z.extend(gyroscope[:, 2].tolist())
        gps = trip.gps
        lower = int(np.searchsorted(gps.times_s, slice_start - 1e-9))
        upper = int(np.searchsorted(gps.times_s, slice_end - 1e-9))
        for index in range(lower, upper):
            if not gps.present[index]:
                continue
            upload.gps.add(
                offset_ms=round((gps.times_s[index] - slice_start) * 1000.0),
                latitude=float(gps.latitude[index]),
                longitude=float(gps.longitude[index]),
                speed_mps=float(gps.speed_mps[index]),
                heading_deg=float(gps.heading_deg[index]),
                hdop=float(gps.hdop[index]),
            )
        return upload


@dataclass
class _Trip:
    profile: DeviceProfile
    setup: TripSetup
    trip_id: str
    trip_index: int
    started_at: float
    duration_s: float
    path: Path
    kinematics: TripKinematics
    sensor: SensorModel
    gps: GpsTrack
    upload_ids: list[str]

    @property
    def slice_count(self) -> int:
        return len(self.upload_ids)


def _draw_vehicle(random: np.random.Generator, mix: dict[str, float]) -> str:
    names = sorted(mix)
    weights = np.array([mix[name] for name in names])
    return names[int(random.choice(len(names), p=weights / weights.sum()))]
