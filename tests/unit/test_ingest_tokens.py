"""Device tokens: signing, verification, tampering, wrong secret; the SQLite registry behind them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from services.ingest.adapters.devices import DeviceAlreadyRegistered, DeviceRegistry, InvalidDeviceId
from services.ingest.domain.tokens import (
    InvalidToken,
    RevokedToken,
    UnknownToken,
    device_id_of,
    issue_token,
    token_hash,
    verify_signature,
)
from services.ingest.settings import IngestSettings
from services.ingest.wiring import device_registry

SECRET = b"unit-test-secret"


def test_a_token_names_its_device_and_verifies() -> None:
    token = issue_token(SECRET, "dashcam.007:eu-1", token_id="00ff00ff00ff00ff")
    assert verify_signature(SECRET, token) == ("dashcam.007:eu-1", "00ff00ff00ff00ff")
    assert device_id_of(token) == "dashcam.007:eu-1"


def test_tokens_are_unique_per_issue() -> None:
    assert issue_token(SECRET, "device-1") != issue_token(SECRET, "device-1")


def test_wrong_secret_is_refused() -> None:
    token = issue_token(SECRET, "device-1")
    with pytest.raises(InvalidToken):
        verify_signature(b"another-secret", token)


@pytest.mark.parametrize("position", [0, 1, 2, 3])
def test_tampering_with_any_part_is_refused(position: int) -> None:
    token = issue_token(SECRET, "device-1")
    parts = token.split(".")
    forged_part = issue_token(SECRET, "device-2").split(".")[position]
    parts[position] = forged_part if position else "mdt2"
    with pytest.raises(InvalidToken):
        verify_signature(SECRET, ".".join(parts))


@pytest.mark.parametrize("garbage", ["", "abc", "mdt1.a.b", "mdt1.a.b.c.d", "Bearer x"])
def test_garbage_is_refused(garbage: str) -> None:
    with pytest.raises(InvalidToken):
        verify_signature(SECRET, garbage)


def test_registry_stores_only_the_hash(tmp_path: Path) -> None:
    registry = DeviceRegistry.from_url(f"sqlite:///{tmp_path / 'devices.db'}", SECRET)
    registry.create_tables()
    try:
        token = registry.add_device("device-1", label="van 12")
        raw = (tmp_path / "devices.db").read_bytes()
        assert token.encode() not in raw
        assert token_hash(token).encode() in raw
        assert registry.verify(token) == "device-1"
        [record] = registry.list_devices()
        assert (record.device_id, record.label, record.active) == ("device-1", "van 12", True)
        assert record.created_at.tzinfo is not None
    finally:
        registry.close()


def test_registry_refuses_unknown_revoked_and_forged_tokens(tmp_path: Path) -> None:
    registry = DeviceRegistry.from_url(f"sqlite:///{tmp_path / 'devices.db'}", SECRET, cache_ttl_s=0.2)
    registry.create_tables()
    try:
        token = registry.add_device("device-1")
        assert registry.verify(token) == "device-1"
        with pytest.raises(UnknownToken):
            registry.verify(issue_token(SECRET, "device-1"))  # well signed, never registered
        with pytest.raises(InvalidToken):
            registry.verify(issue_token(b"other", "device-1"))
        with pytest.raises(DeviceAlreadyRegistered):
            registry.add_device("device-1")
        assert registry.revoke("device-1") is True
        assert registry.revoke("device-1") is False
        with pytest.raises(RevokedToken):
            registry.verify(token)
        new_token = registry.add_device("device-1")  # re-issue after revocation
        assert registry.verify(new_token) == "device-1"
        assert [record.active for record in registry.list_devices()] == [False, True]
        with pytest.raises(InvalidDeviceId):
            registry.add_device("bad id")
    finally:
        registry.close()


def test_revocation_from_another_process_bites_within_the_cache_ttl(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'devices.db'}"
    serving = DeviceRegistry.from_url(url, SECRET, cache_ttl_s=0.3)
    administering = DeviceRegistry.from_url(url, SECRET)
    serving.create_tables()
    try:
        token = administering.add_device("device-1")
        assert serving.verify(token) == "device-1"
        administering.revoke("device-1")
        assert serving.cached_device(token) == "device-1"  # still cached
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline and serving.cached_device(token) is not None:
            time.sleep(0.05)
        with pytest.raises(RevokedToken):
            serving.verify(token)
    finally:
        serving.close()
        administering.close()


def test_bootstrap_registry_creates_its_folder_and_table(tmp_path: Path) -> None:
    settings = IngestSettings(home=tmp_path / "home", database_url=None)
    registry = device_registry(settings)
    try:
        token = registry.add_device("device-9")
        assert registry.verify(token) == "device-9"
        assert (tmp_path / "home" / "michi.db").is_file()
    finally:
        registry.close()
