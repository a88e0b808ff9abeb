"""Topic creation from the catalog: explicit and idempotent, never auto-created."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

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
    admin = AdminClient(as_connection(bootstrap).confluent_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [spec for spec in specs if spec.name(prefix) not in existing]
    if not wanted:
        return []
    new_topics = [
        NewTopic(
            spec.name(prefix), num_partitions=partitions or spec.partitions, replication_factor=-1, config=spec.config()
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


def delete_topics(bootstrap: KafkaConnection | str, names: Iterable[str], timeout: float = 30.0) -> None:
    admin = AdminClient(as_connection(bootstrap).confluent_config())
    futures = admin.delete_topics(list(names), operation_timeout=timeout)
    for future in futures.values():
        try:
            future.result()
        except KafkaException:
            logger.warning("topic deletion failed", exc_info=True)
