"""Fakes for the ports services publish through, one per port, shared by the tests (never by the product).

publisher = RecordingPlanPublisher()          # the registry's PlanPublisher: keeps every RolloutPlan
publisher.failing = True                      # ... or refuses, as an unreachable broker does

class ScriptedConsumer(ScriptedPolls): ...     # `consume` hands over one scripted batch per poll of a loop
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from michi.bus.catalog import MODEL_ROLLOUTS, TopicSpec
from michi.bus.consumers import BATCH_LINGER_S
from michi.bus.producer import Delivery, PublishError
from michi.contracts.v1 import operations_pb2


class ScriptedPolls:
    """A consumer's `consume(count, timeout)` over scripted batches, each what one poll of a loop sees: a batch
    arrives at once, the next one later than `BATCH_LINGER_S` but within a poll's timeout. So
    `michi.bus.consumers.consume_batch` (its first record within the timeout, then the rest within the linger)
    gets exactly one scripted batch per poll, as many records as it asks at most. An empty batch is a poll that
    saw nothing."""

    def __init__(self, batches: list[list[Any]]) -> None:
        self.batches = batches
        self._between = False  # a batch ran out, and the next has not arrived within a linger

    def consume(self, count: int, timeout: float) -> list[Any]:
        if self._between and timeout <= BATCH_LINGER_S:
            return []
        self._between = False
        if not self.batches:
            return []
        taken, rest = self.batches[0][:count], self.batches[0][count:]
        if rest:
            self.batches[0] = rest
        else:
            self.batches.pop(0)
            self._between = True
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
