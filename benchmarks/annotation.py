"""Annotation throughput (lease + answer) with 50 annotators, against Redis alone, and the page's time to interactive.

    .venv/bin/python -m benchmarks annotation [--quick]

Three runs of the same work: T tasks, k = 2 answers each (a third when they differ), 50 annotator
threads that lease, answer (one in ten wrong) and lease again until the queue is empty.

- **API**: a real `python -m services.annotation` (uvicorn, session auth, rate limits, Redis, SQLite,
  labels published to Kafka with acks=all); tasks arrive as `LabelRequest`s on Kafka; each annotator
  is an httpx client doing `POST /v1/queues/{q}/leases` then `POST /v1/tasks/{id}/votes`.
- **service layer**: the same `AnnotationService` in this process (Redis + SQLite + Kafka), no HTTP.
- **Redis only** (baseline): the same Lua scripts (lease, take, finish) on the same redis-server with
  the bookkeeping in memory: what the queues cost without SQL, HTTP or Kafka.

Then, with Chromium present, the page: sign in, pick the queue, time from the click to the first task
drawn (`data-state=ready`), and from each answer key press to the next task drawn.
"""

from __future__ import annotations

import asyncio
import math
import random
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from redis import Redis

from benchmarks.harness import (
    PREFIX,
    BenchmarkFailed,
    CpuMeter,
    Workspace,
    describe_cpu,
    milliseconds,
    note,
    percentile,
    print_table,
    ratio,
    wait_for,
)
from michi.archive import archive_uploads
from michi.blobs import BlobStore
from michi.bus.catalog import LABEL_REQUESTS
from michi.bus.producer import EventProducer
from michi.contracts import stable_event_id, timestamp_from_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, upload_pb2
from services.annotation.adapters.publisher import KafkaLabelPublisher
from services.annotation.adapters.queues import RedisQueues, TakeStatus
from services.annotation.adapters.store import AnnotationStore
from services.annotation.domain.credentials import hash_password
from services.annotation.domain.roles import Role
from services.annotation.domain.tasks import LiveTask, queue_score
from services.annotation.handlers import Principal
from services.annotation.settings import AnnotationSettings
from services.annotation.wiring import build_wiring

ANNOTATORS = 50
QUEUE = "uncertain"
PASSWORD = "benchmark password 1"
ANSWERS = ("normal", "harsh-braking", "harsh-acceleration", "harsh-cornering", "confounder")
CHROMIUM = "/usr/bin/chromium"


@dataclass
class Run:
    name: str
    pairs: int = 0
    seconds: float = 0.0
    lease_s: list[float] = field(default_factory=list)
    answer_s: list[float] = field(default_factory=list)
    cores: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


@dataclass
class PageFigures:
    first_task_s: float
    next_task_s: list[float]


@dataclass
class AnnotationFigures:
    api: Run
    service: Run
    redis: Run
    page: PageFigures | None


def _truth(task_id: str) -> str:
    return ANSWERS[int(task_id[-4:], 16) % len(ANSWERS)]


def _answer(task_id: str, chooser: random.Random) -> str:
    correct = _truth(task_id)
    # One answer in ten is wrong, always the same way, so a split has two sides and a third vote settles it.
    return correct if chooser.random() > 0.1 else ("confounder" if correct != "confounder" else "normal")


def _requests(count: int, tag: str, uploads: list[upload_pb2.Upload] | None = None) -> list[labels_pb2.LabelRequest]:
    requests = []
    for index in range(count):
        window_id = f"{tag}-{uuid.uuid4().hex[:8]}-{index:04x}"
        upload = uploads[index % len(uploads)] if uploads else None
        start = (upload.started_at.seconds + 2.0) if upload else time.time() - 60
        lineage = common_pb2.Lineage(
            upload_id=upload.upload_id if upload else f"upload-{index}",
            window_id=window_id,
            device_id=upload.device_id if upload else "device-1",
            trip_id="trip-1",
            driver_id="driver-1",
            model_name="harsh-events",
            model_version="1",
        )
        requests.append(
            labels_pb2.LabelRequest(
                event_id=stable_event_id("label-request", window_id),
                lineage=lineage,
                reason=labels_pb2.LABEL_REASON_UNCERTAIN,
                priority=index % 100,
                suggested=common_pb2.EVENT_TYPE_HARSH_BRAKING,
                confidence=0.5,
                window=common_pb2.TimeSpan(
                    started_at=timestamp_from_seconds(start), ended_at=timestamp_from_seconds(start + 2.0)
                ),
            )
        )
    return requests


