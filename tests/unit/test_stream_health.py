"""A stream worker's health judged from outside faust: a crash or a stall stops it, and `/readyz` tells the truth.

The watch's clock, positions and exit are given by the tests (`StreamWatch(..., clock=, read=, stop=)`);
the same watch on a real broker and a real worker is in tests/integration/test_stream_health.py.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from michi.bus.catalog import UPLOADS
from michi.bus.stalls import (
    CHECK_INTERVAL_S,
    CRASH_CHECK_S,
    NOT_READY_AFTER_S,
    STALL_TIMEOUT_S,
    Partition,
    Position,
    StallDetector,
    StreamWatch,
)
from michi.bus.streams import (
    EXIT_REDELIVER,
    RedeliveringAgent,
    catalog_topic,
    create_app,
    stream_readiness,
    stream_watch,
)
from michi.readiness import ConsumerProgress, run_checks

HELD = [("in", 0), ("in", 1), ("elsewhere", 0)]


@dataclass
class Harness:
    """A watch over a fake app, with a clock, positions and exits the test controls."""

    app: Any = field(
        default_factory=lambda: SimpleNamespace(
            crashed=False, crash_reason=None, rebalancing=False, in_recovery=False, conf=SimpleNamespace(id="test")
        )
    )
    now: float = 0.0
    positions: dict[Partition, Position] = field(default_factory=dict)
    reads: list[set[Partition]] = field(default_factory=list)
    stops: list[tuple[str, str, str]] = field(default_factory=list)
    failing: bool = False
    watch: StreamWatch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = StreamWatch(
            self.app,
            bootstrap="unused:9092",
            service="stream-test",
            stop=lambda *arguments: self.stops.append(arguments),
            clock=lambda: self.now,
            read=self.read,
        )
        self.watch.read_topic("in")
        self.watch.assigned(HELD)

    def read(self, partitions: set[Partition]) -> dict[Partition, Position]:
        self.reads.append(partitions)
        if self.failing:
            raise RuntimeError("broker away")
        return {partition: self.positions[partition] for partition in partitions if partition in self.positions}

    def check_at(self, now: float) -> str | None:
        self.now = now
        self.watch.check_progress()
        return self.watch.readiness()


def stalled(for_s: float) -> str:
    return f"no progress for {for_s:.0f} s on 1 partition(s) with records waiting (in[0]: committed 10, end 20)"


def test_the_default_timings_answer_503_within_35_s_and_exit_within_50_s_of_the_last_progress() -> None:
    # A stall is seen at the first check after it has lasted long enough: one check interval late at most.
    assert (NOT_READY_AFTER_S, STALL_TIMEOUT_S, CHECK_INTERVAL_S, CRASH_CHECK_S) == (30.0, 45.0, 5.0, 0.5)
    assert NOT_READY_AFTER_S + CHECK_INTERVAL_S == 35.0 < 60.0
    assert STALL_TIMEOUT_S + CHECK_INTERVAL_S == 50.0 < 60.0
    assert CRASH_CHECK_S < 10.0


def test_records_waiting_without_progress_make_the_worker_not_ready_then_stop_it() -> None:
    harness = Harness(positions={("in", 0): (10, 20), ("in", 1): (5, 5)})
    assert harness.check_at(0.0) is None
    assert harness.reads == [{("in", 0), ("in", 1)}]  # only what it holds of the topics its agents read
    assert harness.check_at(29.9) is None
    assert harness.check_at(30.0) == stalled(30.0)
    assert harness.check_at(44.9) == stalled(44.9)
    assert harness.stops == []
    assert harness.check_at(45.0) == stalled(45.0)
    assert harness.stops == [("stream-test", stalled(45.0), "in")]


def test_progress_or_an_empty_backlog_keeps_the_worker_ready() -> None:
    harness = Harness(positions={("in", 0): (10, 20)})
    for step in range(1, 30):
        harness.positions[("in", 0)] = (10 + step // 3, 20 + step)  # slow, but moving
        assert harness.check_at(5.0 * step) is None
    harness.positions[("in", 0)] = (500, 500)  # caught up: idle for ever is fine
    assert harness.check_at(1000.0) is None
    assert harness.check_at(5000.0) is None
    assert harness.stops == []


def test_nothing_is_judged_while_the_app_rebalances_or_recovers_and_the_clock_starts_again() -> None:
    harness = Harness(positions={("in", 0): (10, 20)})
    assert harness.check_at(0.0) is None
    harness.app.rebalancing = True
    assert harness.check_at(40.0) is None
    harness.app.rebalancing = False
    harness.app.in_recovery = True
    assert harness.check_at(50.0) is None
    harness.app.in_recovery = False
    assert harness.check_at(60.0) is None
    assert harness.check_at(89.9) is None
    assert harness.check_at(90.0) == stalled(30.0)
    assert harness.stops == []
    assert len(harness.reads) == 4  # none while rebalancing or recovering


def test_before_its_first_assignment_and_for_partitions_given_away_nothing_is_judged() -> None:
    harness = Harness(positions={("in", 0): (10, 20), ("in", 1): (0, 7)})
    harness.watch._held = None
    assert harness.check_at(0.0) is None and harness.reads == []
    harness.watch.assigned(HELD)
    harness.check_at(1.0)
    harness.watch.revoked([("in", 0), ("in", 1)])
    assert harness.check_at(100.0) is None
    assert harness.reads[-1] == set() and harness.stops == []


def test_a_broker_that_does_not_answer_is_not_a_stall() -> None:
    harness = Harness(positions={("in", 0): (10, 20)})
    assert harness.check_at(0.0) is None
    harness.failing = True
    assert harness.check_at(100.0) is None
    assert harness.stops == []


def test_a_crashed_app_is_stopped_and_says_so() -> None:
    harness = Harness()
    harness.watch.check_crash()
    assert harness.stops == []
    harness.app.crashed = True
    harness.app.crash_reason = RuntimeError("Cannot flush: Producer not Running")
    assert harness.watch.readiness() == "crashed: RuntimeError('Cannot flush: Producer not Running')"
    harness.watch.check_crash()
    assert harness.stops == [
        (
            "stream-test",
            "a faust service of the worker crashed: RuntimeError('Cannot flush: Producer not Running')",
            "",
        )
    ]


def test_the_watch_threads_stop_a_crashed_worker_within_a_second_and_stop_with_the_worker() -> None:
    harness = Harness()
    stopped = threading.Event()
    harness.watch.crash_check_s = 0.05
    harness.watch._stop = lambda *arguments: (harness.stops.append(arguments), stopped.set())
    harness.watch.start()
    try:
        started = time.monotonic()
        harness.app.crashed = True
        assert stopped.wait(1.0)
        assert time.monotonic() - started < 1.0
    finally:
        harness.watch.stop()
    assert harness.watch._threads == []
    assert not any(thread.name.startswith("stream-test-") for thread in threading.enumerate())


def test_the_stall_detector_trips_only_on_lag_without_progress() -> None:
    detector = StallDetector(timeout_s=45.0)
    waiting = {("detections", 0): (10, 20), ("detections", 1): (5, 5)}
    assert detector.observe(waiting, 0.0) == {("detections", 0): 0.0}
    assert detector.observe(waiting, 44.0) == {("detections", 0): 44.0}
    assert detector.stalled(waiting, 45.0) == [("detections", 0)]
    assert detector.observe({("detections", 0): (11, 20)}, 46.0) == {("detections", 0): 0.0}
    assert detector.last == {("detections", 0): (11, 46.0)}  # a partition no longer given is forgotten


def test_an_app_from_the_factory_is_watched_and_starts_not_ready(tmp_path: Path) -> None:
    app = create_app("stream-test", bootstrap="127.0.0.1:1", data_dir=tmp_path, web_port=None)
    watch = stream_watch(app)
    assert watch is not None and watch.timeout_s == STALL_TIMEOUT_S
    assert app.conf.Agent is RedeliveringAgent
    catalog_topic(app, UPLOADS, "test.")
    assert watch.topics == {"test.uploads.v1"}
    readiness = stream_readiness(app)
    assert (readiness.ready, readiness.status, readiness.reason) == (False, "starting", "recovering its tables")
    assert EXIT_REDELIVER == 75


@pytest.mark.parametrize("timeout_s", [None, 8.0])
def test_the_factory_passes_the_watch_its_timings(tmp_path: Path, timeout_s: float | None) -> None:
    app = create_app(
        "stream-test",
        bootstrap="127.0.0.1:1",
        data_dir=tmp_path,
        stall_timeout_s=timeout_s,
        not_ready_after_s=4.0,
        watch_interval_s=1.0,
    )
    watch = stream_watch(app)
    assert watch is not None
    assert (watch.timeout_s, watch.not_ready_after_s, watch.interval_s) == (timeout_s, 4.0, 1.0)


def test_a_plain_consumer_is_not_ready_while_records_wait_without_progress() -> None:
    now = [0.0]
    positions: dict[Partition, Position] = {("labels", 0): (3, 9), ("labels", 1): (4, 4)}
    check = ConsumerProgress("unused:9092", "group", ["labels"], clock=lambda: now[0], read=lambda: dict(positions))
    assert asyncio.run(run_checks({"progress": check})) == (True, {"progress": "ok"})
    now[0] = 29.9
    assert asyncio.run(run_checks({"progress": check})) == (True, {"progress": "ok"})
    now[0] = 30.0
    assert asyncio.run(run_checks({"progress": check})) == (
        False,
        {
            "progress": "error: ConsumerStalled: no progress for 30 s on 1 partition(s) with records waiting "
            "(labels[0]: committed 3, end 9)"
        },
    )
    positions[("labels", 0)] = (9, 12)  # it moved
    assert asyncio.run(run_checks({"progress": check})) == (True, {"progress": "ok"})
