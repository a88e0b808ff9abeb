"""A physics model of a dashcam fleet, with ground truth for every injected event.

from michi.roads import RoadMap
from michi.simulator import FleetSimulator, SimulationConfig

simulator = FleetSimulator(SimulationConfig(devices=20, duration_s=600, seed=7), road_map=RoadMap.default())
for upload in simulator.uploads():
    ...
simulator.write_ground_truth("ground_truth.jsonl")
"""

from michi.simulator.config import DEFAULT_START_TIME, SimulationConfig
from michi.simulator.fleet import FleetSimulator, TripSetup
from michi.simulator.kinematics import CONFOUNDER_KINDS, RISKY_KINDS
from michi.simulator.scenarios import SCENARIOS, Scenario, list_scenarios
from michi.simulator.truth import (
    DetectionJudgement,
    GroundTruthEvent,
    TripTruth,
    judge_detections,
    read_ground_truth_lines,
)
from michi.simulator.vehicles import (
    GRAVITY_MPS2,
    VEHICLE_TYPES,
    DeviceProfile,
    DriverStyle,
    MountOrientation,
    VehicleType,
    mount_rotation,
)

__all__ = [
    "CONFOUNDER_KINDS",
    "DEFAULT_START_TIME",
    "GRAVITY_MPS2",
    "RISKY_KINDS",
    "SCENARIOS",
    "VEHICLE_TYPES",
    "DetectionJudgement",
    "DeviceProfile",
    "DriverStyle",
    "FleetSimulator",
    "GroundTruthEvent",
    "MountOrientation",
    "Scenario",
    "SimulationConfig",
    "TripSetup",
    "TripTruth",
    "VehicleType",
    "judge_detections",
    "list_scenarios",
    "mount_rotation",
    "read_ground_truth_lines",
]
