"""What the monitor reads of the platform's resources, and the day's cost (pure: no I/O, no clock).

`ServiceReading` is one scrape of one service's `/metrics`, `GroupLag` one consumer group's lag; the adapters
(`adapters/scrape.py`, `adapters/lag.py`) make them, `services/monitor/resources.py` judges them.

Counters (`process_cpu_seconds_total`, the trainer's run counters) only ever grow within one process, so what
a process used between two scrapes is the difference of its readings. `CounterIncreases` turns readings into
those increases without ever going negative: a process that restarted (another start time) or a counter that
went down counts its whole new value, the work done since it started.

`DailyCost` sums one UTC day: CPU seconds per service, predictions, labels, training runs, and prices them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The counters of the trainer's /metrics the cost report reads (`services/trainer/adapters/metrics.py`).
TRAINING_RUNS = "michi_trainer_runs_total"
# The trainer exports the wall-clock duration of its runs (a histogram); no CPU seconds per run.
TRAINING_RUN_SECONDS = "michi_trainer_run_seconds_sum"
TRAINER = "trainer"
SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class ProcessReading:
    """One process of a service: its CPU seconds so far and when it started (a new start time: a new process).

    `identity` tells the processes of a service apart: the `pid` label of a multiprocess service's samples,
    "" for a service of one process.
    """

    identity: str
    cpu_seconds: float
    started_at: float


@dataclass(frozen=True)
class ServiceReading:
    """One scrape of a service's `/metrics`: resident memory (summed over its processes), its memory limit
    (`michi_memory_limit_bytes`, None from a service that does not export it), its processes' CPU, and the sums
    of the counters the cost report reads (`TRAINING_RUNS`, `TRAINING_RUN_SECONDS`)."""

    service: str
    rss_bytes: float | None
    limit_bytes: float | None = None
    limit_source: str = ""
    processes: tuple[ProcessReading, ...] = ()
    counters: Mapping[str, float] = field(default_factory=dict)

    @property
    def started_at(self) -> float | None:
        """When the service's oldest process started: what its counters count from."""
        return min((process.started_at for process in self.processes), default=None)


@dataclass(frozen=True)
class GroupLag:
    """A consumer group's lag: records not yet committed (high watermark - committed, over its partitions) and
    the Kafka timestamp (seconds) of the oldest first-uncommitted record, None when there is none or it could
    not be read in time."""

    group: str
    records: int
    oldest_unconsumed_at: float | None = None

    def age_s(self, now: float) -> float | None:
        """How long the oldest unconsumed record has waited at `now`: 0 without lag, None when unknown."""
        if self.records <= 0:
            return 0.0
        if self.oldest_unconsumed_at is None:
            return None
        return max(0.0, now - self.oldest_unconsumed_at)


class CounterIncreases:
    """How much each counter grew since its last reading, never negative (module docstring)."""

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[float, float | None]] = {}

    def increase(self, key: Hashable, value: float, started_at: float | None, *, count_new: bool) -> float:
        """The growth of counter `key` since its last reading; a counter seen for the first time counts its whole
        value when `count_new` (a process that started since the last scrape), else nothing (the monitor's own
        first look: what came before is not this day's to count)."""
        if not math.isfinite(value):
            return 0.0
        last = self._last.get(key)
        self._last[key] = (value, started_at)
        if last is None:
            return max(value, 0.0) if count_new else 0.0
        previous, previous_start = last
        if started_at != previous_start or value < previous:
            return max(value, 0.0)
        return value - previous

    def tracks(self, key: Hashable) -> bool:
        """Whether counter `key` has a last reading."""
        return key in self._last

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Drop these counters (of processes that exited): memory stays bounded as workers come and go."""
        for key in keys:
            self._last.pop(key, None)


def parse_scrape_targets(text: str) -> dict[str, str]:
    """`name=http://host:port/metrics,...` as {name: URL}; `ValueError` naming what is wrong.

    Blank items are skipped; each other item needs a name and an http(s) URL, and a name may appear once.
    """
    targets: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, separator, url = (part.strip() for part in item.partition("="))
        if not separator or not name or not url:
            raise ValueError(f"{item.strip()!r} is not name=http://host:port/metrics")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the URL of {name!r} must start with http:// or https://, not {url!r}")
        if name in targets:
            raise ValueError(f"{name!r} is named twice")
        targets[name] = url
    return targets


def utc_day(now: float) -> str:
    """The UTC day of the Unix time `now`, as YYYY-MM-DD."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Prices:
    cpu_hour: float
    label: float


@dataclass
class DailyCost:
    """The sums of one UTC day, from `first_seen` (the first tick of the day, or the monitor's start) on."""

    day: str
    first_seen: float
    last_seen: float
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    predictions: int = 0
    labels: int = 0
    training_runs: float = 0.0
    training_run_seconds: float = 0.0

    def add_cpu(self, service: str, seconds: float) -> None:
        self.cpu_seconds[service] = self.cpu_seconds.get(service, 0.0) + seconds

    @property
    def cpu_hours(self) -> float:
        return sum(self.cpu_seconds.values()) / SECONDS_PER_HOUR

    def cost(self, prices: Prices) -> float:
        """The day's cost so far in USD: CPU hours of every service (the trainer's included) and labels."""
        return self.cpu_hours * prices.cpu_hour + self.labels * prices.label

    def cpu_seconds_per_1000_predictions(self, service: str) -> float:
        """`service`'s CPU seconds per 1,000 predictions the monitor counted today; NaN without predictions."""
        if self.predictions <= 0:
            return math.nan
        return self.cpu_seconds.get(service, 0.0) * 1000.0 / self.predictions

    def figures(self, prices: Prices) -> dict[str, float]:
        """The figures of the day's report (the `cost` alert)."""
        trainer_cpu_hours = self.cpu_seconds.get(TRAINER, 0.0) / SECONDS_PER_HOUR
        figures = {
            "cost_usd": self.cost(prices),
            "cpu_hours": self.cpu_hours,
            "cpu_cost_usd": self.cpu_hours * prices.cpu_hour,
            "price_cpu_hour_usd": prices.cpu_hour,
            "predictions": float(self.predictions),
            "labels": float(self.labels),
            "label_cost_usd": self.labels * prices.label,
            "price_label_usd": prices.label,
            "training_runs": self.training_runs,
            "training_run_hours": self.training_run_seconds / SECONDS_PER_HOUR,
            "trainer_cpu_hours": trainer_cpu_hours,
            "trainer_cost_usd": trainer_cpu_hours * prices.cpu_hour,
            "observed_seconds": self.last_seen - self.first_seen,
        }
        for service, seconds in sorted(self.cpu_seconds.items()):
            figures[f"cpu_seconds.{service}"] = seconds
            per_thousand = self.cpu_seconds_per_1000_predictions(service)
            if math.isfinite(per_thousand):
                figures[f"cpu_seconds_per_1000_predictions.{service}"] = per_thousand
        return figures
