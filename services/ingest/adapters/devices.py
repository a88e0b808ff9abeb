"""The device registry: which devices may upload, with their tokens stored as sha256 hashes (SQL).

Works on SQLite and PostgreSQL alike (only portable SQLModel/SQLAlchemy); the URL is
the only difference. `verify()` checks the signature first (no I/O), then the hash in SQL, and
remembers the answer. A revocation must bite within `cache_ttl_s` seconds across every ingest
process, so a remembered answer is trusted while it is younger than that, or while the registry
was checked for changes less than `cache_ttl_s` ago: every `add_device`, `rotate` and `revoke`
bumps a version row (`ingest_device_registry`), and ingest reads it every `cache_ttl_s / 2`
(`check_for_changes`, one small query a second whatever the fleet's size) and forgets every
answer when it moved. Answers are re-read from SQL at least every `MAX_ANSWER_AGE_S`.

A device holds one active token, except while a rotation overlaps: `rotate()` issues a new token
and sets the old one's `revoked_at` in the future (the end of the overlap), so both work until then.
A token is valid while `revoked_at` is empty or still ahead.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Column, DateTime, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, create_engine, select

from michi.migrations import upgrade_to_head
from services.ingest.adapters.migrations import MIGRATIONS
from services.ingest.domain.tokens import (
    InvalidToken,
    RevokedToken,
    UnknownToken,
    issue_token,
    token_hash,
    verify_signature,
)
from services.ingest.domain.validation import ID_PATTERN, text_problem

logger = logging.getLogger(__name__)

# Beyond this many cached tokens the cache starts over (only well-signed tokens get in).
MAX_CACHED_TOKENS = 100_000
# A remembered answer is read from SQL again after this long, changes or not.
MAX_ANSWER_AGE_S = 600.0
REGISTRY_VERSION_ROW = 1
# A label is free text shown by `michi devices list`: printable, and within its column.
MAX_LABEL_LENGTH = 200


class Device(SQLModel, table=True):
    """One issued token of one device (a device re-added after revocation gets a new row)."""

    __tablename__ = "ingest_device"

    token_id: str = Field(primary_key=True, max_length=32)
    device_id: str = Field(index=True, max_length=128)
    token_hash: str = Field(unique=True, max_length=64)
    label: str = Field(default="", max_length=MAX_LABEL_LENGTH)
    created_at: datetime = Field(sa_column=Column(DateTime(timezone=True), nullable=False))
    # When the token stops working: ahead of now while a rotation overlaps.
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True), nullable=True))


class DeviceRegistryVersion(SQLModel, table=True):
    """One row whose version every change of tokens bumps (what ingest processes watch)."""

    __tablename__ = "ingest_device_registry"

    id: int = Field(primary_key=True)
    version: int = Field(default=0)


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    token_id: str
    label: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Valid now (a rotated-out token stays active until its overlap ends)."""
        return _valid_at(self.revoked_at, datetime.now(UTC))


class DeviceAlreadyRegistered(ValueError):
    """The device already holds an active token (revoke it first to issue a new one)."""


class InvalidDeviceId(ValueError):
    pass


class InvalidDeviceLabel(ValueError):
    """A label over `MAX_LABEL_LENGTH` characters or with a character that is not printable."""


class UnknownDevice(LookupError):
    """The device has no active token (never added, or revoked)."""


