"""Pure ingest logic: upload validation, device tokens, sequence gaps (no I/O)."""
