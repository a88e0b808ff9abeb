"""The warehouse of predictions (4w2v): every `Prediction` and `Detection` as partitioned Parquet.

The warehouse sink (`services/warehouse`) writes the files; anyone queries them with DuckDB:

    from michi.warehouse import query
    query("SELECT model_version, data_version, occurred_at, latitude, longitude "
          "FROM detections WHERE trip_id = 'trip-7' ORDER BY occurred_at")

- `rows`: the row schema and the protobuf-to-row mapping;
- `layout`: file keys in the blob store (idempotent under redelivery);
- `query`: DuckDB views `predictions` and `detections` over those files.
"""

from michi.warehouse.layout import TABLES, part_key, table_glob
from michi.warehouse.query import connect, query, query_arrow, table_counts
from michi.warehouse.rows import (
    CLASS_NAMES,
    DETECTION,
    PREDICTION,
    WAREHOUSE_SCHEMA,
    Row,
    detection_row,
    prediction_row,
    rows_to_table,
)

__all__ = [
    "CLASS_NAMES",
    "DETECTION",
    "PREDICTION",
    "TABLES",
    "WAREHOUSE_SCHEMA",
    "Row",
    "connect",
    "detection_row",
    "part_key",
    "prediction_row",
    "query",
    "query_arrow",
    "rows_to_table",
    "table_counts",
    "table_glob",
]
