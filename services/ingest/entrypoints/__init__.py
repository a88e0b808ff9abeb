"""Ingest entrypoints: the HTTP API (FastAPI)."""
