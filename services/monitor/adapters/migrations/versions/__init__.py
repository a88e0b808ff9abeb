"""Revisions of the monitor's tables (loaded by alembic, not imported)."""
