"""Session fixtures: a real Kafka broker (KRaft) and a real redis-server on loopback.

Started once per test session in a temporary folder on free ports. Each test
gets its own topic prefix (so its own topics) through `topic_prefix`. Set
MICHI_TEST_KAFKA_BOOTSTRAP / MICHI_TEST_REDIS_URL / MICHI_TEST_POSTGRES_URL to use servers you run yourself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from michi.bus.admin import ensure_topics
from michi.bus.producer import EventProducer
from michi.infra.kafka import KafkaBroker
from michi.infra.processes import InfrastructureError, free_port
from michi.infra.redis import RedisServer

from .postgres_server import PostgresServer


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("MICHI_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), port=free_port(), controller_port=free_port())
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("MICHI_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"), port=free_port())
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server (Debian's binaries) for the SQL layer's tests."""
    external = os.environ.get("MICHI_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    try:
        server = PostgresServer(tmp_path_factory.mktemp("postgres"), port=free_port())
        server.start()
    except InfrastructureError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(
            f"PostgreSQL unavailable here: {error} (apt-get install postgresql, or set MICHI_TEST_POSTGRES_URL; .ci/run installs it)"
        )
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def topic_prefix(kafka_bootstrap: str) -> str:
    """A fresh prefix with every catalog topic created (2 partitions each)."""
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    ensure_topics(kafka_bootstrap, prefix, partitions=2)
    return prefix


@pytest.fixture
def producer(kafka_bootstrap: str, topic_prefix: str) -> Iterator[EventProducer]:
    event_producer = EventProducer(kafka_bootstrap, topic_prefix, client_id="test")
    try:
        yield event_producer
    finally:
        event_producer.close()


@pytest.fixture
def michi_home(tmp_path: Path) -> Path:
    home = tmp_path / ".michi"
    home.mkdir()
    return home
