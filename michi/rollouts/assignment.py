"""Which arm serves a device, and whether a shadow also scores it (pure: no I/O).

    split = TrafficSplit("rollout-7f3a", arms=(Arm("canary", 0.1), Arm("champion", 0.9)),
                         shadows=(ShadowArm("heavy-v3", device_share=0.05),))
    route = split.route("device-0042")       # Route(arm="champion", shadows=("heavy-v3",)) or similar

A device's place is a number in [0, 1) drawn from a keyed hash (BLAKE2b) of the rollout id and the
device id: the same in every process, on every machine and after every restart (never Python's
`hash()`, which is salted per process). Serving arms hold consecutive intervals of that unit line in
the order they are listed, each as wide as its share: with `(canary 0.1, champion 0.9)` the canary
holds [0, 0.1) and the champion [0.1, 1). So

- a device keeps its arm for the life of a rollout: a revision that only pauses or resumes, or that
  changes nothing but other fields, moves no device;
- a ramp of the first arm against the last (the canary from 10 % to 20 %) only moves devices from the
  champion to the canary, and exactly the 10 % it must: a device on the canary at 10 % is still on it
  at 20 %. The same holds for the last arm against the one before it. List the candidate first and
  the champion last, and keep the order across revisions: the order is the layout;
- another rollout id reshuffles every device, so two rollouts never put the same devices on their
  candidates by construction.

Shadow arms are scored beside the serving arm and never answer. Each has a device share (1.0, all
devices, by default): a device is shadowed when its place on a second, independent unit line (another
hash salt) is below the share. That line is shared by all shadows of a rollout, so two shadows with the
same share score the same devices (paired comparison), and raising a shadow's share only adds devices.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

# Tolerance on the sum of serving shares. `RolloutArm.traffic_share` is a float32 (about 1e-8 off per share):
# round shares read from a plan (to 6 decimals, say) before building a split from them.
SHARE_SUM_TOLERANCE = 1e-9

SERVING_SALT = "serve"
SHADOW_SALT = "shadow"

_DIGEST_BYTES = 8
# 53 bits: every value of `bits / 2**53` is an exact double strictly below 1.0 (64 bits would round up to 1.0).
_MANTISSA_BITS = 53


@dataclass(frozen=True)
class Arm:
    """A serving arm: its name (unique in a split) and its share of devices in [0, 1]."""

    name: str
    share: float


@dataclass(frozen=True)
class ShadowArm:
    """An arm scored beside the serving one and never served; `device_share` of devices are shadowed."""

    name: str
    device_share: float = 1.0


@dataclass(frozen=True)
class Route:
    """Where one device goes: the arm that serves it, and the shadow arms that also score it."""

    arm: str
    shadows: tuple[str, ...] = ()


class InvalidSplit(ValueError):
    """A set of arms that cannot split traffic; `problems` lists every reason."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid traffic split: " + "; ".join(self.problems))


def _length_prefixed(*parts: str) -> bytes:
    # Length prefixes make the encoding unambiguous: ("ab", "c") and ("a", "bc") hash differently.
    encoded = [part.encode("utf-8") for part in parts]
    return b"".join(len(part).to_bytes(4, "big") + part for part in encoded)


def device_position(rollout_id: str, device_id: str, *, salt: str = SERVING_SALT) -> float:
    """A device's place in [0, 1) for a rollout: uniform over devices, stable across processes.

    BLAKE2b (8-byte digest, personalised for Michi rollouts) over the length-prefixed salt, rollout id and
    device id; the top 53 bits divided by 2**53. A different salt gives an independent line.
    """
    digest = hashlib.blake2b(
        _length_prefixed(salt, rollout_id, device_id), digest_size=_DIGEST_BYTES, person=b"michi-rollouts"
    ).digest()
    bits = int.from_bytes(digest, "big") >> (8 * _DIGEST_BYTES - _MANTISSA_BITS)
    return bits / float(1 << _MANTISSA_BITS)


def split_problems(arms: Sequence[Arm], shadows: Sequence[ShadowArm] = ()) -> list[str]:
    """Every reason a set of arms cannot split traffic (an empty list means the split is valid).

    Serving shares are finite, in [0, 1], and sum to 1 within `SHARE_SUM_TOLERANCE`; there is at least one
    serving arm; names are non-empty and unique across serving and shadow arms; shadow device shares are in [0, 1].
    """
    problems: list[str] = []
    if not arms:
        problems.append("no serving arm: at least one arm must serve traffic")
    seen: set[str] = set()
    for name in [arm.name for arm in arms] + [shadow.name for shadow in shadows]:
        if not name:
            problems.append("an arm has an empty name")
        elif name in seen:
            problems.append(f"arm name {name!r} appears more than once")
        seen.add(name)
    for arm in arms:
        if not math.isfinite(arm.share) or not 0.0 <= arm.share <= 1.0:
            problems.append(f"arm {arm.name!r} has share {arm.share!r}, outside [0, 1]")
    for shadow in shadows:
        if not math.isfinite(shadow.device_share) or not 0.0 <= shadow.device_share <= 1.0:
            problems.append(f"shadow arm {shadow.name!r} has device share {shadow.device_share!r}, outside [0, 1]")
    total = math.fsum(arm.share for arm in arms if math.isfinite(arm.share))
    if arms and abs(total - 1.0) > SHARE_SUM_TOLERANCE:
        problems.append(f"serving shares sum to {total:.12g}, not 1 (tolerance {SHARE_SUM_TOLERANCE:g})")
    return problems


def arm_at(position: float, arms: Sequence[Arm]) -> str:
    """The arm whose interval holds `position` (arms laid out in order, each as wide as its share).

    Rounding in the sum of shares never leaves a gap: a position past the last boundary goes to the last arm
    with a positive share. Arms with share 0 hold no interval and never get a device.
    """
    boundary = 0.0
    last_open: str | None = None
    for arm in arms:
        if arm.share <= 0.0:
            continue
        boundary += arm.share
        last_open = arm.name
        if position < boundary:
            return arm.name
    if last_open is None:
        raise InvalidSplit(["no arm has a positive share"])
    return last_open


def assign_arm(rollout_id: str, device_id: str, arms: Sequence[Arm]) -> str:
    """The serving arm of a device in a rollout (arms in layout order; validate them once with `split_problems`)."""
    return arm_at(device_position(rollout_id, device_id), arms)


def is_shadowed(rollout_id: str, device_id: str, device_share: float) -> bool:
    """Whether a shadow arm with `device_share` scores this device (independent of its serving arm)."""
    return device_position(rollout_id, device_id, salt=SHADOW_SALT) < device_share


@dataclass(frozen=True)
class TrafficSplit:
    """A validated split of one rollout: serving arms in layout order, and shadow arms with device shares.

    Construction raises `InvalidSplit` with every problem, so a split that exists is a valid one.
    """

    rollout_id: str
    arms: tuple[Arm, ...]
    shadows: tuple[ShadowArm, ...] = ()

    def __post_init__(self) -> None:
        problems = split_problems(self.arms, self.shadows)
        if not self.rollout_id:
            problems.insert(0, "the rollout id is empty")
        if problems:
            raise InvalidSplit(problems)

    def route(self, device_id: str) -> Route:
        """The arm that serves `device_id` and the shadows that also score it."""
        arm = assign_arm(self.rollout_id, device_id, self.arms)
        if not self.shadows:
            return Route(arm)
        shadow_position = device_position(self.rollout_id, device_id, salt=SHADOW_SALT)
        return Route(arm, tuple(shadow.name for shadow in self.shadows if shadow_position < shadow.device_share))