def _annotate(
    run: Run,
    work: Callable[[int, random.Random, Run, threading.Lock], bool],
    done: Callable[[], bool],
    cpu_pids: dict[str, int],
    timeout: float = 600.0,
) -> Run:
    """Run `work(number, chooser, run, lock)` in 50 threads until `done()` (asked when a thread finds nothing)."""
    lock = threading.Lock()
    failures: list[BaseException] = []
    finished = threading.Event()
    deadline = time.monotonic() + timeout

    def annotator(number: int) -> None:
        chooser = random.Random(number)
        try:
            while not finished.is_set():
                if work(number, chooser, run, lock):
                    continue
                if done():
                    finished.set()
                elif time.monotonic() > deadline:
                    raise BenchmarkFailed(f"{run.name}: not finished within {timeout:.0f} s")
                else:
                    time.sleep(0.02)
        except BaseException as error:
            failures.append(error)
            finished.set()

    threads = [threading.Thread(target=annotator, args=(number,)) for number in range(ANNOTATORS)]
    meter = CpuMeter(cpu_pids).start()
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - began
    run.cores = meter.stop()
    if failures:
        raise BenchmarkFailed(f"{run.name}: {failures[0]!r}")
    return run


def _service_layer(workspace: Workspace, tasks: int) -> Run:
    folder = workspace.folder / "service-layer"
    settings = AnnotationSettings(
        home=folder,
        redis_url=workspace.redis.url if workspace.redis else None,
        database_url=f"sqlite:///{folder / 'annotation.db'}",
        kafka_bootstrap=workspace.bootstrap,
        topic_prefix="bench-layer.",
        annotation_consume=False,
    )
    folder.mkdir(parents=True, exist_ok=True)
    producer = EventProducer(workspace.bootstrap, PREFIX, client_id="bench-annotation")
    wiring = build_wiring(settings, publisher=KafkaLabelPublisher(producer))
    try:
        wiring.service.rebuild("benchmark")
        for request in _requests(tasks, "layer"):
            wiring.service.intake(request)

        def work(number: int, chooser: random.Random, run: Run, lock: threading.Lock) -> bool:
            who = Principal(f"annotator-{number:02d}", Role.ANNOTATOR)
            started = time.perf_counter()
            view = wiring.service.lease(who, QUEUE)
            leased = time.perf_counter()
            if view is None:
                return False
            wiring.service.submit(who, view.task_id, view.lease_id, _answer(view.task_id, chooser))
            with lock:
                run.pairs += 1
                run.lease_s.append(leased - started)
                run.answer_s.append(time.perf_counter() - leased)
            return True

        pids = {name: pid for name, pid in workspace.pids().items() if name in ("redis", "benchmark", "kafka")}
        run = _annotate(
            Run("service layer (Redis + SQLite + Kafka), in process"),
            work,
            lambda: wiring.store.status_counts().get("labeled", 0) >= tasks,
            pids,
        )
        counts = wiring.store.status_counts()
        if counts.get("labeled") != tasks:
            raise BenchmarkFailed(f"service layer: {counts} instead of {tasks} labeled tasks")
        return run
    finally:
        wiring.close()
        producer.close()


def _redis_only(workspace: Workspace, tasks: int) -> Run:
    assert workspace.redis is not None
    redis = Redis.from_url(workspace.redis.url)
    queues = RedisQueues(redis, "bench-raw.")
    votes: Counter[str] = Counter()
    answers: dict[str, list[str]] = {}
    resolved: set[str] = set()
    now = time.time()
    queues.load(LiveTask(f"raw-{index:04x}", QUEUE, QUEUE, queue_score(index % 100, now)) for index in range(tasks))

    def work(number: int, chooser: random.Random, run: Run, lock: threading.Lock) -> bool:
        name = f"annotator-{number:02d}"
        started = time.perf_counter()
        lease = queues.lease(
            QUEUE, name, lease_id=uuid.uuid4().hex, now_s=time.time(), lease_s=120, prefer_gold=False, scan=200
        )
        leased = time.perf_counter()
        if lease is None:
            return False
        status = queues.take(lease.task_id, lease.lease_id, name, now_s=time.time(), allow_late=True)
        if status != TakeStatus.CURRENT:
            raise BenchmarkFailed(f"redis only: take answered {status}")
        with lock:
            votes[lease.task_id] += 1
            given = answers.setdefault(lease.task_id, [])
            given.append(_answer(lease.task_id, chooser))
            done = (len(given) >= 2 and len(set(given)) == 1) or len(given) >= 3
            if done:
                resolved.add(lease.task_id)
        task = LiveTask(lease.task_id, QUEUE, QUEUE, queue_score(0, now))
        queues.finish(lease.task_id, name, "remove" if done else "requeue", task, held=True)
        with lock:
            run.pairs += 1
            run.lease_s.append(leased - started)
            run.answer_s.append(time.perf_counter() - leased)
        return True

    pids = {name: pid for name, pid in workspace.pids().items() if name in ("redis", "benchmark")}
    try:
        run = _annotate(
            Run("Redis only: the same Lua scripts, no SQL/HTTP/Kafka"), work, lambda: len(resolved) >= tasks, pids
        )
    finally:
        redis.close()
    if len(votes) != tasks:
        raise BenchmarkFailed(f"redis only: {len(votes)} of {tasks} tasks answered")
    return run


