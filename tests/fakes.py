"""Fakes for the ports services publish through, one per port, shared by the tests (never by the product).

publisher = RecordingPlanPublisher()          # the registry's PlanPublisher: keeps every RolloutPlan
publisher.failing = True                      # ... or refuses, as an unreachable broker does
"""

from __future__ import annotations

from google.protobuf.message import Message

from michi.bus.catalog import MODEL_ROLLOUTS, TopicSpec
from michi.bus.producer import Delivery, PublishError
from michi.contracts.v1 import operations_pb2


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
