"""Restarts as a user meets them: `michi up --simulate 2` twice on one home, and the embedded redis-server
and Kafka that `michi up` supervises killed with SIGKILL and started again on the same port and data."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import pytest
import redis

from michi.bus.admin import ensure_topics
from michi.bus.catalog import ALERTS, DRIVER_SCORES, TRIP_SCORES
from michi.bus.producer import EventProducer
from michi.bus.reader import TopicReader
from michi.cli.platform import UP_FIRST_TRIP_SECONDS
from michi.contracts.v1 import common_pb2, operations_pb2
from michi.infra.kafka import KafkaBroker, broker_answers
from michi.infra.processes import free_port, pid_is_alive, wait_until
from michi.infra.redis import RedisServer, redis_answers
from michi.infra.supervisor import Supervisor
from services.ingest.settings import IngestSettings
from services.ingest.wiring import redis_client

from .platform_support import every_device_streams, michi_up, pid_with, platform_environment

# A supervised server killed is answering again within this (the first restart comes 0.5 s after the death
# is seen, and the watcher looks every 0.5 s).
REDIS_BACK_WITHIN_S = 10.0
KAFKA_BACK_WITHIN_S = 60.0
# After `michi up` is ready: the first trip ends at most 10 + 90 s in, then inference and scoring.
FIRST_SCORES_WITHIN_S = 10.0 + UP_FIRST_TRIP_SECONDS[1] + 60.0


@pytest.mark.timeout(900)
def test_michi_up_twice_on_one_home_streams_both_times_and_survives_a_killed_redis(tmp_path: Path) -> None:
    home = tmp_path / ".michi"
    environment = platform_environment(home)
    bootstrap = f"127.0.0.1:{environment['MICHI_KAFKA_PORT']}"
    redis_url = f"redis://127.0.0.1:{environment['MICHI_REDIS_PORT']}/0"
    with michi_up(environment, home, tmp_path / "up-1.log") as first:
        every_device_streams(bootstrap, first.launched, timeout=90)

    with michi_up(environment, home, tmp_path / "up-2.log") as second:
        # The second run streams like the first: its own trips end and are scored, drivers too.
        uploads = every_device_streams(bootstrap, second.launched, timeout=90)
        trips = {record.message.upload.trip_id for record in uploads}  # type: ignore[attr-defined]
        with TopicReader(bootstrap, TRIP_SCORES) as reader:
            scored = reader.read_until(
                lambda got: any(record.message.lineage.trip_id in trips for record in got),  # type: ignore[attr-defined]
                timeout=FIRST_SCORES_WITHIN_S - (time.time() - second.ready_at),
            )
        this_run = {record.message.lineage.trip_id for record in scored} & trips  # type: ignore[attr-defined]
        assert this_run, f"no trip score {time.time() - second.ready_at:.0f} s after ready; logs in {home / 'logs'}"
        with TopicReader(bootstrap, DRIVER_SCORES) as reader:
            drivers = reader.read_until(
                lambda got: any(record.message.last_trip_id in this_run for record in got),  # type: ignore[attr-defined]
                timeout=30,
            )
        assert any(record.message.last_trip_id in this_run for record in drivers)  # type: ignore[attr-defined]
        scores_after = time.time() - second.ready_at

        # redis-server dies: `michi up` starts it again on its port, with its data, and ingest carries on.
        marker = f"restart-marker-{uuid.uuid4().hex[:8]}"
        with redis.Redis.from_url(redis_url) as client:
            client.set(marker, "kept")
            killed = int(client.info("server")["process_id"])
        assert wait_until(lambda: _aof_holds(home / "redis", marker), 10, 0.1)
        os.kill(killed, signal.SIGKILL)
        killed_at = time.time()
        assert wait_until(lambda: redis_answers(redis_url), REDIS_BACK_WITHIN_S, 0.1), (
            f"redis-server not back within {REDIS_BACK_WITHIN_S:.0f} s"
        )
        back_after = time.time() - killed_at
        with redis.Redis.from_url(redis_url) as client:
            assert client.get(marker) == b"kept"
            restarted = int(client.info("server")["process_id"])
            assert client.config_get("dir")["dir"] == str((home / "redis").resolve())
        assert restarted != killed and not pid_is_alive(killed)
        # A device may be parked between its first and second trip (up to 2 min) when redis-server dies.
        every_device_streams(bootstrap, killed_at, timeout=180)
        print(
            f"second michi up: ready {second.ready_at - second.launched:.0f} s after launch, first trip and driver "
            f"scores {scores_after:.0f} s after ready; redis-server back {back_after:.1f} s after SIGKILL"
        )
    # Everything `michi up` started is gone, the restarted server included.
    assert not pid_is_alive(restarted) and not redis_answers(redis_url)
    assert pid_with(str((home / "kafka").resolve())) is None
    assert not broker_answers(bootstrap, timeout=1)


def _aof_holds(redis_dir: Path, text: str) -> bool:
    """The append-only files under `redis_dir` (Redis 7: appendonlydir/, older: appendonly.aof) mention `text`."""
    return any(text.encode() in path.read_bytes() for path in redis_dir.rglob("appendonly*") if path.is_file())


def test_a_killed_redis_server_is_restarted_on_its_port_with_its_data(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", port=free_port())
    server.start()
    assert server.process is not None
    supervisor = Supervisor()
    supervisor.adopt("redis", server.process, server.launch, server.log_path)
    supervisor.start()
    settings = IngestSettings(home=tmp_path, redis_url=server.url)

    async def scenario() -> tuple[float, bytes | None, str, int, int]:
        client = redis_client(settings)  # ingest's own: retries once on a dropped connection
        try:
            await client.set("kept-across-restart", "yes")
            assert wait_until(lambda: _aof_holds(server.data_dir, "kept-across-restart"), 10, 0.05)
            killed = server.process
            assert killed is not None
            killed.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            assert wait_until(
                lambda: server.process is not killed and redis_answers(server.url), REDIS_BACK_WITHIN_S, 0.05
            )
            back_after = time.monotonic() - killed_at
            # The pooled connection died with the old server: the command goes out again on a new one.
            value = await client.get("kept-across-restart")
            assert value is None or isinstance(value, bytes)
            directory = await client.config_get("dir")
            restarted = server.process
            assert restarted is not None
            return back_after, value, str(directory["dir"]), restarted.pid, killed.pid
        finally:
            await client.aclose()

    try:
        back_after, value, directory, new_pid, old_pid = asyncio.run(scenario())
    finally:
        supervisor.stop(timeout=10)
        server.stop()
    assert back_after <= REDIS_BACK_WITHIN_S, f"back after {back_after:.1f} s"
    assert value == b"yes"
    assert directory == str(server.data_dir.resolve())
    assert new_pid != old_pid and supervisor.services["redis"].restarts == 1
    assert not pid_is_alive(new_pid)
    print(f"redis-server back on port {server.port} {back_after:.2f} s after SIGKILL")


@pytest.mark.timeout(420)
def test_a_killed_kafka_broker_is_restarted_with_its_topics_and_records(tmp_path: Path) -> None:
    broker = KafkaBroker(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    broker.start()
    assert broker.process is not None
    supervisor = Supervisor()
    supervisor.adopt("kafka", broker.process, broker.launch, broker.log_path)
    supervisor.start()
    prefix = f"restart-{uuid.uuid4().hex[:8]}."
    try:
        ensure_topics(broker.bootstrap, prefix, partitions=1)
        producer = EventProducer(broker.bootstrap, prefix, client_id="restart-test")
        try:
            before = operations_pb2.Alert(event_id="alert-1", kind="test", lineage=common_pb2.Lineage(device_id="d"))
            producer.publish_and_wait(ALERTS, "test", before, timeout=30)
        finally:
            producer.close()
        killed = broker.process
        killed.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert wait_until(
            lambda: broker.process is not killed and broker_answers(broker.bootstrap), KAFKA_BACK_WITHIN_S, 0.3
        ), (tmp_path / "kafka" / "stdout.log").read_text()[-3000:]
        back_after = time.monotonic() - killed_at
        with TopicReader(broker.bootstrap, ALERTS, prefix) as reader:
            records = reader.read_until(lambda got: len(got) >= 1, timeout=60)
    finally:
        supervisor.stop(timeout=30)
        broker.stop()
    assert [record.message.event_id for record in records] == ["alert-1"]  # type: ignore[attr-defined]
    assert supervisor.services["kafka"].restarts == 1
    print(f"Kafka back on port {broker.port} {back_after:.1f} s after SIGKILL")
