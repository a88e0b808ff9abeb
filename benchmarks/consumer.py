"""The delay from publish to handling through the kit's consumer loop, at a trickle and at a burst.

    .venv/bin/python -m benchmarks consumer [--quick]

Six services (annotation, camera, monitor, rollouts, trainer, warehouse) read Kafka through
`michi.kit.consumer.ConsumerLoop`; most of what they read comes a few records a second (label requests,
labels, rollout signals, camera media), so what a record waits for its poll batch is most of its delay.

Three paths, one after the other on the same broker, each in its own consumer group on its own fresh
`labels.v1` topic (the catalog's 3 partitions, so no path reads another's records), all with the services'
consumer settings (`michi.bus.consumers.group_consumer_config`):

* **kit**: `ConsumerLoop` in per-record `handle=` mode (as annotation, the trainer and the warehouse use it)
  with a real confluent-kafka consumer and a real `EventProducer` for dead letters, `run(stop)` in a thread;
  it polls with `consume_batch` (the first record within the poll's timeout, then `BATCH_LINGER_S` for the
  rest), decodes by the topic's catalog type, opens a consumer span per record and commits each batch.
* **bare poll** (baseline): `consumer.poll(0.5)` per record and the same decode, no commit: the least delay a
  consumer can have on this broker.
* **bare consume(500, 0.5)** (reference): the same bare loop with `consumer.consume(500, 0.5)`, how the kit
  polled before `consume_batch`: a short batch waits out the whole timeout.

A publisher process of its own (so its loop never holds the GIL the consumer thread needs) stamps each
record with its publish wall time (`time.time()` just before `EventProducer.publish`) in `occurred_at`; the
handler takes `time.time()` minus it (one machine, one clock), so a delay includes the producer's linger
(2 ms) and the broker's round trip, the same on every path. Loads, after a warm-up that
waits for the group's assignment and a first fetch on every partition:

* **trickle**: 20 records/s, evenly spaced, for 10 s (5 s with --quick);
* **burst**: 5,200 records (2,200 with --quick) published at once; besides the percentiles, the delay of the
  last record published and the drain time, from the first publish to the last record handled. Not a multiple
  of the reference's 500: a burst that fills its last batch exactly would hide the wait of a short one.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from confluent_kafka import Consumer

from benchmarks.harness import (
    PREFIX,
    BenchmarkFailed,
    Workspace,
    milliseconds,
    note,
    percentile,
    print_table,
    ratio,
)
from michi.bus.admin import ensure_topics
from michi.bus.catalog import LABELS
from michi.bus.consumers import BATCH_LINGER_S, group_consumer_config
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2
from michi.kit.consumer import ConsumerLoop, Delivered

TRICKLE_RATE = 20.0
# The timeout every path polls with: the kit loop's default, and what the kit passed to `consume` before.
POLL_TIMEOUT_S = 0.5
# The batch the reference path asks `consume` for: the kit loop's default `batch_size`.
REFERENCE_BATCH = 500
# Records published to warm each path up (its group joined, every partition fetched once); not measured.
WARM_UP_RECORDS = 12
# The most any phase may take to be handled once published, before the run is called failed.
PHASE_TIMEOUT_S = 60.0

KIT = "kit ConsumerLoop (consume_batch)"
POLL = "bare poll(0.5) per record (baseline)"
CONSUME = f"bare consume({REFERENCE_BATCH}, {POLL_TIMEOUT_S}) (the kit's poll before, reference)"
PATHS = (KIT, POLL, CONSUME)
TRICKLE = "trickle"
BURST = "burst"
WARM_UP = "warmup"


@dataclass
class Phase:
    """The delays of one load on one path, in seconds, in the order the records were handled."""

    delays: list[float] = field(default_factory=list)
    # Delay of the last record published (the burst's tail), and from the first publish to the last handled.
    last: float = float("nan")
    drain_s: float = float("nan")
    # How long the publisher took to hand the records to its producer (a burst: how "at once" it was).
    published_s: float = float("nan")


class Collector:
    """Takes each handled record's delay; the publishing thread waits on it until a phase is all handled.

    The clock is read before the lock is taken, so waiting for the lock is never counted as delay.
    """

    def __init__(self) -> None:
        self.phases: dict[str, Phase] = {WARM_UP: Phase(), TRICKLE: Phase(), BURST: Phase()}
        self.last_index: dict[str, int] = {}
        self.handled_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)

    def handle(self, message: labels_pb2.Label) -> None:
        now = time.time()
        phase_name, index = message.event_id.split("/")
        published = message.occurred_at.seconds + message.occurred_at.nanos / 1e9
        phase = self.phases[phase_name]
        with self._changed:
            phase.delays.append(now - published)
            self.handled_at[phase_name] = now
            if int(index) == self.last_index.get(phase_name):
                phase.last = now - published
            self._changed.notify_all()

    def wait(self, phase_name: str, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.phases[phase_name].delays) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True


def label(phase: str, index: int) -> labels_pb2.Label:
    """A valid label (so the loop decodes it) stamped with its phase, index and publish wall time."""
    message = labels_pb2.Label(event_id=f"{phase}/{index}", agreement=1.0)
    message.occurred_at.FromNanoseconds(time.time_ns())
    return message


def publisher_process(bootstrap: str, commands: Connection) -> None:
    """Publish what the benchmark asks for, in a process of its own, as a service upstream would.

    In the benchmark's process the publishing loop would hold the GIL the consumer thread needs, and a burst's
    delays would measure the contention. Each command is (topic, phase, count, rate per second or 0 for at
    once); the answer is the seconds the publishing took, once the broker acknowledged every record.
    """
    producer = EventProducer(bootstrap, PREFIX, client_id=f"{PREFIX}consumer-bench-publisher")
    try:
        while (command := commands.recv()) is not None:
            topic, phase, count, rate = command
            began = time.monotonic()
            pending = []
            for index in range(count):
                if rate:
                    pause = began + index / rate - time.monotonic()
                    if pause > 0:
                        time.sleep(pause)
                pending.append(producer.publish(LABELS, f"window-{phase}-{index}", label(phase, index), topic=topic))
            published_s = time.monotonic() - began
            for future in pending:
                future.result(timeout=PHASE_TIMEOUT_S)
            commands.send(published_s)
    except (KeyboardInterrupt, EOFError):
        pass
    finally:
        producer.close(timeout=5.0)


class Publisher:
    """The publisher process (`publisher_process`): started once per run, stopped on the way out."""

    def __init__(self, bootstrap: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands, child = context.Pipe()
        self.process = context.Process(target=publisher_process, args=(bootstrap, child), daemon=True)
        self.process.start()
        child.close()

    def publish(self, topic: str, phase: str, count: int, rate: float = 0.0) -> float:
        """Publish `count` records of `phase` to `topic` (`rate` per second, or at once); the seconds it took."""
        self.commands.send((topic, phase, count, rate))
        if not self.commands.poll(PHASE_TIMEOUT_S + count / (rate or count)):
            raise BenchmarkFailed(f"the publisher did not publish {count} {phase} records in time")
        published_s: float = self.commands.recv()
        return published_s

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.commands.send(None)
        self.process.join(timeout=10.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout=5.0)


# --------------------------------------------------------------------------- the paths


def kit_path(workspace: Workspace, prefix: str, topic: str, collector: Collector) -> Callable[[threading.Event], None]:
    """The kit's loop as a service builds it (`services/*/entrypoints/consumer.py`), handing each label over."""
    consumer = Consumer(group_consumer_config(workspace.bootstrap, prefix, "consumer-bench-kit"))
    dead_letters = EventProducer(workspace.bootstrap, prefix, client_id=f"{prefix}consumer-bench-kit")

    def handle(record: Delivered) -> None:
        assert isinstance(record.message, labels_pb2.Label)
        collector.handle(record.message)

    loop = ConsumerLoop(
        consumer=consumer,
        producer=dead_letters,
        service="consumer-bench-kit",
        topics={topic: LABELS},
        handle=handle,
        failure_reason="processing-error",
    )

    def run(stop: threading.Event) -> None:
        try:
            loop.run(stop, POLL_TIMEOUT_S)
        finally:
            dead_letters.close(timeout=5.0)

    return run


