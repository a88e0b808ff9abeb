"""Querying the warehouse with DuckDB: views `predictions` and `detections` over its Parquet files.

    rows = query("SELECT model_version, data_version, occurred_at, latitude, longitude "
                 "FROM detections WHERE trip_id = 'trip-7'", blob_url="file:///var/michi/blobs")

Each view reads `<blob root>/warehouse/<table>/**/*.parquet` with hive partitioning, so the
`date` (DATE) and `hour` (BIGINT) folder names are columns too and filters on them prune files.
A table with no file yet is an empty view of the same columns. Records delivered twice (same `event_id`)
appear once in the views; `<table>_all_copies` shows every stored copy.

`file://` roots are read straight from disk. For `s3://` roots DuckDB needs its `httpfs`
extension (`INSTALL httpfs; LOAD httpfs;`, plus S3 credentials as DuckDB secrets); `connect()`
loads it and fails with DuckDB's own message when it is not available.
"""

from __future__ import annotations

from typing import Any

import duckdb
import fsspec
import pyarrow as pa

from michi.warehouse.layout import TABLES, table_glob
from michi.warehouse.rows import WAREHOUSE_SCHEMA

PARTITION_COLUMNS = [pa.field("date", pa.date32()), pa.field("hour", pa.int64())]


def _default_blob_url() -> str:
    from michi.settings import MichiSettings, load_settings

    return load_settings(MichiSettings).resolved_blob_url()


def _root(blob_url: str) -> tuple[Any, str, str]:
    """The filesystem, its root path and the root as DuckDB should read it."""
    filesystem, root = fsspec.core.url_to_fs(blob_url)
    root = root.rstrip("/")
    local = "file" in (filesystem.protocol if isinstance(filesystem.protocol, tuple) else (filesystem.protocol,))
    return filesystem, root, root if local else str(filesystem.unstrip_protocol(root))


def connect(blob_url: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the `predictions` and `detections` views."""
    filesystem, root, duckdb_root = _root(blob_url or _default_blob_url())
    connection = duckdb.connect()
    if not duckdb_root.startswith("/") and "://" in duckdb_root:
        connection.execute("INSTALL httpfs; LOAD httpfs;")
    for table in TABLES:
        empty = pa.schema([*WAREHOUSE_SCHEMA, *PARTITION_COLUMNS]).empty_table()
        connection.register(f"{table}_empty", empty)
        if filesystem.glob(table_glob(root, table)):
            pattern = table_glob(duckdb_root, table).replace("'", "''")
            # Files written before a column was added lack it; the empty table in today's schema gives every
            # view every column, null where a file has none, even when no file has it yet.
            connection.execute(
                f"CREATE VIEW {table}_all_copies AS SELECT * FROM "
                f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true) "
                f"UNION ALL BY NAME SELECT * FROM {table}_empty"
            )
            # Delivery is at-least-once, so a record can be on the topic twice (same event_id, other offset):
            # the views keep the first copy of each event, as every idempotent consumer does.
            connection.execute(
                f"CREATE VIEW {table} AS SELECT * FROM {table}_all_copies "
                "QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) = 1"
            )
        else:
            connection.execute(f"CREATE VIEW {table}_all_copies AS SELECT * FROM {table}_empty")
            connection.execute(f"CREATE VIEW {table} AS SELECT * FROM {table}_empty")
    return connection


def query_arrow(sql: str, blob_url: str | None = None) -> pa.Table:
    """The result of `sql` over the warehouse views, as an Arrow table."""
    connection = connect(blob_url)
    try:
        result: pa.Table = connection.sql(sql).to_arrow_table()
        return result
    finally:
        connection.close()


def query(sql: str, blob_url: str | None = None) -> list[dict[str, Any]]:
    """The result of `sql` over the warehouse views, one dict per row."""
    rows: list[dict[str, Any]] = query_arrow(sql, blob_url).to_pylist()
    return rows


def table_counts(blob_url: str | None = None) -> dict[str, int]:
    """Each view and its number of rows."""
    connection = connect(blob_url)
    try:
        counts: dict[str, int] = {}
        for table in TABLES:
            fetched = connection.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(fetched[0]) if fetched else 0
        return counts
    finally:
        connection.close()
