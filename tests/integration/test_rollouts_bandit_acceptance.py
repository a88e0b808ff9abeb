"""Issue 18's bandit acceptance through the rollout controller's own store and decision code: arms of true label
agreement 0.90 (the candidate) and 0.85 (the champion), 20,000 delayed labels; the better arm ends with at least
80 % of the traffic, and the same after the controller dies in the middle.

Each simulated hour, 100 random-QA windows are served: each from a random device placed on its arm by the split of
the plan the registry serves now (`serving_split`, inference's routing), its correctness drawn from the arm's
accuracy. People label a window 2 to 6 hours later: each hour's labels arrive shuffled, a tenth of them delivered
twice. The label requests and labels go through `OutcomeRecorder` into `RolloutsStore` (SQLite), and the controller
looks (`RolloutController.tick`) once per hour: Beta posteriors from the SQL windows, `decide_allocation`, a weight
change through the registry. 200 hours of windows, 207 looks, 20,000 labels.

The bandit's policy keeps it allocating to the end: minimum share 5 %, an allocation at most every 10 minutes (so
at every hourly look) when a share moves by more than 2 points, and automatic promotion and rollback off (else it
promotes the candidate after a few hours; `decide_allocation` then says "a person ends it").

The crash: in hour 100, after the first half of that hour's labels were kept (each hour's labels come in two polls,
each kept in one transaction, as the consumer keeps a batch), the SQLite file is copied as it stands (what a process
killed with SIGKILL at that instant leaves) and the run goes on. Then a new registry, store and controller are built on the copy, nothing closed or flushed, the whole hour's
labels are delivered again (Kafka redelivers what was not committed) and the same remaining traffic is driven.

What is asserted is the issue's criterion, the better arm at 80 % or more of the devices after the 20,000 labels
(and at every look of the last 100 hours), with every label counted once, and the crashed run publishing exactly
the shares the uninterrupted one did, hour by hour (it resumes on a copy of the same database). Not an exact final
share: the bandit publishes a new allocation only when a share moves by more than 2 points, so it settles on the
first allocation within 2 points of the floor's 95 %, anywhere in (93 %, 95 %] depending on the path.

Random, and seeded: the devices and the windows' correctness (numpy, seed 18); the rollout id the registry draws at
the start (`secrets`), which places each device on its arm and so decides the whole path (the registries here are
built with `rollout_ids=seeded_rollout_ids`, which fixes it; with drawn ids the final share was below 95 % in one
run in three, which failed the exact 95 % these tests asserted at fe162f9); and the Thompson draws, which
`michi.rollouts.bandit` seeds from the posteriors, so equal counts give equal shares.

The second test does the same with the real `python -m services.rollouts` process on the session's Kafka broker
(20 batches of 1,000 windows), killed with SIGKILL while it keeps the first half of batch 10's labels (the second
half is published once it is dead) and started again: every label counted once, the better arm at 80 % or more,
and the posteriors of its last look made of every label once. The rollout is started in the test's process, so the
controller process finds the seeded id in the database and draws none.

The third test is a bandit over three arms (`michi rollouts start risk 2 3 --strategy bandit`): candidates of true
agreement 0.90 and 0.80 against a champion at 0.85, the same fleet and labels as the first test (no crash): the best
arm at 80 % or more after the 20,000 labels, every arm at its floor or above at every look.

Run: .venv/bin/python -m pytest tests/integration/test_rollouts_bandit_acceptance.py -q -s   (prints the figures and
each test's duration)
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from michi.bus.catalog import LABEL_REQUESTS, LABELS
from michi.bus.producer import EventProducer
from michi.contracts.v1 import labels_pb2, operations_pb2
from michi.infra.processes import free_port, wait_until
from michi.registry import ModelRegistry
from michi.registry.rollout_status import new_rollout_id
from michi.rollouts.bandit import BanditPolicy
from services.rollouts.adapters.metrics import RolloutsMetrics
from services.rollouts.adapters.store import RolloutsStore
from services.rollouts.handlers import BANDIT_ACTOR, OutcomeRecorder, RolloutController, serving_split

from ..fakes import RecordingPlanPublisher
from ..unit.test_rollouts_controller import BRAKING, CANDIDATE, CHAMPION, MODEL, NORMAL, qa_label, qa_request

ACCURACY = {CANDIDATE: 0.90, CHAMPION: 0.85}
HOURS = 200
WINDOWS_PER_HOUR = 100
# A window's label arrives 2 to 6 hours after it was served (drawn per window).
LABEL_DELAY_HOURS = (2, 6)
LAST_HOUR = HOURS + LABEL_DELAY_HOURS[1]
REDELIVERED = 0.1
CRASH_HOUR = 100
SEED = 18
# The random part of the rollout id (`ro-<model>-<candidate>-<8 hex>`), which places every device on its arm.
ROLLOUT_HEX = "5eed0018"
HOUR = 3600.0
POLICY = BanditPolicy(
    minimum_share=0.05,
    allocation_interval_seconds=600.0,
    minimum_change=0.02,
    end_probability=0.95,
    minimum_rewards_per_arm=200,
    automatic_promotion=False,
    automatic_rollback=False,
)


def seeded_rollout_ids(name: str, version: str) -> str:
    """The registries' rollout id source: the id of `ROLLOUT_HEX` instead of a random one, the same path every run."""
    return new_rollout_id(name, version, ROLLOUT_HEX)


