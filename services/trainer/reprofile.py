"""Accept a period of the fleet's own traffic as a model version's reference: `michi models reprofile`.

A drift the fleet is meant to have (a firmware rolled out to every device, a real fleet the simulator does not
describe) stays an open drift episode until the reference says it is normal. A person chooses a healthy period;
its served predictions (champion, or a rollout's serving arms) are read back from the warehouse (`adapters/live_traffic.py`), profiled like the
simulated traffic (`domain/profile.py::live_profile`: calibrated windows, cohorts, population, vehicle mix) and
written over the version's `reference_profile.json`. The profile it replaces is kept beside it
(`reference_profile.replaced-<UTC time>.json`), named in the new one (`accepted.replaced`), with the period,
the windows read, who accepted it and why. The monitor reads it within `MICHI_MONITOR_PROFILE_REFRESH_S`.

A period too thin to describe a fleet is refused (`ReprofileRefused`), as the monitor refuses to judge one:
fewer than `min_windows` calibrated windows or `min_devices` devices.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from michi.blobs import BlobNotFound, BlobStore
from michi.registry.layout import model_folder, reference_profile_key
from services.trainer.adapters.live_traffic import LiveTraffic, read_live_traffic
from services.trainer.adapters.simulation import CALIBRATION, DEVICE, TRAFFIC_DIMENSIONS
from services.trainer.domain.profile import CALIBRATED, live_profile

# The monitor's defaults: a reference thinner than one of its windows, or than the fleet it may judge, says less
# than the windows it is compared with.
MIN_WINDOWS = 20_000
MIN_DEVICES = 5
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class ReprofileRefused(ValueError):
    """The period cannot be a reference (too few windows or devices, or no such period)."""


@dataclass(frozen=True)
class Reprofiled:
    model_name: str
    version: str
    since: datetime
    until: datetime
    windows: int  # champion windows read (sampled down to `live_traffic.MAX_LIVE_WINDOWS` if more)
    calibrated: int
    devices: int
    written: bool
    key: str
    replaced: str | None
    profile: dict[str, Any] = field(repr=False, default_factory=dict)

    def describe(self) -> str:
        population = self.profile.get("population", {})
        characterised = ", ".join(
            f"{dimension} {'/'.join(values) or '-'}" for dimension, values in sorted(population.items())
        )
        lines = [
            f"{self.model_name} {self.version}: {self.calibrated:,} calibrated windows of {self.windows:,} from "
            f"{self.devices:,} devices, {self.since.isoformat()} to {self.until.isoformat()}",
            f"  characterised: {characterised or 'nothing'}",
        ]
        if self.written:
            lines.append(f"  written to {self.key}")
            lines.append(
                f"  the profile it replaced is kept at {self.replaced}" if self.replaced else "  (none before)"
            )
            lines.append("  the monitor judges the version's next windows against it (MICHI_MONITOR_PROFILE_REFRESH_S)")
        else:
            lines.append("  dry run: nothing written")
        return "\n".join(lines)


def moment(text: str, *, now: datetime, before: datetime | None = None) -> datetime:
    """`now`, an ISO 8601 time (UTC when it says no zone), or with `before` a duration back from it (90m, 24h, 7d)."""
    if text.strip().lower() == "now":
        return now
    matched = DURATION.match(text)
    if matched is not None:
        if before is None:
            raise ReprofileRefused(f"{text!r}: a duration only says how long before --until")
        return before - timedelta(seconds=float(matched.group(1)) * UNITS[matched.group(2)])
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReprofileRefused(f"{text!r} is neither an ISO 8601 time, 'now' nor a duration such as 24h") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def reprofile(
    blob_url: str,
    model_name: str,
    version: str,
    *,
    since: datetime,
    until: datetime,
    actor: str,
    reason: str,
    min_windows: int = MIN_WINDOWS,
    min_devices: int = MIN_DEVICES,
    dry_run: bool = False,
    now: datetime | None = None,
) -> Reprofiled:
    """Profile the champion traffic of [since, until) and (unless `dry_run`) make it the version's reference."""
    if not since < until:
        raise ReprofileRefused(f"the period is empty: {since.isoformat()} is not before {until.isoformat()}")
    traffic = read_live_traffic(blob_url, since, until)
    calibrated = sum(1 for state in traffic.cohorts.get(CALIBRATION, []) if state == CALIBRATED)
    devices = _calibrated_devices(traffic)
    if calibrated < min_windows or devices < min_devices:
        raise ReprofileRefused(
            f"{calibrated:,} calibrated windows from {devices:,} devices in the warehouse between "
            f"{since.isoformat()} and {until.isoformat()} ({traffic.available:,} champion windows in all): "
            f"a reference needs at least {min_windows:,} from {min_devices:,} devices"
        )
    store = BlobStore(blob_url)
    key = reference_profile_key(model_name, version)
    previous_data = _read(store, key)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    replaced = f"{model_folder(model_name, version)}/reference_profile.replaced-{stamp}.json" if previous_data else None
    previous = json.loads(previous_data) if previous_data else None
    profile = live_profile(
        traffic.features,
        {dimension: traffic.cohorts[dimension] for dimension in TRAFFIC_DIMENSIONS},
        calibration=traffic.cohorts[CALIBRATION],
        devices=traffic.cohorts[DEVICE],
        previous=previous,
        accepted={
            "period": {"since": since.isoformat(), "until": until.isoformat()},
            "windows_in_period": traffic.available,
            "windows_read": traffic.count,
            "devices": devices,
            "by": actor,
            "reason": reason,
            "at": (now or datetime.now(UTC)).isoformat(),
            "replaced": replaced,
            "replaced_source": previous.get("source") if previous else None,
        },
    )
    if not dry_run:
        if previous_data is not None and replaced is not None:
            asyncio.run(store.put_bytes(replaced, previous_data, overwrite=False))
        asyncio.run(store.put_bytes(key, json.dumps(profile, sort_keys=True).encode()))
    return Reprofiled(
        model_name, version, since, until, traffic.count, calibrated, devices, not dry_run, key, replaced, profile
    )


def _calibrated_devices(traffic: LiveTraffic) -> int:
    states, owners = traffic.cohorts.get(CALIBRATION, []), traffic.cohorts.get(DEVICE, [])
    return len({owner for owner, state in zip(owners, states, strict=True) if state == CALIBRATED})


def _read(store: BlobStore, key: str) -> bytes | None:
    try:
        return asyncio.run(store.read_bytes(key))
    except BlobNotFound:
        return None