def bare_path(
    workspace: Workspace, prefix: str, topic: str, collector: Collector, batch: int | None
) -> Callable[[threading.Event], None]:
    """A confluent-kafka loop that decodes and hands over, nothing else: `poll` per record, or `consume(batch)`."""
    name = "consumer-bench-poll" if batch is None else "consumer-bench-consume"
    consumer = Consumer(group_consumer_config(workspace.bootstrap, prefix, name))

    def handle(raw: Any) -> None:
        if raw.error() is None:
            collector.handle(labels_pb2.Label.FromString(raw.value() or b""))

    def run(stop: threading.Event) -> None:
        try:
            consumer.subscribe([topic])
            while not stop.is_set():
                if batch is None:
                    record = consumer.poll(POLL_TIMEOUT_S)
                    if record is not None:
                        handle(record)
                else:
                    for record in consumer.consume(batch, POLL_TIMEOUT_S):
                        handle(record)
        finally:
            consumer.close()

    return run


# --------------------------------------------------------------------------- one path under both loads


def measure(workspace: Workspace, publisher: Publisher, path: str, *, trickle_s: float, burst: int) -> dict[str, Phase]:
    prefix = f"{PREFIX}consumer-{PATHS.index(path)}-{uuid.uuid4().hex[:6]}."
    ensure_topics(workspace.bootstrap, prefix, [LABELS])
    topic = LABELS.name(prefix)
    collector = Collector()
    if path == KIT:
        run = kit_path(workspace, prefix, topic, collector)
    else:
        run = bare_path(workspace, prefix, topic, collector, None if path == POLL else REFERENCE_BATCH)
    stop = threading.Event()
    failures: list[BaseException] = []

    def consume() -> None:
        try:
            run(stop)
        except BaseException as error:  # handed to the main thread, which fails the run
            failures.append(error)

    thread = threading.Thread(target=consume, name="consumer-bench", daemon=True)
    thread.start()
    try:
        note(f"consumer: {path}: warming up (group join, a first fetch on every partition)")
        collector.last_index[WARM_UP] = WARM_UP_RECORDS - 1
        publisher.publish(topic, WARM_UP, WARM_UP_RECORDS)
        _wait(collector, WARM_UP, WARM_UP_RECORDS, path, failures)

        count = round(trickle_s * TRICKLE_RATE)
        note(f"consumer: {path}: trickle, {count} records at {TRICKLE_RATE:.0f}/s")
        collector.last_index[TRICKLE] = count - 1
        publisher.publish(topic, TRICKLE, count, TRICKLE_RATE)
        _wait(collector, TRICKLE, count, path, failures)
        # Let the last trickle batch be committed before the burst, so the burst starts on an idle loop.
        time.sleep(1.0)

        note(f"consumer: {path}: burst, {burst:,} records at once")
        collector.last_index[BURST] = burst - 1
        first_published = time.time()
        collector.phases[BURST].published_s = publisher.publish(topic, BURST, burst)
        _wait(collector, BURST, burst, path, failures)
        collector.phases[BURST].drain_s = collector.handled_at[BURST] - first_published
    finally:
        stop.set()
        thread.join(timeout=30.0)
    if failures:
        raise BenchmarkFailed(f"{path} failed: {failures[0]!r}")
    return {TRICKLE: collector.phases[TRICKLE], BURST: collector.phases[BURST]}