@pytest.fixture
def seeded_rollout_id() -> str:
    """The id the rollout under test gets from `seeded_rollout_ids`."""
    return seeded_rollout_ids(MODEL, CANDIDATE)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Controller:
    """The registry, the controller's store and the controller on one database, as a process holds them."""

    url: str
    started: float = 0.0
    clock: Clock = field(default_factory=lambda: Clock(0.0))

    def __post_init__(self) -> None:
        self.registry = ModelRegistry.from_url(self.url, RecordingPlanPublisher(), rollout_ids=seeded_rollout_ids)
        self.store = RolloutsStore.from_url(self.url)
        metrics = RolloutsMetrics()
        self.recorder = OutcomeRecorder(windows=self.store, reports=metrics)
        self.controller = RolloutController(
            registry=self.registry,
            windows=self.store,
            progress=self.store,
            reports=metrics,
            interval_s=0.0,
            signals=self.store,
            bandit_policy=POLICY,
            clock=self.clock,
        )

    def candidate_share(self) -> float:
        rollout = self.registry.active_rollout(MODEL)
        assert rollout is not None, "the bandit ended: its policy should keep it allocating"
        return round(rollout.weight_percent / 100.0, 6)

    def close(self) -> None:
        self.store.close()
        self.registry.close()


@dataclass
class Traffic:
    """The fleet's random-QA windows and the labels people give them later (all draws from one seeded generator)."""

    rng: np.random.Generator
    pending: dict[int, list[labels_pb2.Label]] = field(default_factory=dict)
    windows: int = 0
    accuracy: dict[str, float] = field(default_factory=lambda: dict(ACCURACY))
    served: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.served = self.served or dict.fromkeys(self.accuracy, 0)

    def serve_hour(
        self, hour: int, plan: operations_pb2.RolloutPlan, at: float, windows: int = WINDOWS_PER_HOUR
    ) -> list[labels_pb2.LabelRequest]:
        """The hour's random-QA label requests, each window on the arm `plan` serves its device; its label due later."""
        split = serving_split(plan)
        assert split is not None
        requests = []
        for device_number in self.rng.integers(0, 1_000_000, size=windows):
            version = split.route(f"device-{device_number:06d}").arm
            correct = bool(self.rng.random() < self.accuracy[version])
            window = f"window-{self.windows:06d}"
            self.windows += 1
            self.served[version] += 1
            requests.append(qa_request(window, version, BRAKING, at))
            label = qa_label(window, version, BRAKING if correct else NORMAL)
            delay = int(self.rng.integers(LABEL_DELAY_HOURS[0], LABEL_DELAY_HOURS[1] + 1))
            self.pending.setdefault(hour + delay, []).append(label)
        return requests

    def labels_of(self, hour: int) -> list[labels_pb2.Label]:
        """This hour's labels, shuffled, a tenth of them delivered twice."""
        due = self.pending.pop(hour, [])
        again = [due[index] for index in self.rng.choice(len(due), size=int(len(due) * REDELIVERED), replace=False)]
        delivery = due + again
        return [delivery[index] for index in self.rng.permutation(len(delivery))]


