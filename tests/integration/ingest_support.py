"""Helpers the ingest integration tests share: settings pointing at the session's servers, topic counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from michi.bus.catalog import UPLOADS
from michi.bus.reader import end_offsets
from services.ingest.settings import IngestSettings


def settings_for(kafka_bootstrap: str, redis_url: str, topic_prefix: str, home: Path, **extra: Any) -> IngestSettings:
    """Ingest settings on the test's Kafka prefix, Redis, a SQLite file and a blob folder under `home`."""
    values: dict[str, Any] = {
        "kafka_bootstrap": kafka_bootstrap,
        "redis_url": redis_url,
        "topic_prefix": topic_prefix,
        "home": home,
        "database_url": f"sqlite:///{home / 'michi.db'}",
        "blob_url": f"file://{home / 'blobs'}",
    }
    values.update(extra)
    return IngestSettings(**values)


def uploads_count(kafka_bootstrap: str, topic_prefix: str) -> int:
    """Records on the uploads topic (high watermarks; `end_offsets` waits out a fresh topic's leader election)."""
    return sum(end_offsets(kafka_bootstrap, UPLOADS.name(topic_prefix), timeout=15).values())
