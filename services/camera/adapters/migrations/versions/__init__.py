"""Revisions of the camera service's tables (loaded by alembic, not imported)."""