@dataclass
class Run:
    shares: dict[int, float] = field(default_factory=dict)  # hour -> the candidate's share after that hour's look
    traffic: dict[int, dict[str, int]] = field(default_factory=dict)  # hour -> windows served per arm


def drive(controller: Controller, traffic: Traffic, run: Run, hours: range, *, crash: Path | None = None) -> dict:
    """Serve, label and look hour by hour; with `crash`, copy the database half-way through CRASH_HOUR's labels and
    return what the fleet and people hold at that instant (the traffic's generator state, the hour's delivery)."""
    held: dict = {}
    for hour in hours:
        before = dict(traffic.served)
        if hour < HOURS:
            at = controller.started + hour * HOUR + 60.0
            for request in traffic.serve_hour(hour, controller.registry.current_plan(MODEL), at):
                controller.recorder.request(request)
            controller.recorder.flush()
        labels = traffic.labels_of(hour)
        # The hour's labels come in two polls, each kept in one transaction (as the consumer keeps a batch).
        half = len(labels) // 2
        for index, label in enumerate(labels):
            if index == half:
                controller.recorder.flush()
                if crash is not None and hour == CRASH_HOUR:
                    copy_database(controller.url, crash)
                    held = {"traffic": copy.deepcopy(traffic), "labels": list(labels), "run": copy.deepcopy(run)}
            controller.recorder.label(label)
        controller.recorder.flush()
        controller.clock.now = controller.started + hour * HOUR + 1800.0
        controller.controller.tick()
        run.shares[hour] = controller.candidate_share()
        run.traffic[hour] = {version: traffic.served[version] - before[version] for version in before}
    return held


def copy_database(url: str, target: Path) -> None:
    source = sqlite3.connect(url.removeprefix("sqlite:///"))
    destination = sqlite3.connect(target)
    try:
        source.backup(destination)
    finally:
        destination.close()
        source.close()


def test_the_better_arm_gets_over_80_percent_after_20k_delayed_labels_and_the_same_after_a_crash(
    tmp_path: Path, seeded_rollout_id: str
) -> None:
    began = time.monotonic()
    # Many small committed transactions: on a memory-backed folder when there is one (the same SQLite).
    folder = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else tmp_path
    try:
        run_the_bandit(folder, began, seeded_rollout_id)
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)


