"""A stream worker on a real Kafka that cannot finish its work stops unacknowledged (exit 75) and is redelivered.

Each test runs a small faust worker built with the shared factory (`michi.bus.streams`) as a
subprocess, feeds it a record it cannot process in one way (its batch fails, it hangs, its faust
producer crashes, its agent crashes outside `process_batches`), and checks the three things
docs/architecture.md promises: the exit status is 75, nothing past the record was committed, and a
restarted worker gets the records again. The hanging worker must also say so at `/readyz` (503).
The watch's timings are shortened here (not ready after 4 s, stopped after 8 s, checked every
second); tests/unit/test_stream_health.py holds the defaults to 503 within 35 s and exit within 50 s.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from michi.bus.catalog import UPLOADS
from michi.bus.producer import EventProducer
from michi.bus.streams import EXIT_REDELIVER
from michi.contracts.v1 import upload_pb2
from michi.infra.processes import free_port

REPOSITORY = Path(__file__).resolve().parents[2]
SERVICE = "stream-health"

WORKER = textwrap.dedent(
    """
    '''A test stream worker: python worker.py BOOTSTRAP PREFIX MODE HOME PORT (MODE says what the poison does).'''
    import asyncio
    import sys
    from pathlib import Path

    from michi.bus.catalog import UPLOADS
    from michi.bus.producer import EventProducer
    from michi.bus.streams import catalog_topic, create_app, process_batches, run_worker, stream_readiness
    from michi.contracts.v1 import upload_pb2
    from michi.telemetry import configure_logging

    bootstrap, prefix, mode, home, port = sys.argv[1:6]
    configure_logging("stream-health", "WARNING")
    producer = EventProducer(bootstrap, prefix, client_id="stream-health")
    app = create_app(
        "stream-health",
        bootstrap=bootstrap,
        app_id=prefix + "stream-health",
        data_dir=Path(home),
        web_port=int(port),
        partitions=2,
        stall_timeout_s=8.0,
        not_ready_after_s=4.0,
        watch_interval_s=1.0,
    )
    notes = app.Table("notes", default=None, partitions=2)


    async def handle(batch):
        for item in batch:
            upload_id = item.message.upload.upload_id
            if upload_id == "poison" and mode == "fail-batch":
                raise RuntimeError("cannot process the poison record")
            if upload_id == "poison" and mode == "stall":
                await asyncio.Event().wait()
            if upload_id == "poison" and mode == "producer-crash":
                # A changelog record over the broker's limit: faust's producer crashes on it.
                notes.send_changelog(item.partition, "note", {"text": "x" * 1_200_000})
                await asyncio.sleep(60)
            print("processed", upload_id, item.offset, flush=True)


    if mode == "agent-crash":
        @app.agent(catalog_topic(app, UPLOADS, prefix), name="consume")
        async def consume(stream):
            # A plain faust agent (no process_batches): its crash is faust's to handle.
            async for value in stream:
                upload_id = upload_pb2.UploadReceived.FromString(value).upload.upload_id
                if upload_id == "poison":
                    raise RuntimeError("the agent crashed on the poison record")
                print("processed", upload_id, flush=True)
    else:
        @app.agent(catalog_topic(app, UPLOADS, prefix), name="consume")
        async def consume(stream):
            await process_batches(stream, UPLOADS, handle, producer=producer, service="stream-health", batch_size=8)


    @app.page("/readyz")
    async def readyz(web, request):
        readiness = stream_readiness(app)
        return web.json({"status": readiness.status, "reason": readiness.reason}, status=200 if readiness.ready else 503)


    run_worker(app)
    """
)


@dataclass
class Worker:
    """One worker subprocess, its output lines as they come (with when), and its /readyz."""

    script: Path
    arguments: list[str]
    port: int
    lines: list[tuple[float, str]] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None

    def start(self, mode: str) -> None:
        self.lines = []
        self.process = subprocess.Popen(
            [sys.executable, str(self.script), *self.arguments[:2], mode, *self.arguments[2:], str(self.port)],
            cwd=REPOSITORY,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.process.stdout as output:
            for line in output:
                self.lines.append((time.monotonic(), line.rstrip("\n")))

    def processed(self) -> list[str]:
        return [line.split()[1] for _, line in self.lines if line.startswith("processed ")]

    def when_processed(self, upload_id: str, timeout: float = 90.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in self.lines:
                if line.startswith("processed ") and line.split()[1] == upload_id:
                    return at
            assert self.process is not None
            assert self.process.poll() is None, f"the worker exited with {self.process.poll()}: {self.output()}"
            time.sleep(0.1)
        raise AssertionError(f"{upload_id} was not processed: {self.output()}")

    def wait_for_exit(self, timeout: float) -> tuple[int, float]:
        assert self.process is not None and self.reader is not None
        code = self.process.wait(timeout=timeout)
        exited = time.monotonic()
        self.reader.join(timeout=10)  # every line read
        return code, exited

    def readyz(self) -> tuple[int, dict[str, str]]:
        answer = httpx.get(f"http://127.0.0.1:{self.port}/readyz", timeout=2.0)
        return answer.status_code, answer.json()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        if self.reader is not None:
            self.reader.join(timeout=10)

    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)[-4000:]


@pytest.fixture
def worker(kafka_bootstrap: str, topic_prefix: str, tmp_path: Path) -> Iterator[Worker]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    home = tmp_path / "faust"
    home.mkdir()
    running = Worker(script, [kafka_bootstrap, topic_prefix, str(home)], free_port())
    try:
        yield running
    finally:
        running.stop()


def publish(producer: EventProducer, *upload_ids: str) -> dict[str, int]:
    """Records on one partition (one key), in order; returns each one's offset."""
    offsets = {}
    for upload_id in upload_ids:
        event = upload_pb2.UploadReceived(event_id=upload_id, upload=upload_pb2.Upload(upload_id=upload_id))
        offsets[upload_id] = producer.publish_and_wait(UPLOADS, "device-1", event).offset
    return offsets


