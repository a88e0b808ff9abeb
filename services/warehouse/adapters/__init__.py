"""Adapters of the warehouse sink: the Parquet writer over the blob store."""