def run_the_bandit(folder: Path, began: float, rollout_id: str) -> None:
    url = f"sqlite:///{folder / 'michi.db'}"
    setup = ModelRegistry.from_url(url, RecordingPlanPublisher(), rollout_ids=seeded_rollout_ids)
    for number in (1, 2):
        setup.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
    setup.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
    setup.start_rollout(MODEL, CANDIDATE, actor="person", reason="let the labels decide", strategy="bandit")
    started = setup.rollouts(MODEL)[0].started_at.timestamp()
    setup.close()

    reference = Run()
    controller = Controller(url, started=started)
    traffic = Traffic(np.random.default_rng(SEED))
    crash_copy = folder / "killed.db"
    held = drive(controller, traffic, reference, range(LAST_HOUR + 1), crash=crash_copy)
    counts = {version: controller.store.arm_counts(MODEL, version, started) for version in (CANDIDATE, CHAMPION)}
    history = controller.registry.rollout_history(MODEL)
    assert history[0].rollout_id == rollout_id
    posteriors = (controller.store.load(rollout_id) or {})["bandit"]["arms"]
    controller.close()
    uninterrupted_s = time.monotonic() - began

    # Killed half-way through hour 100's labels: a new process on what the database held then, the hour's labels
    # delivered again in full, the fleet and people going on as they would have.
    restarted = Controller(f"sqlite:///{crash_copy}", started=started)
    try:
        resumed: Run = held["run"]
        resumed_traffic: Traffic = held["traffic"]
        for label in held["labels"]:
            restarted.recorder.label(label)
        restarted.recorder.flush()
        restarted.clock.now = started + CRASH_HOUR * HOUR + 1800.0
        restarted.controller.tick()
        resumed.shares[CRASH_HOUR] = restarted.candidate_share()
        drive(restarted, resumed_traffic, resumed, range(CRASH_HOUR + 1, LAST_HOUR + 1))
        resumed_counts = {
            version: restarted.store.arm_counts(MODEL, version, started) for version in (CANDIDATE, CHAMPION)
        }
        resumed_posteriors = (restarted.store.load(rollout_id) or {})["bandit"]["arms"]
    finally:
        restarted.close()

    labelled = sum(count.labelled for count in counts.values())
    final = reference.shares[LAST_HOUR]
    last_hours = range(HOURS - 20, HOURS)
    served_late = sum(reference.traffic[hour][CANDIDATE] for hour in last_hours) / (20 * WINDOWS_PER_HOUR)
    allocations = [decision for decision in history if decision.action == "set-weight"]
    print(
        f"\nbandit 0.90 vs 0.85: {labelled} labels ({int(HOURS * WINDOWS_PER_HOUR * REDELIVERED)} delivered twice); "
        f"better arm's share {final:.2%} (after the crash {resumed.shares[LAST_HOUR]:.2%}), "
        f"{served_late:.1%} of the windows of hours 180-199; {len(allocations)} allocations; shares by hour "
        f"{[reference.shares[hour] for hour in range(0, 24)]} (hours 0-23), then {reference.shares[50]}, {reference.shares[100]}, {reference.shares[LAST_HOUR]}; "
        f"candidate {counts[CANDIDATE].correct}/{counts[CANDIDATE].labelled}, "
        f"champion {counts[CHAMPION].correct}/{counts[CHAMPION].labelled}; "
        f"uninterrupted run {uninterrupted_s:.0f} s, whole test {time.monotonic() - began:.0f} s"
    )
    assert labelled == HOURS * WINDOWS_PER_HOUR == 20_000, "every label counted once, redeliveries never"
    assert final >= 0.80, "issue 18: the better arm gets at least 80 % of the traffic after 20k delayed labels"
    assert all(reference.shares[hour] >= 0.80 for hour in range(LAST_HOUR - 100, LAST_HOUR + 1)), reference.shares
    assert final <= round(1.0 - POLICY.minimum_share, 6), "the champion keeps its exploration floor"
    assert served_late >= 0.80, "the fleet's windows follow the shares"
    assert allocations and {decision.actor for decision in allocations} == {BANDIT_ACTOR}
    # The controller killed in the middle: the same posteriors, so exactly the same shares, hour by hour.
    assert resumed.shares == reference.shares
    assert resumed_counts == counts
    assert resumed_posteriors == posteriors


# --- the same with the real controller process, killed with SIGKILL, on the session's Kafka broker

BATCHES = 20
WINDOWS_PER_BATCH = 1000
KILL_BATCH = 10


