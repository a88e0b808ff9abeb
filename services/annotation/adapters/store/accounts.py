"""`AccountStore`: annotator accounts and their sessions (only token hashes are stored)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from services.annotation.adapters.store.database import SqlStore, utc
from services.annotation.adapters.tables import AnnotatorRow, AuditRow, SessionRow
from services.annotation.domain.roles import Role


class AnnotatorExists(ValueError):
    pass


class UnknownAnnotator(LookupError):
    pass


@dataclass(frozen=True)
class AnnotatorRecord:
    name: str
    role: Role
    password_hash: str
    created_at: datetime
    disabled: bool


@dataclass(frozen=True)
class SessionRecord:
    annotator: str
    role: Role
    expires_at: datetime


class AccountStore(SqlStore):
    def add_annotator(self, name: str, role: Role, password_hash: str, *, actor: str, now: datetime) -> None:
        with self._writing() as session:
            if session.get(AnnotatorRow, name) is not None:
                raise AnnotatorExists(f"annotator {name} exists")
            session.add(
                AnnotatorRow(name=name, role=role.value, password_hash=password_hash, created_at=now, created_by=actor)
            )
            session.add(
                AuditRow(at=now, actor=actor, action="annotator-added", detail={"name": name, "role": role.value})
            )
            try:
                session.commit()
            except IntegrityError as error:
                raise AnnotatorExists(f"annotator {name} exists") from error

    def set_password(self, name: str, password_hash: str, *, actor: str, now: datetime) -> None:
        """New password; every session of the account ends."""
        with self._writing() as session:
            row = session.get(AnnotatorRow, name)
            if row is None:
                raise UnknownAnnotator(name)
            row.password_hash = password_hash
            session.add(row)
            _revoke_all(session, name, now)
            session.add(AuditRow(at=now, actor=actor, action="password-reset", detail={"name": name}))
            session.commit()

    def set_disabled(self, name: str, disabled: bool, *, actor: str, now: datetime) -> None:
        with self._writing() as session:
            row = session.get(AnnotatorRow, name)
            if row is None:
                raise UnknownAnnotator(name)
            row.disabled_at = now if disabled else None
            session.add(row)
            if disabled:
                _revoke_all(session, name, now)
            action = "annotator-disabled" if disabled else "annotator-enabled"
            session.add(AuditRow(at=now, actor=actor, action=action, detail={"name": name}))
            session.commit()

    def annotator(self, name: str) -> AnnotatorRecord | None:
        with Session(self.engine) as session:
            row = session.get(AnnotatorRow, name)
            return None if row is None else _annotator_record(row)

    def annotators(self) -> list[AnnotatorRecord]:
        with Session(self.engine) as session:
            return [
                _annotator_record(row) for row in session.exec(select(AnnotatorRow).order_by(col(AnnotatorRow.name)))
            ]

    def create_session(self, name: str, token_hash: str, *, now: datetime, expires_at: datetime) -> None:
        with self._writing() as session:
            session.add(SessionRow(token_hash=token_hash, annotator=name, created_at=now, expires_at=expires_at))
            session.add(AuditRow(at=now, actor=name, action="signed-in", detail={"expires_at": expires_at.isoformat()}))
            session.commit()

    def session(self, token_hash: str, now: datetime) -> SessionRecord | None:
        """The live session behind a token hash (None: unknown, expired, revoked, or account disabled)."""
        with Session(self.engine) as session:
            found = session.exec(
                select(SessionRow, AnnotatorRow)
                .join(AnnotatorRow, col(AnnotatorRow.name) == col(SessionRow.annotator))
                .where(SessionRow.token_hash == token_hash)
            ).first()
        if found is None:
            return None
        row, annotator = found
        expires_at = utc(row.expires_at)
        if row.revoked_at is not None or expires_at <= now or annotator.disabled_at is not None:
            return None
        return SessionRecord(annotator.name, Role(annotator.role), expires_at)

    def revoke_session(self, token_hash: str, now: datetime) -> None:
        with self._writing() as session:
            row = session.get(SessionRow, token_hash)
            if row is not None and row.revoked_at is None:
                row.revoked_at = now
                session.add(row)
                session.add(AuditRow(at=now, actor=row.annotator, action="signed-out", detail={}))
                session.commit()


def _revoke_all(session: Session, name: str, now: datetime) -> None:
    for row in session.exec(
        select(SessionRow).where(SessionRow.annotator == name, col(SessionRow.revoked_at).is_(None))
    ):
        row.revoked_at = now
        session.add(row)


def _annotator_record(row: AnnotatorRow) -> AnnotatorRecord:
    return AnnotatorRecord(
        row.name, Role(row.role), row.password_hash, utc(row.created_at), row.disabled_at is not None
    )