def _utc(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; they were written in UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _valid_at(revoked_at: datetime | None, now: datetime) -> bool:
    # Compared in Python, not SQL: SQLite stores these as text without a zone.
    revoked = _utc(revoked_at)
    return revoked is None or revoked > now


class DeviceRegistry:
    def __init__(self, engine: Engine, secret: bytes, *, cache_ttl_s: float = 2.0) -> None:
        self.engine = engine
        self._secret = secret
        self._cache_ttl_s = cache_ttl_s
        # token hash -> (device id, or the rejection to raise again, monotonic expiry, monotonic time read)
        self._cache: dict[str, tuple[str | type[UnknownToken | RevokedToken], float, float]] = {}
        self._lock = threading.Lock()
        # The registry version last read, when (monotonic), and how many times the cache was dropped.
        self._version: int | None = None
        self._version_checked_at = float("-inf")
        self._generation = 0

    @classmethod
    def from_url(cls, database_url: str, secret: bytes, *, cache_ttl_s: float = 2.0) -> DeviceRegistry:
        engine = create_engine(database_url, pool_pre_ping=True)
        return cls(engine, secret, cache_ttl_s=cache_ttl_s)

    def create_tables(self) -> None:
        """Bring the device registry's tables to the newest schema (Alembic `upgrade head`), and its version row.

        Only these tables (other owners migrate theirs); safe when many ingest processes start at once.
        """
        upgrade_to_head(self.engine, MIGRATIONS)
        with Session(self.engine) as session:
            if session.get(DeviceRegistryVersion, REGISTRY_VERSION_ROW) is None:
                session.add(DeviceRegistryVersion(id=REGISTRY_VERSION_ROW, version=0))
                try:
                    session.commit()
                except IntegrityError:  # another process created it first
                    session.rollback()

    def close(self) -> None:
        self.engine.dispose()

    # --- administration (CLI)

    def add_device(self, device_id: str, label: str = "") -> str:
        """Register `device_id` and return its token; the token is shown once and never stored."""
        if ID_PATTERN.fullmatch(device_id) is None:
            raise InvalidDeviceId("device ids are 1-128 characters of A-Z a-z 0-9 . _ : -")
        problem = text_problem(label, MAX_LABEL_LENGTH)
        if problem is not None:
            raise InvalidDeviceLabel(f"the label {problem[1]}")
        token = issue_token(self._secret, device_id)
        with Session(self.engine) as session:
            if self._valid_rows(session, device_id, datetime.now(UTC)):
                raise DeviceAlreadyRegistered(f"device {device_id} already has an active token; revoke it first")
            session.add(self._new_row(token, device_id, label))
            self._bump_version(session)
            session.commit()
        return token

    def rotate(self, device_id: str, overlap_s: float = 3600) -> str:
        """A new token for `device_id`; its current token keeps working for `overlap_s` seconds more.

        The device switches to the new token at its own pace; revoking the device ends both at once.
        Raises `UnknownDevice` when the device has no active token.
        """
        if overlap_s < 0:
            raise ValueError("the overlap cannot be negative")
        token = issue_token(self._secret, device_id)
        now = datetime.now(UTC)
        overlap_end = now + timedelta(seconds=overlap_s)
        with Session(self.engine) as session:
            rows = self._valid_rows(session, device_id, now)
            if not rows:
                raise UnknownDevice(f"device {device_id} has no active token; add it instead")
            for row in rows:
                current_end = _utc(row.revoked_at)
                # An older token still in a previous overlap keeps its earlier end.
                row.revoked_at = overlap_end if current_end is None else min(current_end, overlap_end)
                session.add(row)
            session.add(self._new_row(token, device_id, rows[-1].label))
            self._bump_version(session)
            session.commit()
        self._forget_cached()
        return token

    def _new_row(self, token: str, device_id: str, label: str) -> Device:
        _, token_id = verify_signature(self._secret, token)
        return Device(
            token_id=token_id,
            device_id=device_id,
            token_hash=token_hash(token),
            label=label,
            created_at=datetime.now(UTC),
        )

    @staticmethod
    def _valid_rows(session: Session, device_id: str, now: datetime) -> list[Device]:
        rows = session.exec(
            select(Device).where(Device.device_id == device_id).order_by(Device.created_at, Device.token_id)  # type: ignore[arg-type]
        ).all()
        return [row for row in rows if _valid_at(row.revoked_at, now)]

    def _forget_cached(self) -> None:
        with self._lock:
            self._cache.clear()
            self._generation += 1

    def list_devices(self) -> list[DeviceRecord]:
        """Every issued token, oldest first (revoked ones included, with `revoked_at`)."""
        with Session(self.engine) as session:
            rows = session.exec(select(Device).order_by(Device.created_at, Device.token_id)).all()  # type: ignore[arg-type]
            return [
                DeviceRecord(
                    row.device_id, row.token_id, row.label, _utc(row.created_at) or row.created_at, _utc(row.revoked_at)
                )
                for row in rows
            ]

    def revoke(self, device_id: str) -> bool:
        """Revoke every token of the device now (a rotation's old token too); False when it had none."""
        now = datetime.now(UTC)
        with Session(self.engine) as session:
            rows = self._valid_rows(session, device_id, now)
            for row in rows:
                row.revoked_at = now
                session.add(row)
            self._bump_version(session)
            session.commit()
        self._forget_cached()
        return bool(rows)

    @staticmethod
    def _bump_version(session: Session) -> None:
        # One atomic increment in the change's own transaction (two concurrent changes make two bumps).
        session.exec(
            update(DeviceRegistryVersion)
            .where(DeviceRegistryVersion.id == REGISTRY_VERSION_ROW)  # type: ignore[arg-type]
            .values(version=DeviceRegistryVersion.version + 1)
        )

    def check_for_changes(self) -> bool:
        """Read the registry's version; when it moved, forget every remembered answer (True).

        Ingest calls this every `cache_ttl_s / 2`; while it succeeds, remembered answers stay trusted.
        """
        with Session(self.engine) as session:
            row = session.get(DeviceRegistryVersion, REGISTRY_VERSION_ROW)
            version = row.version if row is not None else 0
        with self._lock:
            # The first read counts as a change: answers remembered before it may predate a revocation.
            changed = version != self._version
            if changed:
                self._cache.clear()
                self._generation += 1
            self._version = version
            self._version_checked_at = time.monotonic()
        return changed

    # --- authentication (hot path)

    def cached_device(self, token: str) -> str | None:
        """The device id if the answer is cached (raises a cached rejection); None when SQL must be asked.

        Checks the signature first, so a forged token never costs a lookup.
        """
        verify_signature(self._secret, token)
        entry = self._cache.get(token_hash(token))
        if entry is None:
            return None
        outcome, expires_at, read_at = entry
        now = time.monotonic()
        if expires_at < now:
            return None
        if now - read_at > self._cache_ttl_s and now - self._version_checked_at > self._cache_ttl_s:
            return None  # older than a revocation may take to bite, and no recent check for changes
        if isinstance(outcome, str):
            return outcome
        raise outcome("token not accepted (cached)")

    def verify(self, token: str) -> str:
        """The device id the token authenticates; raises `TokenRejected` (invalid, unknown or revoked)."""
        cached = self.cached_device(token)
        if cached is not None:
            return cached
        device_id, _ = verify_signature(self._secret, token)
        digest = token_hash(token)
        # An answer read before a change was noticed must not be remembered after it.
        generation = self._generation
        with Session(self.engine) as session:
            row = session.exec(select(Device).where(Device.token_hash == digest)).first()
        outcome: str | type[UnknownToken | RevokedToken]
        cache_ttl_s = MAX_ANSWER_AGE_S
        if row is None or row.device_id != device_id:
            outcome = UnknownToken
        elif not _valid_at(row.revoked_at, datetime.now(UTC)):
            outcome = RevokedToken
        else:
            outcome = device_id
            revoked_at = _utc(row.revoked_at)
            if revoked_at is not None:
                # A rotated-out token is not cached past the end of its overlap.
                cache_ttl_s = min(cache_ttl_s, (revoked_at - datetime.now(UTC)).total_seconds())
        with self._lock:
            if len(self._cache) >= MAX_CACHED_TOKENS:
                self._cache.clear()
            if generation == self._generation:
                read_at = time.monotonic()
                self._cache[digest] = (outcome, read_at + cache_ttl_s, read_at)
        if isinstance(outcome, str):
            return outcome
        raise outcome("token revoked" if outcome is RevokedToken else "token not registered")

    async def watch_for_changes(self) -> None:
        """`check_for_changes` every `cache_ttl_s / 2`, off the event loop, until cancelled.

        While the database does not answer, remembered answers stop being trusted after `cache_ttl_s`
        (each request then asks SQL itself, and gets 503 `registry-unavailable` if it still cannot).
        """
        failing = False
        while True:
            try:
                await asyncio.to_thread(self.check_for_changes)
                if failing:
                    logger.info("device registry answers again")
                failing = False
            except SQLAlchemyError:
                if not failing:
                    logger.warning("device registry does not answer; cached tokens expire", exc_info=True)
                failing = True
            await asyncio.sleep(self._cache_ttl_s / 2)

    def ping(self) -> None:
        """Raises when the database does not answer `SELECT 1`."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))


__all__ = [
    "Device",
    "DeviceAlreadyRegistered",
    "DeviceRecord",
    "DeviceRegistry",
    "DeviceRegistryVersion",
    "InvalidDeviceId",
    "InvalidToken",
    "UnknownDevice",
]