def _sample_upload(started_at: float, index: int) -> upload_pb2.Upload:
    upload = upload_pb2.Upload(
        upload_id=f"bench-upload-{index}",
        device_id="bench-device",
        driver_id="driver-1",
        trip_id="trip-1",
        sample_rate_hz=50,
        started_at=timestamp_from_seconds(started_at),
        vehicle_type="van",
    )
    for sample in range(500):
        t = sample / 50
        upload.imu.offset_ms.append(sample * 20)
        upload.imu.accel_x.append(-3 * math.exp(-((t - 3) ** 2)) + 0.1 * math.sin(9 * t))
        upload.imu.accel_y.append(0.2 * math.sin(2 * t))
        upload.imu.accel_z.append(9.81)
        upload.imu.gyro_x.append(0.01)
        upload.imu.gyro_y.append(0.02 * math.cos(t))
        upload.imu.gyro_z.append(0.05 * math.sin(t))
    for second in range(10):
        upload.gps.append(
            upload_pb2.GpsFix(offset_ms=second * 1000, latitude=35.68 + second * 1e-4, longitude=139.76, speed_mps=12.0)
        )
    return upload


def _api(workspace: Workspace, tasks: int, page_tasks: int) -> tuple[Run, PageFigures | None]:
    service = workspace.start_service(
        "annotation", "MICHI_ANNOTATION_PORT", environment={"MICHI_ANNOTATION_RATE_PER_S": "100"}
    )
    store = AnnotationStore.from_url(workspace.database_url)
    password_hash = hash_password(PASSWORD)
    for number in range(ANNOTATORS):
        store.add_annotator(f"annotator-{number:02d}", Role.ANNOTATOR, password_hash, actor="benchmark", now=_now())
    store.add_annotator("page-annotator", Role.ANNOTATOR, password_hash, actor="benchmark", now=_now())
    store.close()
    # Windows with archived uploads, so the page has traces to draw.
    blobs = BlobStore(f"file://{workspace.home / 'blobs'}")
    uploads = [_sample_upload(time.time() - 120, index) for index in range(10)]
    asyncio.run(archive_uploads(blobs, uploads))
    producer = EventProducer(workspace.bootstrap, PREFIX, client_id="bench-annotation-requests")
    try:
        for request in _requests(tasks, "api", uploads):
            producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
        producer.flush()
    finally:
        producer.close()
    clients = [httpx.Client(base_url=service.base_url, timeout=30) for _ in range(ANNOTATORS)]
    try:
        tokens = []
        for number, client in enumerate(clients):
            answer = client.post("/v1/sessions", json={"name": f"annotator-{number:02d}", "password": PASSWORD})
            tokens.append({"Authorization": f"Bearer {answer.json()['token']}"})

        def waiting() -> int:
            answer = clients[0].get("/v1/queues", headers=tokens[0])
            return sum(queue["waiting"] for queue in answer.json()) if answer.status_code == 200 else 0

        note(f"annotation: waiting for {tasks} label requests to become tasks")
        if not wait_for(lambda: waiting() >= tasks, 120):
            raise BenchmarkFailed(f"annotation: only {waiting()} of {tasks} tasks arrived")

        def work(number: int, chooser: random.Random, run: Run, lock: threading.Lock) -> bool:
            client, headers = clients[number], tokens[number]
            started = time.perf_counter()
            leased = client.post(f"/v1/queues/{QUEUE}/leases", headers=headers)
            lease_done = time.perf_counter()
            if leased.status_code == 204:
                return False
            if leased.status_code != 200:
                raise BenchmarkFailed(f"lease answered {leased.status_code}: {leased.text}")
            task = leased.json()
            vote = client.post(
                f"/v1/tasks/{task['task_id']}/votes",
                json={"lease_id": task["lease_id"], "answer": _answer(task["task_id"], chooser)},
                headers=headers,
            )
            if vote.status_code != 200:
                raise BenchmarkFailed(f"vote answered {vote.status_code}: {vote.text}")
            with lock:
                run.pairs += 1
                run.lease_s.append(lease_done - started)
                run.answer_s.append(time.perf_counter() - lease_done)
            return True

        counts = AnnotationStore.from_url(workspace.database_url)
        try:
            run = _annotate(
                Run("API: python -m services.annotation over HTTP"),
                work,
                lambda: counts.status_counts().get("labeled", 0) >= tasks,
                workspace.pids(),
            )
        finally:
            counts.close()
    finally:
        for client in clients:
            client.close()
    page = _page(workspace, service.base_url, uploads, page_tasks) if page_tasks else None
    return run, page


