"""Revisions of the device registry's tables (ingest) (loaded by alembic, not imported)."""
