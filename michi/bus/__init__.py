"""The Kafka bus: topic catalog, topic admin, the producer, headers, and the faust app factory."""

from michi.bus.catalog import CATALOG, TopicSpec
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.producer import Delivery, EventProducer, PublishError

__all__ = ["CATALOG", "Delivery", "EventProducer", "PublishError", "TopicSpec", "UndecodableMessage", "decode_message"]
