"""The warehouse sink: every `Prediction` and `Detection` into partitioned Parquet (see docs/warehouse.md)."""
