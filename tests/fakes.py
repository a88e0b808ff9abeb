"""Fakes for the ports services publish through, one per port, shared by the tests (never by the product).

publisher = RecordingPlanPublisher()          # the registry's PlanPublisher: keeps every RolloutPlan
publisher.failing = True                      # ... or refuses, as an unreachable broker does

class ScriptedConsumer(ScriptedPolls): ...     # one scripted batch per `consume_batch` call (a poll of a loop)
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from michi.bus.catalog import MODEL_ROLLOUTS, TopicSpec
from michi.bus.producer import Delivery, PublishError
from michi.contracts.v1 import operations_pb2


class ScriptedPolls:
    """A consumer's polls over scripted batches, one per `michi.bus.consumers.consume_batch` call (a poll of a
    loop): its first poll (`consume`) starts the next batch, its lingering poll (`consume_lingering`, which
    `consume_batch` uses where a consumer has one) gets only what is left of that batch; each as many records as it
    asks at most, the rest of a batch left for the next call. An empty batch is a call that saw nothing."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches
        self._ran_out = False  # the batch being handed over ran out: a lingering poll gets nothing

    def consume(self, count: int, timeout: float) -> list[Any]:
        self._ran_out = False
        return self._take(count)

    def consume_lingering(self, count: int, timeout: float) -> list[Any]:
        return [] if self._ran_out else self._take(count)

    def _take(self, count: int) -> list[Any]:
        if not self.batches:
            return []
        taken, rest = self.batches[0][:count], self.batches[0][count:]
        if rest:
            self.batches[0] = rest
        else:
            self.batches.pop(0)
            self._ran_out = True
        return taken


class RecordingPlanPublisher:
    """The model registry's plan publisher (`publish_and_wait`): keeps every published `RolloutPlan`, keyed by
    its model name as the real one publishes it; raises `PublishError` while `failing` is set."""

    def __init__(self) -> None:
        self.plans: list[operations_pb2.RolloutPlan] = []
        self.failing = False

    def publish_and_wait(self, spec: TopicSpec, key: str, message: Message, timeout: float = 30.0) -> Delivery:
        if self.failing:
            raise PublishError("broker unreachable")
        assert spec is MODEL_ROLLOUTS and isinstance(message, operations_pb2.RolloutPlan), (spec, type(message))
        assert key == message.model_name, (key, message.model_name)
        self.plans.append(message)
        return Delivery(spec.name(), 0, len(self.plans) - 1)
