"""Vehicle types, driver styles, device profiles and how a dashcam sits in its mount.

Frames. Vehicle frame: x forward, y left, z up (ISO 8855). The accelerometer measures specific
force, so a vehicle at rest reads (0, 0, +9.81); braking reads negative x; a left turn reads
positive y and a positive z yaw rate. Device frame: `device = mount_rotation @ vehicle`, where
the mount is a random yaw of any angle followed by a tilt (pitch and roll) of a few degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

GRAVITY_MPS2 = 9.80665


@dataclass(frozen=True)
class VehicleType:
    """What a kind of vehicle can do. Accelerations in m/s²; comfort values bound normal driving."""

    name: str
    mass_kg: float
    comfort_acceleration: float
    comfort_deceleration: float
    max_acceleration: float
    max_deceleration: float
    top_speed_mps: float
    wheelbase_m: float
    # Relative amplitude of road vibration and bump response (stiffer, heavier: larger).
    suspension_harshness: float
    # Natural frequency of the body bouncing on its suspension, in Hz.
    suspension_frequency_hz: float


VEHICLE_TYPES: dict[str, VehicleType] = {
    vehicle.name: vehicle
    for vehicle in (
        VehicleType("compact", 1_100.0, 1.75, 1.85, 5.5, 8.5, 45.0, 2.45, 1.1, 1.6),
        VehicleType("sedan", 1_500.0, 1.75, 1.85, 5.5, 8.8, 50.0, 2.75, 0.9, 1.3),
        VehicleType("van", 2_300.0, 1.5, 1.7, 4.8, 8.0, 42.0, 3.2, 1.2, 1.5),
        VehicleType("truck", 12_000.0, 1.1, 1.5, 4.2, 7.0, 25.0, 5.5, 1.6, 2.0),
        VehicleType("bus", 11_500.0, 1.05, 1.4, 4.2, 7.0, 25.0, 6.0, 1.4, 1.7),
    )
}
DEFAULT_VEHICLE_MIX: dict[str, float] = {"compact": 0.2, "sedan": 0.4, "van": 0.25, "truck": 0.1, "bus": 0.05}


@dataclass(frozen=True)
class DriverStyle:
    """How a driver drives when nothing is wrong; every value keeps normal driving under 0.25 g."""

    # Fraction of the posted limit held on a free road.
    cruise_fraction: float
    # Scales the vehicle's comfort acceleration and deceleration.
    briskness: float
    # Lateral acceleration the driver aims for in a turn, in m/s².
    turn_lateral: float

    @classmethod
    def draw(cls, random: np.random.Generator) -> DriverStyle:
        aggression = float(random.uniform(0.0, 1.0))
        return cls(
            cruise_fraction=0.88 + 0.1 * aggression,
            briskness=0.85 + 0.25 * aggression,
            turn_lateral=(0.12 + 0.05 * aggression) * GRAVITY_MPS2,
        )


def mount_rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> NDArray[np.float64]:
    """The matrix taking a vehicle-frame vector to device axes.

    The device frame is the vehicle frame turned by yaw about z, then pitch about the new y,
    then roll about the new x; device coordinates are the transpose of that rotation.
    """
    yaw, pitch, roll = math.radians(yaw_deg), math.radians(pitch_deg), math.radians(roll_deg)
    about_z = np.array([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0.0, 0.0, 1.0]])
    about_y = np.array(
        [[math.cos(pitch), 0.0, math.sin(pitch)], [0.0, 1.0, 0.0], [-math.sin(pitch), 0.0, math.cos(pitch)]]
    )
    about_x = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(roll), -math.sin(roll)], [0.0, math.sin(roll), math.cos(roll)]])
    device_axes_in_vehicle = about_z @ about_y @ about_x
    return np.asarray(device_axes_in_vehicle.T, dtype=np.float64)


@dataclass(frozen=True)
class MountOrientation:
    yaw_deg: float
    pitch_deg: float
    roll_deg: float

    @property
    def rotation(self) -> NDArray[np.float64]:
        return mount_rotation(self.yaw_deg, self.pitch_deg, self.roll_deg)

    @property
    def tilt_deg(self) -> float:
        """Angle between the device z axis and vertical."""
        return math.degrees(math.acos(max(-1.0, min(1.0, float(self.rotation[2, 2])))))

    @classmethod
    def draw(cls, random: np.random.Generator) -> MountOrientation:
        tilt = float(random.uniform(3.0, 20.0))
        direction = float(random.uniform(0.0, 2.0 * math.pi))
        return cls(
            yaw_deg=float(random.uniform(0.0, 360.0)),
            pitch_deg=tilt * math.cos(direction),
            roll_deg=tilt * math.sin(direction),
        )

    def moved(self, random: np.random.Generator) -> MountOrientation:
        """Where the device ends up after someone knocks or re-seats it."""
        yaw_change = float(random.uniform(10.0, 45.0)) * (1.0 if random.uniform() < 0.5 else -1.0)
        return MountOrientation(
            yaw_deg=(self.yaw_deg + yaw_change) % 360.0,
            pitch_deg=float(np.clip(self.pitch_deg + random.uniform(-6.0, 6.0), -20.0, 20.0)),
            roll_deg=float(np.clip(self.roll_deg + random.uniform(-6.0, 6.0), -20.0, 20.0)),
        )


@dataclass(frozen=True)
class DeviceProfile:
    """One dashcam as installed: who drives it, in what, and how it sits in its mount."""

    device_id: str
    driver_id: str
    vehicle_type: str
    mount: MountOrientation
    sample_rate_hz: float
    firmware_version: str
    driver_style: DriverStyle
    accelerometer_bias: tuple[float, float, float]
    gyroscope_bias: tuple[float, float, float]
    # Index in the fleet; seeds every random draw for this device.
    index: int = field(default=0)

    @property
    def mount_rotation(self) -> NDArray[np.float64]:
        """Initial vehicle-to-device rotation (a `mount_moved` event changes it later)."""
        return self.mount.rotation
