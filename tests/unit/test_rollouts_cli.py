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
