"""A version's reference profile replaced while the monitor runs (`michi models reprofile`).

`BlobProfiles` reads a cached profile again every `refresh_s`: an unchanged file keeps the cached object, a
changed one replaces it, a file that went missing or unreadable keeps the last good one. `DriftMonitor` closes the
windows binned on the old profile (`profile-changed`) and judges the next ones against the new profile, so a drift
the fleet is meant to have (a new firmware everywhere) ends once a person accepts it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

from michi.blobs import BlobStore
from michi.registry.layout import reference_profile_key
from services.monitor.adapters.profiles import BlobProfiles
from services.monitor.domain.profiles import ReferenceProfile, read_profile
from services.monitor.handlers import FULL, PROFILE_CHANGED, DriftMonitor, DriftPolicy
from services.trainer.domain.profile import histogram

from .test_monitor_handlers import TOPIC, History, Publisher, Reports, prediction


def document(firmware: list[str], seed: int = 0) -> dict[str, object]:
    random = np.random.default_rng(seed)
    return {
        "version": "reference-profile-2",
        "source": "traffic",
        "data_version": "ds-1",
        "features": {
            "speed": histogram(random.normal(15.0, 5.0, 20_000)),
            "braking": histogram(random.normal(-1.0, 0.5, 20_000)),
        },
        "population": {"firmware": firmware},
    }


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_changed_profile_is_read_again_an_unchanged_or_broken_one_is_kept(tmp_path: Path) -> None:
    store, clock = BlobStore(f"file://{tmp_path}"), Clock()
    key = reference_profile_key("risk", "v1")
    asyncio.run(store.put_bytes(key, json.dumps(document(["2.4.0"])).encode()))
    profiles = BlobProfiles(store, clock=clock, refresh_s=60.0)
    first = profiles.profile("risk", "v1")
    assert first is not None and first.population["firmware"] == {"2.4.0"}

    asyncio.run(store.put_bytes(key, json.dumps(document(["3.0"])).encode()))
    clock.now = 59.0
    assert profiles.profile("risk", "v1") is first  # not yet due
    clock.now = 60.0
    second = profiles.profile("risk", "v1")
    assert second is not first and second is not None and second.population["firmware"] == {"3.0"}

    clock.now = 130.0
    assert profiles.profile("risk", "v1") is second  # the same bytes: the same object
    asyncio.run(store.put_bytes(key, b"{not json"))
    clock.now = 200.0
    assert profiles.profile("risk", "v1") is second  # unreadable: the last good one
    (tmp_path / key).unlink()
    clock.now = 300.0
    assert profiles.profile("risk", "v1") is second  # gone: the last good one


class Swappable:
    def __init__(self, profile: ReferenceProfile) -> None:
        self.current = profile

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        return self.current if (model_name, model_version) == ("risk", "v1") else None


def test_a_new_profile_closes_the_windows_of_the_old_one_and_a_firmware_it_includes_is_no_longer_drift() -> None:
    profiles = Swappable(read_profile(document(["2.4.0"])))
    publisher, reports = Publisher(), Reports()
    monitor = DriftMonitor(
        profiles=profiles,
        publisher=publisher,
        history=History(),
        reports=reports,
        policy=DriftPolicy(window_rows=1000, min_rows=1000, min_devices=1, sustain_windows=1, cohorts=()),
    )
    monitor.assigned({(TOPIC, 0): -1, (TOPIC, 1): -1})
    random = np.random.default_rng(3)

    def feed(first: int, count: int) -> None:
        for index in range(first, first + count):
            message = prediction(random, index=index, firmware="3.0")
            monitor.handle(message, (TOPIC, index % 2), index // 2)
        monitor.flush()

    feed(0, 1000)  # a whole window of the new firmware against a profile without it
    drift = [alert for alert in publisher.alerts if alert.kind == "drift"]
    assert [alert.attributes["status"] for alert in drift] == ["firing"]
    assert "firmware_unseen" in drift[0].attributes["features"]

    feed(1000, 400)  # a part of the next window, then the person accepts the new firmware
    profiles.current = read_profile(document(["2.4.0", "3.0"], seed=1))
    feed(1400, 1000)
    assert [closed.reason for closed in reports.closed] == [FULL, PROFILE_CHANGED, FULL]
    changed = reports.closed[1]
    assert changed.rows == 400  # the old profile's rows, judged on it (too few: insufficient data)
    last = reports.closed[2]
    assert all(result.feature != "firmware_unseen" or result.psi < 0.01 for result in last.features)
    statuses = [alert.attributes["status"] for alert in publisher.alerts if alert.kind == "drift"]
    assert statuses == ["firing", "resolved"]
    assert next(iter(monitor.windows.values()), None) is None or all(
        window.profile is profiles.current for window in monitor.windows.values()
    )
