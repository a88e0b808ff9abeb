"""Entrypoints of the warehouse sink: the Kafka consumer loop and the health pages."""