def _now() -> datetime:
    return datetime.now(UTC)


def _page(workspace: Workspace, base_url: str, uploads: list[upload_pb2.Upload], count: int) -> PageFigures | None:
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        note("annotation: no Chromium; page time to interactive not measured")
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        note("annotation: playwright not installed; page time to interactive not measured")
        return None
    producer = EventProducer(workspace.bootstrap, PREFIX, client_id="bench-annotation-page")
    try:
        for request in _requests(count + 1, "page", uploads):
            request.reason = labels_pb2.LABEL_REASON_DRIFT_SAMPLE
            producer.publish(LABEL_REQUESTS, request.lineage.window_id, request)
        producer.flush()
    finally:
        producer.close()
    with httpx.Client(base_url=base_url) as client:
        token = client.post("/v1/sessions", json={"name": "page-annotator", "password": PASSWORD}).json()["token"]

        def waiting() -> int:
            answer = client.get("/v1/queues", headers={"Authorization": f"Bearer {token}"}).json()
            return sum(queue["waiting"] for queue in answer if queue["queue"] == "drift-sample")

        if not wait_for(lambda: waiting() >= count + 1, 60):
            raise BenchmarkFailed("annotation: page tasks did not arrive")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(base_url + "/")
            page.fill("#name", "page-annotator")
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.wait_for_selector("button[data-queue='drift-sample']")
            began = time.perf_counter()
            page.click("button[data-queue='drift-sample']")
            page.wait_for_selector("body[data-state='ready']")
            first = time.perf_counter() - began
            timings = []
            for _ in range(count):
                previous = page.get_attribute("body", "data-task-id")
                began = time.perf_counter()
                page.keyboard.press("2")
                page.wait_for_function(
                    "(previous) => document.body.dataset.state === 'ready' && document.body.dataset.taskId !== previous",
                    arg=previous,
                )
                timings.append(time.perf_counter() - began)
        finally:
            browser.close()
    return PageFigures(first, timings)


def run(*, quick: bool = False) -> AnnotationFigures:
    tasks = 300 if quick else 1500
    page_tasks = 10 if quick else 30
    with Workspace("annotation", redis=True) as workspace:
        note(f"annotation: Redis-only baseline, {tasks} tasks")
        redis_run = _redis_only(workspace, tasks)
        note(f"annotation: service layer, {tasks} tasks")
        service_run = _service_layer(workspace, tasks)
        note(f"annotation: API, {tasks} tasks")
        api_run, page = _api(workspace, tasks, page_tasks)
    rows = []
    for item in (api_run, service_run, redis_run):
        rows.append(
            [
                item.name,
                item.pairs,
                f"{item.rate:.0f}",
                milliseconds(percentile(item.lease_s, 0.5)),
                milliseconds(percentile(item.lease_s, 0.99)),
                milliseconds(percentile(item.answer_s, 0.5)),
                milliseconds(percentile(item.answer_s, 0.99)),
                ratio(item.rate, redis_run.rate),
            ]
        )
    print_table(
        f"annotation: {tasks} tasks, {ANNOTATORS} concurrent annotators, lease + answer pairs",
        ["run", "pairs", "pairs/s", "lease p50 ms", "lease p99 ms", "answer p50 ms", "answer p99 ms", "vs Redis only"],
        rows,
    )
    for item in (api_run, service_run, redis_run):
        print(f"  cores busy, {item.name}: {describe_cpu(item.cores)}")
    if page is not None:
        print_table(
            "annotation page in headless Chromium (local server)",
            ["step", "n", "p50 ms", "p95 ms", "max ms"],
            [
                ["queue click -> first task drawn", 1, milliseconds(page.first_task_s), "-", "-"],
                [
                    "answer key -> next task drawn",
                    len(page.next_task_s),
                    milliseconds(percentile(page.next_task_s, 0.5)),
                    milliseconds(percentile(page.next_task_s, 0.95)),
                    milliseconds(max(page.next_task_s)),
                ],
            ],
        )
    return AnnotationFigures(api_run, service_run, redis_run, page)
