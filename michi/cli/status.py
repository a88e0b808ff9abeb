"""What the platform is doing, read from Kafka itself: topic sizes and consumer lag."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from michi.bus.catalog import CATALOG, TopicSpec
from michi.bus.connection import KafkaConnection, as_connection
from michi.bus.reader import end_offsets
from michi.kit import service_specs

_TOPICS = {spec.base_name: spec for spec in CATALOG}
# Which consumer group (service) reads which topics, for lag figures: each spec's `lag_topics`.
CONSUMERS: dict[str, tuple[TopicSpec, ...]] = {
    spec.name: tuple(_TOPICS[topic] for topic in spec.lag_topics) for spec in service_specs() if spec.lag_topics
}


@dataclass
class PlatformStatus:
    taken_at: float
    topic_sizes: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)


def collect_status(bootstrap: KafkaConnection | str, prefix: str = "michi.") -> PlatformStatus:
    status = PlatformStatus(taken_at=time.monotonic())
    for spec in CATALOG:
        try:
            status.topic_sizes[spec.base_name] = sum(end_offsets(bootstrap, spec.name(prefix), timeout=5).values())
        except Exception:
            status.topic_sizes[spec.base_name] = -1
    admin = AdminClient(as_connection(bootstrap).confluent_config())
    for service, specs in CONSUMERS.items():
        group = f"{prefix}{service}"
        try:
            futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=5)
            committed = futures[group].result().topic_partitions or []
        except Exception:
            status.lag[service] = -1
            continue
        lag = 0
        for spec in specs:
            ends = end_offsets(bootstrap, spec.name(prefix), timeout=5)
            offsets = {
                tp.partition: tp.offset
                for tp in committed
                if isinstance(tp, TopicPartition) and tp.topic == spec.name(prefix)
            }
            lag += sum(max(0, end - max(offsets.get(partition, 0), 0)) for partition, end in ends.items())
        status.lag[service] = lag
    return status
