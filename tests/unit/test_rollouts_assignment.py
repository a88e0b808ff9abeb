"""Sticky traffic split by device (`michi/rollouts/assignment.py`).

The issue's acceptance: stickiness across restarts and revisions that keep a device's arm, and shares within
±1 percentage point over 100,000 simulated devices. Beyond it: a ramp moves only the devices it must, in the
direction it must; another rollout id reshuffles; a shadow's device share is exact and independent of the arm.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from michi.rollouts.assignment import (
    Arm,
    InvalidSplit,
    Route,
    ShadowArm,
    TrafficSplit,
    arm_at,
    assign_arm,
    device_position,
    is_shadowed,
    split_problems,
)

DEVICES = [f"device-{index:06d}" for index in range(100_000)]
ROLLOUT = "rollout-7f3a"
# Each device's place for ROLLOUT, computed once: `assign_arm` is `arm_at(device_position(...))`.
POSITIONS = {device: device_position(ROLLOUT, device) for device in DEVICES}


def canary_split(canary_share: float) -> list[Arm]:
    return [Arm("canary", canary_share), Arm("champion", 1.0 - canary_share)]


def test_position_is_pinned_and_follows_the_documented_hash() -> None:
    # Pinned: a change of hash, encoding or bit count would silently move every device of every live rollout.
    assert device_position(ROLLOUT, "device-0042") == 0.6277213937864755
    assert device_position(ROLLOUT, "device-0042", salt="shadow") == 0.9624959871743346
    # Independently: BLAKE2b-64 personalised "michi-rollouts" over length-prefixed parts, top 53 bits / 2**53.
    message = b"".join(len(part).to_bytes(4, "big") + part for part in (b"serve", ROLLOUT.encode(), b"device-0042"))
    digest = hashlib.blake2b(message, digest_size=8, person=b"michi-rollouts").digest()
    assert device_position(ROLLOUT, "device-0042") == (int.from_bytes(digest, "big") >> 11) / 2**53


def test_positions_are_the_same_in_other_processes_whatever_their_hash_seed() -> None:
    devices = DEVICES[:200]
    here = [device_position(ROLLOUT, device) for device in devices]
    program = (
        "import json, sys\n"
        "from michi.rollouts.assignment import device_position\n"
        f"print(json.dumps([device_position({ROLLOUT!r}, d) for d in json.loads(sys.argv[1])]))\n"
    )
    for hash_seed in ("1", "4242"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed}
        output = subprocess.run(
            [sys.executable, "-c", program, json.dumps(devices)],
            capture_output=True,
            text=True,
            check=True,
            env=environment,
            cwd=os.getcwd(),
        ).stdout
        assert json.loads(output) == here


def test_positions_are_in_the_unit_interval_and_the_layout_never_leaves_a_gap() -> None:
    assert all(0.0 <= position < 1.0 for position in POSITIONS.values())
    # Shares summing to 1 - 5e-11 (within tolerance): the top of the line still lands on the last open arm.
    arms = [Arm("canary", 0.3), Arm("champion", 0.69999999995), Arm("retired", 0.0)]
    assert arm_at(0.99999999999, arms) == "champion"
    assert arm_at(0.0, arms) == "canary"
    assert arm_at(0.3, arms) == "champion"


@pytest.mark.parametrize(
    "arms",
    [
        canary_split(0.01),
        canary_split(0.10),
        [Arm("a", 0.5), Arm("b", 0.5)],
        [Arm("candidate-1", 0.2), Arm("candidate-2", 0.3), Arm("champion", 0.5)],
        [Arm("canary", 0.25), Arm("paused", 0.0), Arm("champion", 0.75)],
    ],
    ids=["canary-1", "canary-10", "ab-50-50", "three-arms", "zero-share-arm"],
)
def test_shares_are_exact_within_one_point_over_100k_devices(arms: list[Arm]) -> None:
    counts = Counter(assign_arm(ROLLOUT, device, arms) for device in DEVICES)
    for arm in arms:
        measured = counts[arm.name] / len(DEVICES)
        assert abs(measured - arm.share) <= 0.01, (arm, measured)
        if arm.share == 0.0:
            assert counts[arm.name] == 0


def test_a_ramp_moves_only_champion_devices_onto_the_canary_and_only_as_many_as_it_must() -> None:
    previous = {device: arm_at(POSITIONS[device], canary_split(0.01)) for device in DEVICES}
    for share in (0.05, 0.10, 0.20, 0.50, 1.0):
        current = {device: arm_at(POSITIONS[device], canary_split(share)) for device in DEVICES}
        moved = [device for device in DEVICES if current[device] != previous[device]]
        # Monotone: a device on the canary stays on it; every move is champion -> canary.
        assert all(previous[device] == "champion" and current[device] == "canary" for device in moved)
        canary_before = sum(arm == "canary" for arm in previous.values()) / len(DEVICES)
        canary_now = sum(arm == "canary" for arm in current.values()) / len(DEVICES)
        # The fewest moves possible: exactly the change of the canary's share.
        assert len(moved) / len(DEVICES) == pytest.approx(canary_now - canary_before, abs=1e-12)
        previous = current


def test_a_revision_that_keeps_the_shares_keeps_every_device_and_a_new_rollout_reshuffles() -> None:
    split = TrafficSplit(ROLLOUT, tuple(canary_split(0.10)))
    paused_and_resumed = TrafficSplit(ROLLOUT, tuple(canary_split(0.10)))
    first = [split.route(device).arm for device in DEVICES[:20_000]]
    assert [paused_and_resumed.route(device).arm for device in DEVICES[:20_000]] == first

    other = TrafficSplit("rollout-91c2", tuple(canary_split(0.10)))
    second = [other.route(device).arm for device in DEVICES[:20_000]]
    both = sum(a == b == "canary" for a, b in zip(first, second, strict=True)) / 20_000
    # Independent rollouts: about 10 % of 10 % of devices are on both canaries (the same hash would give 10 %).
    assert both == pytest.approx(0.01, abs=0.004)


def test_a_shadow_scores_its_device_share_independently_of_the_serving_arm() -> None:
    everyone = TrafficSplit(ROLLOUT, tuple(canary_split(0.10)), (ShadowArm("heavy"),))
    assert all(everyone.route(device).shadows == ("heavy",) for device in DEVICES[:5_000])

    cheap = TrafficSplit(ROLLOUT, tuple(canary_split(0.10)), (ShadowArm("heavy", device_share=0.10),))
    routes = [cheap.route(device) for device in DEVICES]
    shadowed = [route for route in routes if route.shadows]
    assert abs(len(shadowed) / len(DEVICES) - 0.10) <= 0.01
    # Independent of the serving arm: the shadowed share among canary devices is the shadow's share too.
    on_canary = [route for route in routes if route.arm == "canary"]
    assert abs(sum(bool(route.shadows) for route in on_canary) / len(on_canary) - 0.10) <= 0.01

    # Raising a shadow's share only adds devices, and `is_shadowed` agrees with the split.
    for device, route in zip(DEVICES[:10_000], routes[:10_000], strict=True):
        assert is_shadowed(ROLLOUT, device, 0.10) == bool(route.shadows)
        if route.shadows:
            assert is_shadowed(ROLLOUT, device, 0.25)


def test_route_without_shadows() -> None:
    split = TrafficSplit(ROLLOUT, (Arm("champion", 1.0),))
    assert split.route("device-1") == Route("champion", ())


@pytest.mark.parametrize(
    ("arms", "shadows", "expected"),
    [
        ([Arm("canary", 0.2), Arm("champion", 0.7)], [], "sum to 0.9"),
        ([Arm("canary", -0.1), Arm("champion", 1.1)], [], "share -0.1, outside [0, 1]"),
        ([Arm("canary", 0.5), Arm("canary", 0.5)], [], "'canary' appears more than once"),
        ([Arm("champion", 1.0)], [ShadowArm("champion")], "'champion' appears more than once"),
        ([Arm("", 1.0)], [], "empty name"),
        ([Arm("canary", float("nan")), Arm("champion", 1.0)], [], "share nan"),
        ([], [], "no serving arm"),
        ([Arm("champion", 1.0)], [ShadowArm("heavy", device_share=1.5)], "device share 1.5"),
    ],
)
def test_invalid_splits_say_why(arms: list[Arm], shadows: list[ShadowArm], expected: str) -> None:
    problems = split_problems(arms, shadows)
    assert any(expected in problem for problem in problems), problems
    with pytest.raises(InvalidSplit) as raised:
        TrafficSplit(ROLLOUT, tuple(arms), tuple(shadows))
    assert any(expected in problem for problem in raised.value.problems)


def test_a_valid_split_has_no_problems_and_a_sum_within_tolerance_is_accepted() -> None:
    assert split_problems([Arm("canary", 0.1), Arm("champion", 0.9)]) == []
    assert split_problems([Arm("a", 1 / 3), Arm("b", 1 / 3), Arm("c", 1 / 3)]) == []
    assert split_problems([Arm("canary", 0.1), Arm("champion", 0.9 + 1e-8)]) != []
    with pytest.raises(InvalidSplit, match="rollout id is empty"):
        TrafficSplit("", (Arm("champion", 1.0),))
