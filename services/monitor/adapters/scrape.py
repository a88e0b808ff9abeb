"""Scraping the services' `/metrics` pages for what the resource watch reads (`ServiceReading`).

    scraper = MetricsScraper({"ingest": "http://127.0.0.1:8080/metrics", ...}, timeout_s=2.0)
    readings = scraper.read()       # {"ingest": ServiceReading(...) or None when it could not be scraped}
    scraper.close()

Each target is asked in turn with a short timeout; a service that refuses, times out, answers with an error or
with a page that does not parse is None for this round (not observed), never an error of the watch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import httpx
from prometheus_client.parser import text_string_to_metric_families

from michi.telemetry.metrics import MEMORY_LIMIT_METRIC
from services.monitor.domain.resources import TRAINING_RUN_SECONDS, TRAINING_RUNS, ProcessReading, ServiceReading

logger = logging.getLogger(__name__)

RESIDENT_MEMORY = "process_resident_memory_bytes"
CPU_SECONDS = "process_cpu_seconds_total"
START_TIME = "process_start_time_seconds"
COUNTERS = (TRAINING_RUNS, TRAINING_RUN_SECONDS)


def parse_service_metrics(service: str, page: str) -> ServiceReading:
    """The `ServiceReading` of one `/metrics` page (Prometheus text format).

    A multiprocess service's `process_*` samples carry each worker's `pid`: resident memory is summed over
    them and each is a process of its own; a service of one process has one unlabelled sample of each.
    """
    rss: float | None = None
    limit: float | None = None
    limit_source = ""
    cpu: dict[str, float] = {}
    started: dict[str, float] = {}
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            name = sample.name
            if name == RESIDENT_MEMORY:
                rss = (rss or 0.0) + sample.value
            elif name == MEMORY_LIMIT_METRIC and limit is None:
                limit, limit_source = sample.value, sample.labels.get("source", "")
            elif name == CPU_SECONDS:
                cpu[sample.labels.get("pid", "")] = sample.value
            elif name == START_TIME:
                started[sample.labels.get("pid", "")] = sample.value
            elif name in COUNTERS:
                counters[name] = counters.get(name, 0.0) + sample.value
    processes = tuple(
        ProcessReading(identity, seconds, started.get(identity, 0.0)) for identity, seconds in sorted(cpu.items())
    )
    return ServiceReading(service, rss, limit, limit_source, processes, counters)


class MetricsScraper:
    """Reads every target's `/metrics` (`targets`: service name -> URL) with one HTTP client."""

    def __init__(self, targets: Mapping[str, str], *, timeout_s: float = 2.0) -> None:
        self.targets = dict(targets)
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def read(self) -> dict[str, ServiceReading | None]:
        """Each target's reading, None for one that could not be scraped this time."""
        return {service: self.read_one(service, url) for service, url in self.targets.items()}

    def read_one(self, service: str, url: str) -> ServiceReading | None:
        try:
            response = self._client.get(url)
            response.raise_for_status()
            return parse_service_metrics(service, response.text)
        except (httpx.HTTPError, ValueError) as error:
            # Down, starting or not run here at all: not observed, no alert. Logged at DEBUG (every few seconds).
            logger.debug("metrics not scraped", extra={"service": service, "url": url, "error": str(error)[:200]})
            return None

    def close(self) -> None:
        self._client.close()