def committed(bootstrap: str, prefix: str) -> dict[int, int]:
    """The worker group's committed offset per partition of the uploads topic (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": prefix + SERVICE, "enable.auto.commit": False})
    try:
        topic = UPLOADS.name(prefix)
        return {
            tp.partition: tp.offset for tp in consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        }
    finally:
        consumer.close()


def redelivered(worker: Worker, last: str) -> list[str]:
    """What a restarted worker processes up to `last`: the records the stopped one did not finish."""
    worker.start("ok")
    worker.when_processed(last)
    return worker.processed()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("fail-batch", "processing a batch failed"),
        # Whichever sees it first: the watch (the crashed producer), or the agent's cancelled batch as faust stops.
        (
            "producer-crash",
            r"a faust service of the worker crashed: ProducerSendError|processing a batch was cancelled",
        ),
        ("agent-crash", "agent consume crashed"),
    ],
)
def test_a_worker_that_cannot_finish_a_record_exits_75_within_10_s_and_the_record_is_redelivered(
    worker: Worker, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str, mode: str, reason: str
) -> None:
    offsets = publish(producer, "r0", "r1", "poison", "r3")
    worker.start(mode)
    before_poison = worker.when_processed("r1")
    code, exited = worker.wait_for_exit(timeout=60)
    assert code == EXIT_REDELIVER, worker.output()
    assert exited - before_poison < 10.0, f"exited {exited - before_poison:.1f} s after the record before the poison"
    assert "stopping without acknowledging" in worker.output()
    assert re.search(reason, worker.output()), worker.output()
    assert "processed poison" not in worker.output()
    positions = committed(kafka_bootstrap, topic_prefix)
    partition = next(number for number, offset in positions.items() if offset != -1001 or number == 0)
    assert positions[partition] <= offsets["poison"], positions
    processed = redelivered(worker, "r3")
    if mode == "agent-crash":
        # A plain agent acknowledges record by record: what it committed of r0 and r1 before the crash is not redelivered.
        assert processed in (["r0", "r1", "poison", "r3"], ["r1", "poison", "r3"], ["poison", "r3"]), processed
    else:
        assert processed == ["r0", "r1", "poison", "r3"], processed  # the unfinished batch, whole


def test_a_worker_that_stops_progressing_says_so_at_readyz_then_exits_75_and_is_redelivered(
    worker: Worker, producer: EventProducer, kafka_bootstrap: str, topic_prefix: str
) -> None:
    publish(producer, "r0", "r1")
    worker.start("stall")
    worker.when_processed("r1")
    deadline = time.monotonic() + 30
    while worker.readyz()[0] != 200:
        assert time.monotonic() < deadline, f"never ready: {worker.readyz()}"
        time.sleep(0.2)
    assert worker.readyz() == (200, {"status": "ready", "reason": ""})

    offsets = publish(producer, "poison", "r3")
    stalled_from = time.monotonic()  # the worker holds the poison from now on and commits nothing more
    answer = worker.readyz()
    while answer[0] == 200:
        assert time.monotonic() - stalled_from < 4.0 + 1.0 + 3.0, "still ready after the watch's 4 s and a check"
        time.sleep(0.2)
        answer = worker.readyz()
    not_ready_after = time.monotonic() - stalled_from
    status, body = answer
    assert (status, body["status"]) == (503, "stalled"), answer
    assert body["reason"].startswith("no progress for ") and "with records waiting" in body["reason"], body
    assert not_ready_after >= 4.0, not_ready_after
    code, exited = worker.wait_for_exit(timeout=30)
    assert code == EXIT_REDELIVER, worker.output()
    assert 8.0 <= exited - stalled_from < 8.0 + 1.0 + 3.0, exited - stalled_from
    assert "processed poison" not in worker.output()
    assert max(committed(kafka_bootstrap, topic_prefix).values()) == offsets["poison"]
    assert redelivered(worker, "r3") == ["poison", "r3"]
