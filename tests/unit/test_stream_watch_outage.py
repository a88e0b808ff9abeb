"""A broker that restarts is not a stalled stream worker: the outage does not count towards the stall clock.

While the broker is away the worker can make no progress, and once it is back the worker must rejoin its
group before it can; the watch (`michi.bus.stalls.StreamWatch`) starts its clocks again when offsets can
be read, so it judges the worker only on what it does with a broker that answers.
"""

from __future__ import annotations

from types import SimpleNamespace

from michi.bus.stalls import Partition, Position, StreamWatch


class BrokerThatRestarts:
    def __init__(self) -> None:
        self.away = False
        self.positions: dict[Partition, Position] = {("in", 0): (10, 20)}

    def read(self, partitions: set[Partition]) -> dict[Partition, Position]:
        if self.away:
            raise RuntimeError("KafkaError{code=_TIMED_OUT}")
        return {partition: self.positions[partition] for partition in partitions}


def stalled(for_s: float) -> str:
    return f"no progress for {for_s:.0f} s on 1 partition(s) with records waiting (in[0]: committed 10, end 20)"


def test_a_broker_outage_does_not_count_towards_a_stall_and_the_clock_starts_again_once_it_answers() -> None:
    broker = BrokerThatRestarts()
    now = [0.0]
    stops: list[tuple[str, str, str]] = []
    app = SimpleNamespace(crashed=False, crash_reason=None, rebalancing=False, in_recovery=False)
    watch = StreamWatch(
        app,  # type: ignore[arg-type]
        bootstrap="unused:9092",
        service="outage-test",
        stop=lambda *arguments: stops.append(arguments),
        clock=lambda: now[0],
        read=broker.read,
    )
    watch.read_topic("in")
    watch.assigned([("in", 0)])

    def check_at(at: float) -> str | None:
        now[0] = at
        watch.check_progress()
        return watch.readiness()

    assert check_at(0.0) is None
    assert check_at(25.0) is None  # 25 s without progress, records waiting
    broker.away = True
    assert check_at(30.0) is None and check_at(40.0) is None
    broker.away = False
    assert check_at(45.0) is None  # not 45 s without progress: the clock starts again here
    assert check_at(74.9) is None
    assert check_at(75.0) == stalled(30.0)
    assert stops == []
    assert check_at(90.0) == stalled(45.0)
    assert stops == [("outage-test", stalled(45.0), "in")]


class Recovery:
    """faust's `Recovery` as the watch reads it: offsets read per active changelog partition, and what is left."""

    def __init__(self) -> None:
        self.active_offsets: dict[tuple[str, int], int | None] = {("scoring-trips-changelog", 2): 40}
        self.highwater = 100

    def active_remaining_total(self) -> int:
        return self.highwater - sum(offset or 0 for offset in self.active_offsets.values())


class RecoveringWorker:
    """A worker recovering its tables, watched by a `StreamWatch` on a test clock; `check_at` runs one check."""

    def __init__(self) -> None:
        self.broker, self.now = BrokerThatRestarts(), [0.0]
        self.stops: list[tuple[str, str, str]] = []
        self.recovery = Recovery()
        self.app = SimpleNamespace(
            crashed=False,
            crash_reason=None,
            # As faust: `rebalancing` stays set until the recovery ends; each rebalance is counted.
            rebalancing=True,
            rebalancing_count=1,
            in_recovery=True,
            tables=SimpleNamespace(recovery=self.recovery),
        )
        self.watch = StreamWatch(
            self.app,  # type: ignore[arg-type]
            bootstrap="unused:9092",
            service="recovery-test",
            stop=lambda *arguments: self.stops.append(arguments),
            clock=lambda: self.now[0],
            read=self.broker.read,
        )
        self.watch.read_topic("in")
        self.watch.assigned([("in", 0)])

    def check_at(self, at: float) -> None:
        self.now[0] = at
        self.watch.check_progress()


