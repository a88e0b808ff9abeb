"""Entrypoints: the faust agent on the uploads topic and the health/metrics pages."""
