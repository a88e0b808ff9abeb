"""Ingest adapters: the device registry (SQL) and upload claims (Redis)."""