def test_a_table_recovery_that_reads_nothing_for_30_s_stops_the_worker_one_that_reads_never() -> None:
    worker = RecoveringWorker()
    broker, stops, recovery, app, check_at = worker.broker, worker.stops, worker.recovery, worker.app, worker.check_at

    # A slow recovery that reads a little every check is never stopped, however long it takes.
    for step in range(20):
        recovery.active_offsets[("scoring-trips-changelog", 2)] = 40 + step
        check_at(step * 5.0)
    assert stops == []
    # It stops reading: the broker goes away for a while (not a hang), then answers and still nothing is read.
    broker.away = True
    check_at(100.0)
    check_at(140.0)
    broker.away = False
    check_at(145.0)
    check_at(174.0)
    assert stops == []  # 29 s of a broker that answers
    check_at(175.0)
    assert stops == [
        ("recovery-test", "table recovery read nothing for 30 s with 41 changelog records still to read", "")
    ]
    # Everything read and the recovery ends within 30 s: nothing to stop; after it the offsets are judged again.
    stops.clear()
    recovery.active_offsets[("scoring-trips-changelog", 2)] = 100
    check_at(300.0)
    check_at(329.0)
    app.in_recovery = app.rebalancing = False
    check_at(335.0)
    assert stops == []


def test_a_table_recovery_with_nothing_left_that_does_not_end_within_30_s_stops_the_worker() -> None:
    worker = RecoveringWorker()
    broker, stops, recovery, app, check_at = worker.broker, worker.stops, worker.recovery, worker.app, worker.check_at
    recovery.active_offsets[("scoring-trips-changelog", 2)] = 100  # nothing left to read

    # While the broker is away the clock does not run: a recovery cannot end without it.
    broker.away = True
    check_at(0.0)
    check_at(60.0)
    broker.away = False
    check_at(65.0)
    check_at(94.0)
    assert stops == []
    check_at(95.0)
    assert stops == [("recovery-test", "table recovery did not end in 30 s with no changelog record left to read", "")]
    # A new rebalance starts the clock again (faust starts a new recovery).
    stops.clear()
    app.rebalancing_count += 1
    check_at(100.0)
    check_at(129.0)
    assert stops == []
    check_at(130.0)
    assert stops == [("recovery-test", "table recovery did not end in 30 s with no changelog record left to read", "")]


def test_faust_s_own_recovery_is_judged_although_faust_says_it_is_rebalancing_throughout() -> None:
    """The watch reads a real faust app: a rebalance starts, the recovery reads a changelog partition and then
    nothing more (faust-streaming/faust#651), with the broker answering."""
    import faust
    from faust.types import TP

    app = faust.App("stream-watch-probe", broker="kafka://127.0.0.1:1")
    app.Table("device-state", default=int)
    broker, now = BrokerThatRestarts(), [0.0]
    stops: list[tuple[str, str, str]] = []
    watch = StreamWatch(
        app,
        bootstrap="unused:9092",
        service="faust-test",
        stop=lambda *arguments: stops.append(arguments),
        clock=lambda: now[0],
        read=broker.read,
    )
    watch.read_topic("in")
    watch.assigned([("in", 0)])
    recovery = app.tables.recovery
    changelog = TP("stream-watch-probe-device-state-changelog", 0)
    app.on_rebalance_start()
    recovery._set_recovery_started()
    recovery.active_highwaters[changelog] = 99
    for at, offset in ((0.0, 10), (5.0, 20), (10.0, 30)):
        recovery.active_offsets[changelog] = offset
        now[0] = at
        watch.check_progress()
    assert app.rebalancing and app.in_recovery and stops == []
    now[0] = 39.0
    watch.check_progress()
    assert stops == []
    now[0] = 40.0
    watch.check_progress()
    assert stops == [("faust-test", "table recovery read nothing for 30 s with 69 changelog records still to read", "")]
