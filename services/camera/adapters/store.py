"""`CameraStore`: both sides of the join and each stream's analysis state in SQL (the tables of `tables.py`).

Writes are idempotent: an upload is kept once (by upload id), a media item once (by its event id), and a media
item is settled (done or dead-lettered) once: `finish` marks it done and writes its stream's analysis state in one
transaction, so a crash before it leaves the item waiting and the state as it was, and the item is analysed again
from that state when Kafka redelivers it (its detections get the same ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, update
from sqlalchemy import select as select_columns
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, create_engine, select

from michi.migrations import upgrade_to_head
from services.camera.adapters.migrations import MIGRATIONS
from services.camera.adapters.tables import CameraMediaRow, CameraStreamRow, CameraUploadRow
from services.camera.domain.join import UploadFacts, upload_from_row

WAITING = "waiting"
DONE = "done"
DEAD_LETTERED = "dead-lettered"


@dataclass(frozen=True)
class StoredMedia:
    """A media item as kept: its MediaReceived bytes and where they were read."""

    event_id: str
    upload_id: str
    status: str
    message: bytes
    topic: str
    partition: int
    offset: int
    received_at: datetime


@dataclass(frozen=True)
class StreamState:
    state: dict[str, Any]
    last_frame_ms: int


class CameraStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def from_url(cls, database_url: str) -> CameraStore:
        store = cls(create_engine(database_url, pool_pre_ping=True))
        upgrade_to_head(store.engine, MIGRATIONS)
        return store

    def close(self) -> None:
        self.engine.dispose()

    # --- uploads

    def keep_upload(self, upload: UploadFacts, now: datetime) -> bool:
        """Keep the upload side; False when it was already kept (a redelivery)."""
        row = CameraUploadRow(
            upload_id=upload.upload_id,
            device_id=upload.device_id,
            driver_id=upload.driver_id,
            trip_id=upload.trip_id,
            sequence=upload.sequence,
            started_at_ms=upload.started_at_ms,
            trace_id=upload.trace_id,
            gps=upload.gps_json(),
            received_at=now,
        )
        return self._insert(row)

    def upload(self, upload_id: str) -> UploadFacts | None:
        with Session(self.engine) as session:
            row = session.exec(select(CameraUploadRow).where(CameraUploadRow.upload_id == upload_id)).first()
            if row is None:
                return None
            return upload_from_row(
                upload_id=row.upload_id,
                device_id=row.device_id,
                driver_id=row.driver_id,
                trip_id=row.trip_id,
                sequence=row.sequence,
                started_at_ms=row.started_at_ms,
                trace_id=row.trace_id,
                gps=row.gps,
            )

    # --- media

    def keep_media(
        self,
        *,
        event_id: str,
        upload_id: str,
        device_id: str,
        name: str,
        message: bytes,
        topic: str,
        partition: int,
        offset: int,
        now: datetime,
    ) -> bool:
        """Keep the media side, waiting; False when the item is already known (waiting, done or dead-lettered)."""
        row = CameraMediaRow(
            event_id=event_id,
            upload_id=upload_id,
            device_id=device_id,
            name=name,
            status=WAITING,
            message=message,
            topic=topic,
            partition=partition,
            record_offset=offset,
            received_at=now,
        )
        return self._insert(row)

    def media(self, event_id: str) -> StoredMedia | None:
        with Session(self.engine) as session:
            row = session.exec(select(CameraMediaRow).where(CameraMediaRow.event_id == event_id)).first()
            return None if row is None else _stored(row)

    def waiting_media(self, upload_id: str) -> list[StoredMedia]:
        with Session(self.engine) as session:
            rows = session.exec(
                select(CameraMediaRow).where(CameraMediaRow.upload_id == upload_id, CameraMediaRow.status == WAITING)
            ).all()
            return [_stored(row) for row in rows]

    def waiting_count(self) -> int:
        with Session(self.engine) as session:
            statement = select_columns(func.count()).where(col(CameraMediaRow.status) == WAITING)
            return int(session.execute(statement).scalar_one())

    def oldest_waiting(self, *, received_before: datetime | None = None, limit: int = 100) -> list[StoredMedia]:
        """Waiting media, oldest first (those received before `received_before` when given)."""
        statement = select(CameraMediaRow).where(CameraMediaRow.status == WAITING)
        if received_before is not None:
            statement = statement.where(col(CameraMediaRow.received_at) < received_before)
        with Session(self.engine) as session:
            rows = session.exec(
                statement.order_by(col(CameraMediaRow.received_at), col(CameraMediaRow.id)).limit(limit)
            )
            return [_stored(row) for row in rows.all()]

    def finish(
        self,
        event_id: str,
        *,
        detections: int,
        now: datetime,
        stream: str | None = None,
        state: dict[str, Any] | None = None,
        last_frame_ms: int = 0,
    ) -> bool:
        """Mark a waiting item done and write its stream's state, in one transaction; False when it was settled."""
        with Session(self.engine) as session:
            marked = session.execute(
                update(CameraMediaRow)
                .where(col(CameraMediaRow.event_id) == event_id, col(CameraMediaRow.status) == WAITING)
                .values(status=DONE, detections=detections, settled_at=now)
            )
            if marked.rowcount != 1:  # type: ignore[attr-defined]
                session.rollback()
                return False
            if stream is not None and state is not None:
                row = session.exec(select(CameraStreamRow).where(CameraStreamRow.stream == stream)).first()
                if row is None:
                    row = CameraStreamRow(stream=stream, updated_at=now)
                # A new dict: SQLAlchemy sees a changed JSON value only when it is another object.
                row.state = dict(state)
                row.last_frame_ms = last_frame_ms
                row.updated_at = now
                session.add(row)
            session.commit()
            return True

    def dead_lettered(self, event_id: str, reason: str, now: datetime) -> bool:
        with Session(self.engine) as session:
            marked = session.execute(
                update(CameraMediaRow)
                .where(col(CameraMediaRow.event_id) == event_id, col(CameraMediaRow.status) == WAITING)
                .values(status=DEAD_LETTERED, reason=reason[:64], settled_at=now)
            )
            session.commit()
            return bool(marked.rowcount == 1)  # type: ignore[attr-defined]

    # --- analysis states

    def stream(self, stream: str) -> StreamState | None:
        with Session(self.engine) as session:
            row = session.exec(select(CameraStreamRow).where(CameraStreamRow.stream == stream)).first()
            return None if row is None else StreamState(dict(row.state), int(row.last_frame_ms))

    # --- bounds

    def forget_uploads(self, *, received_before: datetime, keep_newest: int) -> int:
        """Delete uploads received before a time, and the oldest beyond a count; how many went."""
        removed = 0
        with Session(self.engine) as session:
            removed += _rowcount(
                session.execute(delete(CameraUploadRow).where(col(CameraUploadRow.received_at) < received_before))
            )
            removed += _delete_beyond(session, CameraUploadRow, keep_newest, [])
            session.commit()
        return removed

    def forget_settled(self, *, settled_before: datetime, keep_newest: int) -> int:
        """Delete settled media rows (done, dead-lettered) settled before a time or beyond a count."""
        settled = col(CameraMediaRow.status) != WAITING
        with Session(self.engine) as session:
            removed = _rowcount(
                session.execute(delete(CameraMediaRow).where(settled, col(CameraMediaRow.settled_at) < settled_before))
            )
            removed += _delete_beyond(session, CameraMediaRow, keep_newest, [settled])
            session.commit()
        return removed

    def forget_streams(self, *, updated_before: datetime) -> int:
        with Session(self.engine) as session:
            removed = _rowcount(
                session.execute(delete(CameraStreamRow).where(col(CameraStreamRow.updated_at) < updated_before))
            )
            session.commit()
        return removed

    def counts(self) -> dict[str, int]:
        """Rows per kind: uploads, waiting media, settled media, streams (for the gauges)."""
        with Session(self.engine) as session:
            uploads = session.execute(select_columns(func.count()).select_from(CameraUploadRow)).scalar_one()
            statuses = select_columns(col(CameraMediaRow.status), func.count()).group_by(col(CameraMediaRow.status))
            media: dict[str, int] = {str(status): int(count) for status, count in session.execute(statuses).all()}
            streams = session.execute(select_columns(func.count()).select_from(CameraStreamRow)).scalar_one()
        return {
            "uploads": int(uploads),
            "waiting": int(media.get(WAITING, 0)),
            "settled": int(sum(count for status, count in media.items() if status != WAITING)),
            "streams": int(streams),
        }

    def _insert(self, row: Any) -> bool:
        with Session(self.engine) as session:
            session.add(row)
            try:
                session.commit()
                return True
            except IntegrityError:
                session.rollback()
                return False


def _stored(row: CameraMediaRow) -> StoredMedia:
    return StoredMedia(
        event_id=row.event_id,
        upload_id=row.upload_id,
        status=row.status,
        message=bytes(row.message),
        topic=row.topic,
        partition=row.partition,
        offset=row.record_offset,
        received_at=row.received_at,
    )


def _rowcount(result: Any) -> int:
    return int(result.rowcount or 0)


def _delete_beyond(session: Session, table: Any, keep_newest: int, where: Sequence[Any]) -> int:
    """Delete the oldest rows of `table` (by id) matching `where` beyond the newest `keep_newest`."""
    total = int(session.execute(select_columns(func.count()).select_from(table).where(*where)).scalar_one())
    excess = total - keep_newest
    if excess <= 0:
        return 0
    oldest = select_columns(table.id).where(*where).order_by(table.id).limit(excess)
    ids = [identifier for (identifier,) in session.execute(oldest).all()]
    return _rowcount(session.execute(delete(table).where(table.id.in_(ids))))
