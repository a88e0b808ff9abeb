"""`/metrics` of ingest run as several workers (`MICHI_INGEST_WORKERS=2`) answers for all of them.

A real `python -m services.ingest` on the session's Kafka and redis-server: uploads spread over both workers by
the kernel (one connection each), then every scrape, whichever worker serves it, counts every upload; each
worker's process metrics carry its pid. One worker (the default) serves its own metrics as before.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from services.ingest.wiring import device_registry

from .ingest_support import ingest_environment, make_upload, settings_for, start_ingest, uploads_count, wait_for_ingest

pytestmark = pytest.mark.integration

UPLOADS = 24
SCRAPES = 8
# Every request on a connection of its own, so the kernel picks a worker for each (SO_REUSEPORT).
HEADERS = {"content-type": "application/x-protobuf", "connection": "close"}


def samples(page: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def samples_of(path: Path) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The samples of one worker's file of counters."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in MultiProcessCollector.merge([str(path)]):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(figure for sample_labels, figure in found.get(name, []) if sample_labels == labels)


def start(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path, **extra: str
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`python -m services.ingest` with device-a registered: (process, url, token)."""
    registry = device_registry(settings_for(kafka_bootstrap, redis_url, topic_prefix, michi_home))
    token = registry.add_device("device-a")
    registry.close()
    # Rate limits have their own tests; here they would refuse the burst.
    environment = ingest_environment(
        kafka_bootstrap,
        redis_url,
        topic_prefix,
        michi_home,
        MICHI_INGEST_DEVICE_RATE_PER_S="1000",
        MICHI_INGEST_DEVICE_BURST="1000",
        **extra,
    )
    process = start_ingest(environment, michi_home)
    return process, f"http://127.0.0.1:{environment['MICHI_INGEST_HTTP_PORT']}", token


def test_every_scrape_of_two_workers_counts_the_uploads_both_served(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> None:
    supervisor, url, token = start(kafka_bootstrap, redis_url, topic_prefix, michi_home, MICHI_INGEST_WORKERS="2")
    directory = michi_home.resolve() / "metrics" / f"ingest-{socket.gethostname()}-{supervisor.pid}"
    port = int(url.rsplit(":", 1)[1])
    try:
        wait_for_ingest(url, michi_home)
        workers = psutil.Process(supervisor.pid).children()
        assert len(workers) == 2
        # /readyz answered from one worker; the other may still be starting.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            any(c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in worker.net_connections(kind="tcp"))
            for worker in workers
        ):
            time.sleep(0.05)

        bodies = [make_upload(f"upload-{index}").SerializeToString() for index in range(UPLOADS)]
        with httpx.Client(base_url=url, timeout=15, headers={"authorization": f"Bearer {token}"}) as client:
            for body in bodies:
                response = client.post("/v1/uploads", content=body, headers=HEADERS)
                assert response.status_code == 202, response.text
            # What each worker counted itself, from its own file in the run's directory.
            served = {
                worker.pid: value(
                    samples_of(directory / f"counter_{worker.pid}.db"),
                    "michi_ingest_uploads_total",
                    outcome="accepted",
                    reason="",
                )
                for worker in workers
            }
            # Both served some (all on one: probability 2 x 2^-24 with SO_REUSEPORT hashing).
            assert sum(served.values()) == UPLOADS and min(served.values()) >= 1, served

            pages = [client.get("/metrics", headers={"connection": "close"}) for _ in range(SCRAPES)]
    finally:
        supervisor.terminate()
        assert supervisor.wait(timeout=30) == 0, (michi_home / "ingest.log").read_text()

    for page in pages:
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
        found = samples(page.text)
        assert value(found, "michi_ingest_uploads_total", outcome="accepted", reason="") == UPLOADS
        assert value(found, "michi_ingest_request_seconds_count", outcome="accepted") == UPLOADS
        assert value(found, "michi_ingest_received_bytes_total", content_type="application/x-protobuf") == sum(
            len(body) for body in bodies
        )
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
            assert {labels["pid"] for labels, _ in found[name]} == {str(worker.pid) for worker in workers}, name
        assert sorted(labels["generation"] for labels, _ in found["python_gc_collections_total"]) == ["0", "1", "2"]
        assert len(found["python_info"]) == 1
    assert uploads_count(kafka_bootstrap, topic_prefix) == UPLOADS
    # The run's metric files go with it.
    assert not directory.exists()


def test_one_worker_serves_its_own_metrics_without_files(
    kafka_bootstrap: str, redis_url: str, topic_prefix: str, michi_home: Path
) -> None:
    process, url, token = start(kafka_bootstrap, redis_url, topic_prefix, michi_home)
    try:
        wait_for_ingest(url, michi_home)
        with httpx.Client(base_url=url, timeout=15, headers={"authorization": f"Bearer {token}"}) as client:
            response = client.post("/v1/uploads", content=make_upload().SerializeToString(), headers=HEADERS)
            assert response.status_code == 202, response.text
            found = samples(client.get("/metrics").text)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, (michi_home / "ingest.log").read_text()

    assert value(found, "michi_ingest_uploads_total", outcome="accepted", reason="") == 1
    # This process's own figures, unlabelled, as before the workers' directory existed.
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        [(labels, figure)] = found[name]
        assert figure > 0 and ("pid" not in labels), name
    assert "michi_ingest_uploads_created" in found
    assert not (michi_home / "metrics").exists()
