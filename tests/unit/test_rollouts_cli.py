"""`michi rollouts start --strategy bandit`, and `status` and `history` of a bandit: the posteriors, rewards and
shares of the policy's last allocation, from the registry's audited decisions; `status` reads the settings once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from michi.contracts.v1 import operations_pb2
from michi.registry import ModelRegistry
from michi.rollouts.bandit import ArmRewards, BanditPolicy, decide_allocation

from ..fakes import RecordingPlanPublisher
from .test_cli_rollouts import MODEL, RecordingProducer, database_url, invoke

__all__ = ["database_url"]  # the fixture, used by name


def test_a_bandit_started_from_the_cli_shows_its_posteriors_and_allocations(database_url: str) -> None:
    started = invoke("start", MODEL, "2", "--strategy", "bandit", "--reason", "let labels decide")
    assert started.exit_code == 0, started.output
    assert RecordingProducer.PLANS[-1].strategy == operations_pb2.ROLLOUT_STRATEGY_BANDIT
    waiting = invoke("status", MODEL)
    assert "bandit 50%" in waiting.output and "bandit: no allocation yet" in waiting.output

    decided = decide_allocation(
        {"2": ArmRewards(45, 50), "1": ArmRewards(30, 50)},
        champion="1",
        current={"2": 0.5, "1": 0.5},
        last_allocated_at=0.0,
        now=3600.0,
        policy=BanditPolicy(),
    )
    evidence = decided.evidence()
    evidence["arms"]["2"]["arm"], evidence["arms"]["1"]["arm"] = "candidate", "champion"
    registry = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    registry.set_rollout_weight(
        MODEL, decided.shares["2"] * 100, actor="policy:bandit", reason="bandit allocation: ...", evidence=evidence
    )
    registry.close()

    status = invoke("status", MODEL)
    assert status.exit_code == 0, status.output
    assert "bandit 95%" in status.output
    assert "candidate 2: Beta(46, 6), 45/50 labels agree, P(best) 1.000, share 50.00% -> 95.00%" in status.output
    assert "champion 1: Beta(31, 21), 30/50 labels agree" in status.output
    shown = json.loads(invoke("status", MODEL, "--json").output)
    assert shown["bandit"]["arms"]["2"]["alpha"] == 46.0 and shown["bandit"]["step"] == "allocate"
    history = invoke("history", MODEL)
    assert "set-weight  policy:bandit" in history.output


def test_status_loads_the_settings_once(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import michi.registry.commands as commands

    loads: list[Any] = []
    real = commands.load_settings

    def counting(*arguments: Any, **options: Any) -> Any:
        loads.append(arguments)
        return real(*arguments, **options)

    monkeypatch.setattr(commands, "load_settings", counting)
    assert invoke("status", MODEL).exit_code == 0
    assert len(loads) == 1


def test_a_bandit_of_two_candidates_from_the_cli_shows_every_arm_and_promotes_the_one_named(database_url: str) -> None:
    refused = invoke("start", MODEL, "2", "3", "--reason", "two canaries?")
    assert refused.exit_code == 1 and "only a bandit (--strategy bandit) serves more than one candidate" in (
        refused.output
    )
    started = invoke("start", MODEL, "2", "3", "--strategy", "bandit", "--reason", "three arms")
    assert started.exit_code == 0, started.output
    assert "2 (treatment 33%), 3 (treatment 33%), 1 (champion 33%)" in started.output
    plan = RecordingProducer.PLANS[-1]
    assert [(arm.model.version, round(arm.traffic_share, 6)) for arm in plan.arms] == [
        ("2", 0.333333),
        ("3", 0.333333),
        ("1", 0.333334),
    ]

    decided = decide_allocation(
        {"2": ArmRewards(30, 50), "3": ArmRewards(47, 50), "1": ArmRewards(35, 50)},
        champion="1",
        current={"2": 0.333333, "3": 0.333333, "1": 0.333334},
        last_allocated_at=0.0,
        now=3600.0,
        policy=BanditPolicy(),
    )
    evidence = decided.evidence()
    for version, arm in evidence["arms"].items():
        arm["arm"] = "champion" if version == "1" else "candidate"
    registry = ModelRegistry.from_url(database_url, RecordingPlanPublisher())
    registry.set_rollout_shares(
        MODEL,
        {version: decided.shares[version] * 100 for version in ("2", "3")},
        actor="policy:bandit",
        reason="bandit allocation: ...",
        evidence=evidence,
    )
    registry.close()

    status = invoke("status", MODEL)
    assert status.exit_code == 0, status.output
    assert "candidates 2 5%, 3 90% vs champion 1 5%  bandit  running" in status.output
    assert "candidate 3: Beta(48, 4), 47/50 labels agree" in status.output
    assert "candidate 2: Beta(31, 21), 30/50 labels agree" in status.output
    assert "champion 1: Beta(36, 16), 35/50 labels agree" in status.output
    shown = json.loads(invoke("status", MODEL, "--json").output)
    assert shown["candidates"] == ["2", "3"] and shown["champion_percent"] == 5.0
    assert shown["candidate_weights"] == [["2", 5.0], ["3", 90.0]]
    history = invoke("history", MODEL).output
    assert "[arms 2 5%, 3 90%, 1 5%]" in history and "[arms 2 33.3333%, 3 33.3333%, 1 33.3334%]" in history

    which = invoke("promote", MODEL, "--reason", "the best")
    assert which.exit_code == 1 and "say which one to promote" in which.output
    assert invoke("set-weight", MODEL, "50", "--reason", "by hand").exit_code == 1
    promoted = invoke("promote", MODEL, "--version", "3", "--reason", "the best")
    assert promoted.exit_code == 0, promoted.output
    assert RecordingProducer.PLANS[-1].rollout_id == "" and "3 (champion)" in promoted.output
    registry = ModelRegistry.from_url(database_url)
    assert {version.version: version.stage for version in registry.list(MODEL)} == {
        "1": "retired",
        "2": "candidate",
        "3": "champion",
    }
    registry.close()
