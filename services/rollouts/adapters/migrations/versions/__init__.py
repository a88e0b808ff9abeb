"""Revisions of the rollout controller's tables (loaded by alembic, not imported)."""
