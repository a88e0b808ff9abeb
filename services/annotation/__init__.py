"""The annotation service: label queues for people, consensus labels out (see docs/annotation.md)."""
