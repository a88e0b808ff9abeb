"""The Kafka bus: the connection, topic catalog, topic admin, the producer, headers, and the faust app factory."""

from michi.bus.catalog import CATALOG, TopicSpec
from michi.bus.codec import UndecodableMessage, decode_message
from michi.bus.connection import KafkaConnection
from michi.bus.producer import Delivery, EventProducer, PublishError

__all__ = [
    "CATALOG",
    "Delivery",
    "EventProducer",
    "KafkaConnection",
    "PublishError",
    "TopicSpec",
    "UndecodableMessage",
    "decode_message",
]
