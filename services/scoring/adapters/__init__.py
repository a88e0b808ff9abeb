"""Adapters: where scoring state lives (faust tables), how it publishes (the shared producer), its topics."""
