"""Where warehouse files live in the blob store, and why their names make redelivery harmless.

    warehouse/predictions/date=2026-11-28/hour=13/part-<first offset>-<partition>.parquet
    warehouse/detections/date=2026-11-28/hour=13/part-<first offset>-<partition>.parquet

A file holds a run of consecutive records of one Kafka partition whose first record fell in that
hour (`occurred_at`, UTC). Its name depends only on that first record: its offset and partition.
The sink commits a partition's offset right after each file is written, so after a crash the
records are redelivered from the first offset of the only file that may be uncommitted: the new
file gets the same name and overwrites it (possibly ending earlier or later), and no row is stored
twice. Topics of the two kinds never share a folder, so `(kind, partition, first offset)` is unique.
"""

from __future__ import annotations

from datetime import UTC, datetime

ROOT = "warehouse"
# Table (DuckDB view) name -> folder under ROOT; the record kind is the singular.
TABLES: dict[str, str] = {"predictions": "prediction", "detections": "detection"}


def table_of_kind(kind: str) -> str:
    return next(table for table, table_kind in TABLES.items() if table_kind == kind)


def part_key(kind: str, first_occurred_at: datetime, partition: int, first_offset: int) -> str:
    """The blob key of the file whose first record is `partition@first_offset`, occurred at `first_occurred_at`."""
    moment = first_occurred_at.astimezone(UTC)
    return (
        f"{ROOT}/{table_of_kind(kind)}/date={moment:%Y-%m-%d}/hour={moment:%H}/part-{first_offset}-{partition}.parquet"
    )


def table_glob(root_url: str, table: str) -> str:
    """The glob of every file of `table` under a blob store root URL (as DuckDB reads it)."""
    return f"{root_url.rstrip('/')}/{ROOT}/{table}/**/*.parquet"
