"""Buffers of rows per Kafka partition, and how a buffer is cut into files.

A buffer is cut into runs of consecutive rows whose first row decides the file's hour folder:
a new run starts whenever a row's hour (UTC, of `occurred_at`) differs from the current run's.
Each run becomes one file named by its first offset and partition (`michi.warehouse.layout`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from michi.warehouse import Row, part_key


def _hour(moment: datetime) -> tuple[int, int, int, int]:
    return moment.year, moment.month, moment.day, moment.hour


@dataclass(frozen=True)
class FileRun:
    """Rows bound for one file, and the offset to commit once it is written."""

    key: str
    rows: list[Row]
    commit_offset: int


@dataclass
class PartitionBuffer:
    """What was read from one partition since its last commit."""

    kind: str
    topic: str
    partition: int
    opened_at: float
    rows: list[Row] = field(default_factory=list)
    # Offset after the last record read (rows and dead letters alike): where the next commit points.
    next_offset: int | None = None

    def add(self, row: Row | None, offset: int) -> None:
        """Record one message; `row` is None for a message that went to dead letters."""
        if row is not None:
            self.rows.append(row)
        self.next_offset = offset + 1

    def due(self, now: float, *, max_age_s: float, max_rows: int) -> bool:
        return self.next_offset is not None and (len(self.rows) >= max_rows or now - self.opened_at >= max_age_s)

    def file_runs(self) -> list[FileRun]:
        """The files to write, in offset order; the last run commits up to `next_offset`."""
        runs: list[list[Row]] = []
        for row in self.rows:
            if not runs or _hour(row["occurred_at"]) != _hour(runs[-1][0]["occurred_at"]):
                runs.append([])
            runs[-1].append(row)
        files = [
            FileRun(
                key=part_key(self.kind, run[0]["occurred_at"], self.partition, run[0]["kafka_offset"]),
                rows=run,
                commit_offset=run[-1]["kafka_offset"] + 1,
            )
            for run in runs
        ]
        if files and self.next_offset is not None:
            last = files[-1]
            files[-1] = FileRun(last.key, last.rows, self.next_offset)
        return files


def superseded_keys(existing: dict[int, str], run: FileRun) -> list[str]:
    """Files of an earlier pass that a rewritten run covers: their first offset lies inside the run.

    After a rewind (group reset, crash) the batches may be cut elsewhere than the first time; a
    file whose first record the new run now holds would duplicate it. Its later records, if any,
    are read again right after this run and land in the next file.
    """
    first, last = run.rows[0]["kafka_offset"], run.rows[-1]["kafka_offset"]
    return [key for offset, key in existing.items() if first <= offset <= last and key != run.key]