def _wait(collector: Collector, phase: str, count: int, path: str, failures: list[BaseException]) -> None:
    if not collector.wait(phase, count, PHASE_TIMEOUT_S) or failures:
        handled = len(collector.phases[phase].delays)
        cause = f": {failures[0]!r}" if failures else ""
        raise BenchmarkFailed(
            f"{path}: {handled} of {count} {phase} records handled within {PHASE_TIMEOUT_S:.0f} s{cause}"
        )


# --------------------------------------------------------------------------- the figures


@dataclass
class ConsumerFigures:
    # path -> load -> delays
    phases: dict[str, dict[str, Phase]]
    trickle_s: float
    burst: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]


def print_figures(figures: ConsumerFigures) -> None:
    baseline = figures.phases[POLL]
    rows = []
    for load in (TRICKLE, BURST):
        for path in PATHS:
            phase = figures.phases[path][load]
            p50, p95 = percentile(phase.delays, 0.5), percentile(phase.delays, 0.95)
            base = baseline[load]
            rows.append(
                [
                    f"{load}: {path}",
                    f"{len(phase.delays):,}",
                    milliseconds(p50),
                    milliseconds(p95),
                    milliseconds(max(phase.delays)),
                    milliseconds(phase.last) if load == BURST else "-",
                    f"{phase.drain_s:.2f}" if load == BURST else "-",
                    ratio(p50, percentile(base.delays, 0.5)),
                    ratio(p95, percentile(base.delays, 0.95)),
                ]
            )
    print_table(
        f"consumer loop: delay from publish to handling, {LABELS.base_name} ({LABELS.partitions} partitions); "
        f"trickle {TRICKLE_RATE:.0f} records/s for {figures.trickle_s:.0f} s, burst {figures.burst:,} at once",
        ["load: path", "records", "p50 ms", "p95 ms", "max ms", "last ms", "drain s", "p50 vs poll", "p95 vs poll"],
        rows,
    )
    kit, reference = figures.phases[KIT][TRICKLE], figures.phases[CONSUME][TRICKLE]
    print(
        f"  trickle: the kit's p50 is {milliseconds(percentile(kit.delays, 0.5) - percentile(baseline[TRICKLE].delays, 0.5))} ms "
        f"over the bare poll (its linger BATCH_LINGER_S is {BATCH_LINGER_S * 1000:.0f} ms); "
        f"consume({REFERENCE_BATCH}, {POLL_TIMEOUT_S}) waits up to its timeout: max {milliseconds(max(reference.delays))} ms, "
        f"p50 {ratio(percentile(reference.delays, 0.5), percentile(kit.delays, 0.5))} the kit's"
    )
    print(
        "  the publisher process handed each burst to its producer in "
        + ", ".join(f"{figures.phases[path][BURST].published_s * 1000:.0f}" for path in PATHS)
        + " ms (in the order above); every delay counts from its own record's publish"
    )
    print(
        "  load average (1, 5, 15 min) before "
        + " / ".join(f"{value:.2f}" for value in figures.load_before)
        + ", after "
        + " / ".join(f"{value:.2f}" for value in figures.load_after)
    )


def run(*, quick: bool = False) -> ConsumerFigures:
    trickle_s = 5.0 if quick else 10.0
    burst = 2_200 if quick else 5_200
    load_before = os.getloadavg()
    with Workspace("consumer") as workspace:
        publisher = Publisher(workspace.bootstrap)
        try:
            phases = {path: measure(workspace, publisher, path, trickle_s=trickle_s, burst=burst) for path in PATHS}
        finally:
            publisher.stop()
    figures = ConsumerFigures(phases, trickle_s, burst, load_before, os.getloadavg())
    print_figures(figures)
    return figures
