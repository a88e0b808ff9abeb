"""Revisions of the annotation service's tables (loaded by alembic, not imported)."""
