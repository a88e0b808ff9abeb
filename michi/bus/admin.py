"""Topic creation from the catalog: explicit and idempotent, never auto-created."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from michi.bus.catalog import CATALOG, TopicSpec
from michi.bus.connection import KafkaConnection, as_connection

logger = logging.getLogger(__name__)


def ensure_topics(
    bootstrap: KafkaConnection | str,
    prefix: str = "michi.",
    specs: Iterable[TopicSpec] = CATALOG,
    *,
    partitions: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create every missing topic of `specs`; return the names that were created.

    `partitions` overrides the catalog's counts (tests use 1-2 to keep rebalances quick).
    """
    connection = as_connection(bootstrap)
    admin = AdminClient(connection.confluent_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [spec for spec in specs if spec.name(prefix) not in existing]
    if not wanted:
        return []
    # -1: the cluster's default.replication.factor, unless MICHI_KAFKA_REPLICATION_FACTOR says otherwise.
    copies = connection.replication_factor or -1
    new_topics = [
        NewTopic(
            spec.name(prefix),
            num_partitions=partitions or spec.partitions,
            replication_factor=copies,
            config=spec.config(),
        )
        for spec in wanted
    ]
    created = []
    for name, future in admin.create_topics(new_topics, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            future.result()
            created.append(name)
        except KafkaException as error:
            # Another process may have created it between our listing and our request.
            if error.args and error.args[0].code() == 36:  # TOPIC_ALREADY_EXISTS
                continue
            raise
    if created:
        logger.info("topics created", extra={"topics": ",".join(sorted(created))})
    return created


def replication_factor(bootstrap: KafkaConnection | str, timeout: float = 10.0) -> int:
    """How many copies of a topic Michi creates: MICHI_KAFKA_REPLICATION_FACTOR, else the cluster's default.

    The default is the `default.replication.factor` of the controller's configuration (what a topic created
    with replication factor -1 gets), for clients that cannot ask for "the cluster's default" themselves
    (faust's changelog and repartition topics).
    """
    connection = as_connection(bootstrap)
    if connection.replication_factor is not None:
        return connection.replication_factor
    admin = AdminClient(connection.confluent_config())
    cluster = admin.describe_cluster(request_timeout=timeout).result(timeout)
    broker = ConfigResource(ConfigResource.Type.BROKER, str(cluster.controller.id))
    entries = admin.describe_configs([broker], request_timeout=timeout)[broker].result(timeout)
    return int(entries["default.replication.factor"].value)


def delete_topics(bootstrap: KafkaConnection | str, names: Iterable[str], timeout: float = 30.0) -> None:
    admin = AdminClient(as_connection(bootstrap).confluent_config())
    futures = admin.delete_topics(list(names), operation_timeout=timeout)
    for future in futures.values():
        try:
            future.result()
        except KafkaException:
            logger.warning("topic deletion failed", exc_info=True)
