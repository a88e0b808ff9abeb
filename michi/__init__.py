"""Michi: an event-driven MLOps platform for AI dashcams (shared package)."""

__version__ = "0.1.0"