def start_controller(environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m services.rollouts` as `michi up` runs it."""
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "services.rollouts"], env=environment, stdout=output, stderr=subprocess.STDOUT
        )


def test_the_same_after_a_kill_9_of_the_controller_process_in_the_middle(
    kafka_bootstrap: str, topic_prefix: str, producer: EventProducer, tmp_path: Path, seeded_rollout_id: str
) -> None:
    """`python -m services.rollouts` reads 20,000 label requests and their delayed labels (2-6 batches of 1,000 later,
    shuffled, a tenth twice) from `michi.label-requests.v1` and `michi.labels.v1`; after each batch the test waits
    until the controller kept it and looked at it (its allocation, if any, committed), and routes the next batch by
    the plan the registry then serves. In batch 10 only the first half of the labels is published; as soon as the
    controller has kept one of them it is killed with SIGKILL (part-way through that half, or just after it), the
    second half is published and a new one started: Kafka redelivers what the dead one had not committed. Random beyond the seeded draws: when the
    controller's 0.2 s looks fall within a batch (an allocation from part of a batch), so the path differs from run
    to run and only the criterion is asserted at the end."""
    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else tmp_path
    url = f"sqlite:///{folder / 'michi.db'}"
    setup = ModelRegistry.from_url(url, RecordingPlanPublisher(), rollout_ids=seeded_rollout_ids)
    for number in (1, 2):
        setup.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
    setup.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
    setup.close()
    registry = ModelRegistry.from_url(url, producer, rollout_ids=seeded_rollout_ids)
    registry.start_rollout(MODEL, CANDIDATE, actor="person", reason="let the labels decide", strategy="bandit")
    rollout = registry.rollouts(MODEL)[0]
    assert rollout.rollout_id == seeded_rollout_id
    started = rollout.started_at.timestamp()
    store = RolloutsStore.from_url(url)
    environment = {
        **os.environ,
        "MICHI_HOME": str(folder / ".michi"),
        "MICHI_DATABASE_URL": url,
        "MICHI_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "MICHI_TOPIC_PREFIX": topic_prefix,
        "MICHI_ROLLOUTS_PORT": str(free_port()),
        "MICHI_ROLLOUTS_INTERVAL_S": "0.2",
        "MICHI_ROLLOUTS_BANDIT_INTERVAL_S": "0.01",
        "MICHI_ROLLOUTS_BANDIT_MINIMUM_SHARE": str(POLICY.minimum_share),
        "MICHI_ROLLOUTS_BANDIT_MINIMUM_CHANGE": str(POLICY.minimum_change),
        "MICHI_ROLLOUTS_BANDIT_AUTOMATIC_PROMOTION": "false",
        "MICHI_ROLLOUTS_BANDIT_AUTOMATIC_ROLLBACK": "false",
    }
    environment.pop("MICHI_ROLLOUTS_POLICY", None)
    log = tmp_path / "rollouts.log"
    process = start_controller(environment, log)

    def kept() -> tuple[int, int]:
        counts = [store.arm_counts(MODEL, version, started) for version in (CANDIDATE, CHAMPION)]
        return sum(count.requested for count in counts), sum(count.labelled for count in counts)

    def settled_look_after(moment: float) -> Callable[[], bool]:
        """A look that began after `moment` (so it saw everything kept by then), and its allocation committed: the
        controller saves the look, then publishes the weight through the registry, then notes `allocated_at`."""

        def settled() -> bool:
            state = store.load(rollout.rollout_id) or {}
            look = state.get("bandit") or {}
            at = float(look.get("at", 0.0))
            return at > moment and (look.get("step") != "allocate" or float(state.get("allocated_at", 0.0)) == at)

        return settled

    def labelled_beyond(before: int) -> Callable[[], bool]:
        return lambda: kept()[1] > before

    def kept_all(expected: tuple[int, int]) -> Callable[[], bool]:
        return lambda: kept() == expected

    def publish(requests: list[labels_pb2.LabelRequest], labels: list[labels_pb2.Label]) -> None:
        for request in requests:
            producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
        for label in labels:
            producer.publish(LABELS, label.lineage.window_id, label)
        assert producer.flush(30) == 0

    traffic = Traffic(np.random.default_rng(SEED))
    requested = 0
    labelled_windows: set[str] = set()
    shares: dict[int, float] = {}
    # Seconds spent waiting for the controller to keep each batch, and for its look after that.
    waited = {"kept": 0.0, "looks": 0.0}
    killed_with: tuple[int, int] | None = None
    try:
        for batch in range(BATCHES + LABEL_DELAY_HOURS[1] + 1):
            requests = (
                traffic.serve_hour(batch, registry.current_plan(MODEL), started + 1.0 + batch, WINDOWS_PER_BATCH)
                if batch < BATCHES
                else []
            )
            labels = traffic.labels_of(batch)
            requested += len(requests)
            if batch == KILL_BATCH:
                # Every earlier batch was kept in full: what is labelled beyond this count is this batch's.
                before = len(labelled_windows)
                half = len(labels) // 2
                publish(requests, labels[:half])
                assert wait_until(labelled_beyond(before), 60, 0.01), log.read_text()[-3000:]
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
                killed_with = (kept()[1] - before, len({label.lineage.window_id for label in labels}))
                publish([], labels[half:])
                process = start_controller(environment, log)
            else:
                publish(requests, labels)
            labelled_windows |= {label.lineage.window_id for label in labels}
            waiting = time.monotonic()
            assert wait_until(kept_all((requested, len(labelled_windows))), 120, 0.1), (
                kept(),
                (requested, len(labelled_windows)),
                log.read_text()[-3000:],
            )
            waited["kept"] += time.monotonic() - waiting
            waiting = time.monotonic()
            assert wait_until(settled_look_after(time.time()), 60, 0.05), log.read_text()[-3000:]
            waited["looks"] += time.monotonic() - waiting
            active = registry.active_rollout(MODEL)
            assert active is not None, "the bandit ended: its policy should keep it allocating"
            shares[batch] = round(active.weight_percent / 100.0, 6)
        counts = {version: store.arm_counts(MODEL, version, started) for version in (CANDIDATE, CHAMPION)}
        last_look = ((store.load(rollout.rollout_id) or {}).get("bandit") or {}).get("arms", {})
        history = registry.rollout_history(MODEL)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        store.close()
        registry.close()
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)

    final = shares[max(shares)]
    allocations = [decision for decision in history if decision.action == "set-weight"]
    assert killed_with is not None
    print(
        f"\nbandit 0.90 vs 0.85 in `python -m services.rollouts` on Kafka, killed with SIGKILL in batch {KILL_BATCH} "
        f"after {killed_with[0]} of its {killed_with[1]} labelled windows were kept: "
        f"{sum(count.labelled for count in counts.values())} labels counted; better arm's share {final:.2%}; "
        f"{len(allocations)} allocations; shares by batch {[shares[batch] for batch in sorted(shares)][:12]}...; "
        f"candidate {counts[CANDIDATE].correct}/{counts[CANDIDATE].labelled}, "
        f"champion {counts[CHAMPION].correct}/{counts[CHAMPION].labelled}; {time.monotonic() - began:.0f} s "
        f"({waited['kept']:.0f} s waiting for the controller to keep the batches, {waited['looks']:.0f} s for its looks)"
    )
    assert 0 < killed_with[0] < killed_with[1], "killed part-way through the batch's labels"
    assert sum(count.requested for count in counts.values()) == BATCHES * WINDOWS_PER_BATCH == 20_000
    assert sum(count.labelled for count in counts.values()) == 20_000, "every label counted once after the kill"
    assert final >= 0.80, "issue 18: the better arm gets at least 80 % of the traffic after 20k delayed labels"
    assert final <= round(1.0 - POLICY.minimum_share, 6), "the champion keeps its exploration floor"
    assert allocations and {decision.actor for decision in allocations} == {BANDIT_ACTOR}
    # The restarted controller's last look: each arm's posterior is the prior plus every label once.
    for version, count in counts.items():
        arm = last_look[version]
        assert (arm["labelled"], arm["correct"]) == (count.labelled, count.correct)
        assert (arm["alpha"], arm["beta"]) == (1.0 + count.correct, 1.0 + count.labelled - count.correct)


# --- a bandit over three arms: candidates 0.90 and 0.80 against a champion at 0.85

CHALLENGER = "3"
THREE_ARMS = {CANDIDATE: 0.90, CHAMPION: 0.85, CHALLENGER: 0.80}


def test_a_bandit_over_three_arms_gives_the_best_over_80_percent_after_20k_delayed_labels(
    tmp_path: Path, seeded_rollout_id: str
) -> None:
    """`michi rollouts start risk 2 3 --strategy bandit`: candidates 2 (true agreement 0.90) and 3 (0.80) against
    champion 1 (0.85), the same fleet, delays and redeliveries as above, 200 hours, 20,000 labels. The best arm ends
    with at least 80 % of the devices (and has it at every look of the last 100 hours), every other arm keeps its
    5 % floor at every look, every label counts once, and the last look's posteriors are the prior plus every label.
    (The crash and restart are the two-arm test's; restoring three arms exactly is
    `tests/unit/test_rollouts_bandit.py`.)"""
    began = time.monotonic()
    folder = Path(tempfile.mkdtemp(dir="/dev/shm")) if Path("/dev/shm").is_dir() else tmp_path
    try:
        url = f"sqlite:///{folder / 'michi.db'}"
        setup = ModelRegistry.from_url(url, RecordingPlanPublisher(), rollout_ids=seeded_rollout_ids)
        for number in (1, 2, 3):
            setup.register(MODEL, f"file:///{number}.onnx", f"{number}" * 64, "code", "data", {}, {}, created_by="test")
        setup.promote(MODEL, CHAMPION, actor="test", reason="bootstrap")
        setup.start_rollout(
            MODEL, CANDIDATE, actor="person", reason="three arms", strategy="bandit", more_versions=[CHALLENGER]
        )
        rollout = setup.rollouts(MODEL)[0]
        assert rollout.rollout_id == seeded_rollout_id and rollout.arms == (CANDIDATE, CHALLENGER, CHAMPION)
        started = rollout.started_at.timestamp()
        setup.close()

        controller = Controller(url, started=started)
        traffic = Traffic(np.random.default_rng(SEED), accuracy=dict(THREE_ARMS))
        shares: dict[int, dict[str, float]] = {}
        served: dict[int, dict[str, int]] = {}
        try:
            for hour in range(LAST_HOUR + 1):
                before = dict(traffic.served)
                if hour < HOURS:
                    at = started + hour * HOUR + 60.0
                    for request in traffic.serve_hour(hour, controller.registry.current_plan(MODEL), at):
                        controller.recorder.request(request)
                    controller.recorder.flush()
                for label in traffic.labels_of(hour):
                    controller.recorder.label(label)
                controller.recorder.flush()
                controller.clock.now = started + hour * HOUR + 1800.0
                controller.controller.tick()
                active = controller.registry.active_rollout(MODEL)
                assert active is not None, "the bandit ended: its policy should keep it allocating"
                shares[hour] = {version: percent / 100.0 for version, percent in active.weights}
                shares[hour][CHAMPION] = active.champion_percent / 100.0
                served[hour] = {version: traffic.served[version] - before[version] for version in before}
            counts = {version: controller.store.arm_counts(MODEL, version, started) for version in THREE_ARMS}
            last_look = (controller.store.load(seeded_rollout_id) or {})["bandit"]["arms"]
            history = controller.registry.rollout_history(MODEL)
        finally:
            controller.close()
    finally:
        if folder != tmp_path:
            shutil.rmtree(folder, ignore_errors=True)

    final = shares[LAST_HOUR]
    last_hours = range(HOURS - 20, HOURS)
    served_late = sum(served[hour][CANDIDATE] for hour in last_hours) / (20 * WINDOWS_PER_HOUR)
    allocations = [decision for decision in history if decision.action == "set-weight"]
    first_80 = next(hour for hour in sorted(shares) if shares[hour][CANDIDATE] >= 0.80)
    print(
        f"\nbandit 0.90 / 0.85 / 0.80 (candidate 2, champion 1, candidate 3): "
        f"{sum(count.labelled for count in counts.values())} labels; final shares "
        f"{ {version: round(share, 4) for version, share in final.items()} }; the best at 80 % or more from hour "
        f"{first_80}; {served_late:.1%} of the windows of hours 180-199 on the best; {len(allocations)} allocations; "
        + ", ".join(f"{version} {counts[version].correct}/{counts[version].labelled}" for version in THREE_ARMS)
        + f"; {time.monotonic() - began:.0f} s"
    )
    assert sum(count.labelled for count in counts.values()) == HOURS * WINDOWS_PER_HOUR, "every label once"
    assert final[CANDIDATE] >= 0.80, "the best of three arms gets at least 80 % after 20k delayed labels"
    assert all(shares[hour][CANDIDATE] >= 0.80 for hour in range(LAST_HOUR - 100, LAST_HOUR + 1)), shares
    assert all(min(look.values()) >= POLICY.minimum_share - 1e-9 for look in shares.values()), "every floor kept"
    assert served_late >= 0.75, "the fleet's windows follow the shares"
    assert allocations and {decision.actor for decision in allocations} == {BANDIT_ACTOR}
    for version, count in counts.items():
        arm = last_look[version]
        assert (arm["labelled"], arm["correct"]) == (count.labelled, count.correct)
        assert (arm["alpha"], arm["beta"]) == (1.0 + count.correct, 1.0 + count.labelled - count.correct)
