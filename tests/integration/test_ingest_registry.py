"""The device registry on each SQL backend: SQLite, and a real PostgreSQL server (the `postgres_url` fixture).

The URL is the only difference between the backends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.ingest.adapters.devices import DeviceRegistry
from services.ingest.bootstrap import device_registry
from services.ingest.domain.tokens import RevokedToken
from services.ingest.settings import IngestSettings


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=[pytest.mark.postgres]),
    ]
)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DeviceRegistry]:
    # Device ids are unique per test, so tests share the session's PostgreSQL database.
    url = f"sqlite:///{tmp_path / 'michi.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    built = device_registry(IngestSettings(database_url=url, home=tmp_path, ingest_token_cache_ttl_s=0))
    try:
        yield built
    finally:
        built.close()


def test_add_list_verify_revoke(registry: DeviceRegistry) -> None:
    device_id = f"device-{uuid.uuid4().hex[:8]}"  # unique: a PostgreSQL database outlives the test
    token = registry.add_device(device_id, label="bus 7")
    assert registry.verify(token) == device_id
    records = [record for record in registry.list_devices() if record.device_id == device_id]
    assert [(record.label, record.active) for record in records] == [("bus 7", True)]
    assert registry.revoke(device_id)
    with pytest.raises(RevokedToken):
        registry.verify(token)
    [record] = [record for record in registry.list_devices() if record.device_id == device_id]
    assert record.revoked_at is not None and record.revoked_at >= record.created_at
    registry.ping()
    registry.create_tables()  # idempotent
