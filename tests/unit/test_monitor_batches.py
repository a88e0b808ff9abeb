"""The monitor's columnar path (`DriftMonitor.handle_batch`) does what `handle` does record by record.

The same stream of predictions (cohorts, a cohort limit, shadows, uncalibrated rows, rows without features, bad
packed rows, feature maps beside packed rows, several partitions, small windows that fill in the middle of a
batch, drift that opens, alerts and resolves episodes, a second version interleaved) goes through two monitors,
one record by record and one batch by batch, as the consumer hands them over (decoded without the `features`
map, `adapters/prediction_view.py`): the windows they close (ids, rows,
ends, figures, verdicts, episodes), what they publish, skip and reject, the offsets they let the consumer commit
after every batch, and what their open windows hold, are the same; and again after a crash, from the committed
offsets, on the history the first run left.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from michi.contracts.v1 import common_pb2, inference_pb2
from michi.kit.consumer import Rejected
from michi.windows.features import FEATURE_NAMES, pack_features
from services.monitor.adapters.prediction_view import PredictionView
from services.monitor.domain.profiles import ReferenceProfile
from services.monitor.domain.samples import StratifiedSample
from services.monitor.handlers import DriftMonitor, DriftPolicy

from .test_monitor_handlers import TOPIC, History, Publisher, Reports
from .test_monitor_traffic_profile import profile_read

SPEED = FEATURE_NAMES.index("gps_speed_mps")
Record = tuple[inference_pb2.Prediction, tuple[str, int], int]


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    return profile_read()


class FixedProfiles:
    def __init__(self, profile: ReferenceProfile) -> None:
        self.fixed = profile

    def profile(self, model_name: str, model_version: str) -> ReferenceProfile | None:
        return None if model_version == "v-unknown" else self.fixed


def stream(count: int, seed: int, *, drift_from: int, second_version: tuple[int, int] = (0, 0)) -> list[Record]:
    """Predictions over three partitions, offsets increasing per partition."""
    random = np.random.default_rng(seed)
    vehicles = ("van", "sedan", "bus", "tram")
    firmwares = ("2.4.1", "2.4.1", "2.5.0", "3.0.0", "3.1.0")
    offsets = [0, 0, 0]
    records = []
    for index in range(count):
        number = int(random.integers(0, 3))
        device = int(random.integers(0, 23))
        values = random.normal(1.0, 0.3, len(FEATURE_NAMES)).astype(np.float32)
        speed = 10.0 if device % 2 else 25.0
        values[SPEED] = random.normal(speed * (1.6 if index >= drift_from else 1.0), 2.0)
        # 3 % shadows and 2 % edge predictions (skipped: `not-champion`, `edge`), the rest champions.
        draw = random.random()
        variant = inference_pb2.VARIANT_CHAMPION
        if draw < 0.05:
            variant = inference_pb2.VARIANT_SHADOW if draw < 0.03 else inference_pb2.VARIANT_EDGE
        message = inference_pb2.Prediction(
            event_id=f"prediction-{index}",
            variant=variant,
            vehicle_type=vehicles[device % len(vehicles)],
            firmware_version=firmwares[device % len(firmwares)],
            sample_rate_hz=50 if device % 3 else 100,
            confidence=float(random.uniform(0.4, 1.0)),
        )
        message.predicted = 2 if random.random() < 0.1 else 1  # type: ignore[assignment]
        version = "v1"
        if second_version[0] <= index < second_version[1] and random.random() < 0.5:
            version = "v2"
        message.lineage.model_name, message.lineage.model_version = "risk", version
        if random.random() < 0.01:
            message.lineage.model_version = "v-unknown"  # no profile
        message.lineage.window_id = f"window-{index}" if random.random() < 0.97 else ""
        message.lineage.device_id = f"device-{device}"
        message.calibration.state = (  # type: ignore[assignment]
            common_pb2.CALIBRATION_STATE_UNCALIBRATED
            if random.random() < 0.05
            else common_pb2.CALIBRATION_STATE_CALIBRATED
        )
        message.occurred_at.seconds = 1_700_000_000 + index // 4
        message.occurred_at.nanos = int(random.integers(0, 1_000_000_000))
        form = random.random()
        if form < 0.01:
            message.packed_features = b"\x00" * 5  # not whole float32 values: rejected
        elif form < 0.02:
            message.lineage.model_version = ""  # rejected
            message.packed_features = pack_features(values[np.newaxis, :])[0]
        elif form < 0.03:
            pass  # no features: skipped
        elif form < 0.08:
            message.features.update(zip(FEATURE_NAMES, values.tolist(), strict=True))  # an older producer
        else:
            message.packed_features = pack_features(values[np.newaxis, :])[0]
        records.append((message, (TOPIC, number), offsets[number]))
        offsets[number] += 1
    return records


def batches(records: list[Record], seed: int) -> Iterator[list[Record]]:
    random = np.random.default_rng(seed)
    at = 0
    while at < len(records):
        size = int(random.choice([1, 7, 50, 173, 400]))
        yield records[at : at + size]
        at += size


def monitor_of(
    profile: ReferenceProfile, history: History, *, background_writes: bool = False
) -> tuple[DriftMonitor, Publisher, Reports]:
    publisher, reports = Publisher(), Reports()
    monitor = DriftMonitor(
        profiles=FixedProfiles(profile),
        publisher=publisher,
        history=history,
        reports=reports,
        policy=DriftPolicy(
            window_rows=150, min_rows=100, min_devices=5, sustain_windows=2, max_cohorts=2, drift_sample_per_class=3
        ),
        clock=lambda: 0.0,
        background_writes=background_writes,
    )
    return monitor, publisher, reports


def run(
    profile: ReferenceProfile,
    records: list[Record],
    *,
    columnar: bool,
    seed: int,
    history: History | None = None,
    committed: dict[tuple[str, int], int] | None = None,
    background_writes: bool = False,
) -> dict[str, Any]:
    history = copy.deepcopy(history) if history is not None else History()
    monitor, publisher, reports = monitor_of(profile, history, background_writes=background_writes)
    monitor.assigned(committed or {(TOPIC, number): -1 for number in range(3)})
    commits: list[dict[tuple[str, int], int]] = []
    rejected: list[tuple[int, str, str]] = []
    for batch in batches(records, seed):
        monitor.confirm_commit()
        if columnar:
            # As the service decodes them: views without the `features` map (`adapters/prediction_view.py`).
            views = [PredictionView.FromString(record[0].SerializeToString()) for record in batch]
            letters = monitor.handle_batch(views, [r[1] for r in batch], [r[2] for r in batch])  # type: ignore[arg-type]
            for index, rejection in letters:
                rejected.append((batch[index][2], rejection.reason, rejection.detail))
                monitor.passed(batch[index][1], batch[index][2])
        else:
            for message, partition, offset in batch:
                try:
                    monitor.handle(message, partition, offset)
                except Rejected as rejection:
                    rejected.append((offset, rejection.reason, rejection.detail))
                    monitor.passed(partition, offset)
        monitor.flush()
        monitor.close_idle()
        commits.append(monitor.committable())
        if commits[-1] and isinstance(history, SlowHistory):
            assert not history.writing, "offsets offered while a closed window was still being written"
    if background_writes:
        monitor.shutdown()  # the last write done: what it allows is offered once more
        commits.append(monitor.committable())
    return {
        "closed": [summary(closed) for closed in reports.closed],
        "alerts": [alert.SerializeToString(deterministic=True) for alert in publisher.alerts],
        "requests": [request.SerializeToString(deterministic=True) for request in publisher.requests],
        "skipped": Counter(reports.skipped),
        "rejected": rejected,
        "commits": commits,
        "open": {key: open_window(window) for key, window in monitor.windows.items()},
        "history": history,
        "committed": dict(monitor.committed_to) | commits_so_far(commits),
    }


def commits_so_far(commits: list[dict[tuple[str, int], int]]) -> dict[tuple[str, int], int]:
    merged: dict[tuple[str, int], int] = {}
    for commit in commits:
        merged.update(commit)
    return merged


def summary(closed: Any) -> tuple[Any, ...]:
    return (
        closed.window_id,
        closed.model_version,
        closed.cohort,
        closed.rows,
        closed.reason,
        closed.verdict,
        closed.drifted,
        closed.episode_id,
        dict(closed.ends),
        [(result.feature, result.status, result.psi, result.ks_statistic) for result in closed.features],
        closed.performance,
        closed.drift_samples,
    )


def sample_of(sample: StratifiedSample[Any]) -> list[str]:
    return [request.event_id for request in sample.items()]


def open_window(window: Any) -> tuple[Any, ...]:
    return (
        window.id,
        window.rows,
        dict(window.first_offsets),
        dict(window.last_offsets),
        window.latest,
        sorted(window.devices),
        window.vehicles,
        {vehicle: sorted(devices) for vehicle, devices in window.vehicle_devices.items()},
        window.unseen,
        window.counts.tolist(),
        window.lows.tolist(),
        window.highs.tolist(),
        window.calls.tolist(),
        window.alerts.tolist(),
        sample_of(window.sample),
    )


def same(first: dict[str, Any], second: dict[str, Any]) -> None:
    for name in ("closed", "alerts", "requests", "skipped", "rejected", "commits", "open"):
        assert first[name] == second[name], name


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_stream_in_batches_gives_what_it_gives_record_by_record(profile: ReferenceProfile, seed: int) -> None:
    records = stream(4000, seed, drift_from=1500, second_version=(2500, 2800) if seed == 2 else (0, 0))
    by_record = run(profile, records, columnar=False, seed=seed)
    by_batch = run(profile, records, columnar=True, seed=seed)
    same(by_record, by_batch)
    # The stream exercises what it means to: full windows, episodes that alert, rejections, cohort limits.
    assert len(by_record["closed"]) > 20 and by_record["alerts"] and by_record["requests"]
    assert {"schema-violation"} == {reason for _, reason, _ in by_record["rejected"]}
    assert {"not-champion", "edge", "no-profile", "no-features", "uncalibrated", "cohort-limit"} <= set(
        by_record["skipped"]
    )


def test_after_a_crash_both_read_the_open_windows_again_and_agree(profile: ReferenceProfile) -> None:
    records = stream(3000, 4, drift_from=1200)
    first = run(profile, records[:1700], columnar=True, seed=4)
    committed = first["committed"]
    again = [record for record in records if record[2] >= committed.get(record[1], 0)]
    assert len(again) < len(records)
    by_record = run(profile, again, columnar=False, seed=5, history=first["history"], committed=committed)
    by_batch = run(profile, again, columnar=True, seed=5, history=first["history"], committed=committed)
    same(by_record, by_batch)
    # Windows closed before the crash are not closed again.
    assert not {closed[0] for closed in first["closed"]} & {closed[0] for closed in by_batch["closed"]}


class SlowHistory(History):
    """A history whose writes take a while (an fsync) and say when one is under way."""

    def __init__(self, fail_on: int = 0) -> None:
        super().__init__()
        self.writing = False
        self.writes = 0
        self.fail_on = fail_on

    def record_close(self, closed: Any, latest_s: float, episode: Any) -> None:
        self.writing = True
        try:
            time.sleep(0.002)
            self.writes += 1
            if self.writes == self.fail_on:
                raise OSError("disk full")
            super().record_close(closed, latest_s, episode)
        finally:
            self.writing = False


def test_closed_windows_written_beside_the_next_rows_give_the_same_windows_and_commit_only_what_is_kept(
    profile: ReferenceProfile,
) -> None:
    records = stream(4000, 6, drift_from=1500)
    inline = run(profile, records, columnar=True, seed=6)
    beside = run(profile, records, columnar=True, seed=6, history=SlowHistory(), background_writes=True)
    for name in ("closed", "alerts", "requests", "skipped", "rejected", "open"):
        assert inline[name] == beside[name], name
    # Commits may come a batch later (a write under way holds them), never sooner, and reach the same offsets.
    assert beside["committed"] == inline["committed"]
    assert beside["history"].windows.keys() == inline["history"].windows.keys()
    assert beside["history"].progresses == inline["history"].progresses


def test_a_closed_window_that_could_not_be_written_stops_the_batch_and_its_rows_are_read_again(
    profile: ReferenceProfile,
) -> None:
    records = stream(1500, 7, drift_from=10_000)
    history = SlowHistory(fail_on=2)
    monitor, _, _ = monitor_of(profile, history, background_writes=True)
    monitor.assigned({(TOPIC, number): -1 for number in range(3)})
    failed = False
    for batch in batches(records, 7):
        monitor.confirm_commit()
        views = [PredictionView.FromString(record[0].SerializeToString()) for record in batch]
        try:
            for index, _ in monitor.handle_batch(views, [r[1] for r in batch], [r[2] for r in batch]):  # type: ignore[arg-type]
                monitor.passed(batch[index][1], batch[index][2])
            monitor.flush()
            monitor.committable()
        except OSError:
            failed = True
            monitor.rewind()
            break
    assert failed and history.writes == 2
    # The failed window's cohort reads where SQL says it stands, not where the failed write would have put it.
    assert not monitor._progress
    assert monitor.committable() == {}
    monitor.shutdown()
