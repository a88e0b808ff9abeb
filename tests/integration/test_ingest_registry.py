"""The device registry on each SQL backend: SQLite, and a real PostgreSQL server (the `postgres_url` fixture).

The URL is the only difference between the backends.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.ingest.adapters.devices import DeviceRegistry, InvalidDeviceLabel
from services.ingest.domain.tokens import RevokedToken
from services.ingest.settings import IngestSettings
from services.ingest.wiring import device_registry


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


def test_remembered_tokens_are_forgotten_when_another_process_changes_the_registry(
    registry: DeviceRegistry, tmp_path: Path
) -> None:
    # `watcher` is this ingest process's registry; `registry` stands for the CLI in another process.
    device_id = f"device-{uuid.uuid4().hex[:8]}"
    token = registry.add_device(device_id)
    url = str(registry.engine.url.render_as_string(hide_password=False))
    watcher = device_registry(IngestSettings(database_url=url, home=tmp_path, ingest_token_cache_ttl_s=0.5))
    try:
        watcher.check_for_changes()
        assert watcher.verify(token) == device_id
        time.sleep(0.7)
        # Older than the TTL, and no check for changes since: not trusted any more.
        assert watcher.cached_device(token) is None
        # A check that finds nothing new: the remembered answer is trusted again, without SQL.
        assert watcher.check_for_changes() is False
        assert watcher.cached_device(token) == device_id

        assert registry.revoke(device_id)
        assert watcher.cached_device(token) == device_id  # until the next check, at most TTL / 2 away
        assert watcher.check_for_changes() is True
        assert watcher.cached_device(token) is None
        with pytest.raises(RevokedToken):
            watcher.verify(token)
        # The rejection is remembered in turn.
        with pytest.raises(RevokedToken):
            watcher.cached_device(token)
    finally:
        watcher.close()


@pytest.mark.asyncio
async def test_the_watch_keeps_running_through_a_database_outage(tmp_path: Path) -> None:
    database = tmp_path / "registry.db"
    registry = device_registry(
        IngestSettings(database_url=f"sqlite:///{database}", home=tmp_path, ingest_token_cache_ttl_s=1.0)
    )
    token = registry.add_device("device-a")
    watch = asyncio.create_task(registry.watch_for_changes())
    try:
        await asyncio.sleep(0.1)  # the first check forgets what was remembered before it
        assert registry.verify(token) == "device-a"
        await asyncio.sleep(1.3)
        # Older than the TTL: trusted because the watch checked for changes within the last 0.5 s.
        assert registry.cached_device(token) == "device-a", "trusted while the checks succeed"
        database.rename(tmp_path / "moved.db")
        registry.engine.dispose()
        failed_at = time.monotonic()
        while registry.cached_device(token) is not None:
            assert time.monotonic() - failed_at < 5.0, "not trusted once the checks fail"
            await asyncio.sleep(0.05)
        # Trusted for at most the TTL (1 s) after the last check that succeeded.
        assert time.monotonic() - failed_at <= 1.6
        assert not watch.done()
    finally:
        watch.cancel()
        registry.close()


@pytest.mark.parametrize("label", ["plate\x1b[2J", "two\nlines", "\u202eevil", "l" * 201])
def test_a_label_that_is_not_bounded_printable_text_is_refused_and_nothing_registered(
    registry: DeviceRegistry, label: str
) -> None:
    device_id = f"device-{uuid.uuid4().hex[:8]}"
    with pytest.raises(InvalidDeviceLabel):
        registry.add_device(device_id, label=label)
    assert [record for record in registry.list_devices() if record.device_id == device_id] == []
    assert registry.verify(registry.add_device(device_id, label="Kleintransporter 3,5 t " + "x" * 177)) == device_id


def test_michi_devices_add_refuses_a_bad_label_with_a_one_line_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from michi.cli import app

    monkeypatch.setenv("MICHI_HOME", str(tmp_path))
    monkeypatch.setenv("MICHI_DATABASE_URL", f"sqlite:///{tmp_path / 'michi.db'}")
    result = CliRunner().invoke(app, ["devices", "add", "dashcam-1", "--label", "van\x1b[31m"])
    assert result.exit_code == 1
    assert "label character 3 (U+001B) is not printable" in result.output
    assert "Traceback" not in result.output
    assert CliRunner().invoke(app, ["devices", "add", "dashcam-1", "--label", "van 12"]).exit_code == 0
