"""Revisions of the model registry's tables (loaded by alembic, not imported)."""
