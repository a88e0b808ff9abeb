"""Revisions of the trainer's tables (loaded by alembic, not imported)."""
