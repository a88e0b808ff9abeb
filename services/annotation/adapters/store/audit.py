"""`AuditStore`: the audit trail; the other stores add their entries in the transaction they record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from services.annotation.adapters.store.database import SqlStore
from services.annotation.adapters.tables import AuditRow


class AuditStore(SqlStore):
    def audit(self, actor: str, action: str, *, now: datetime, task_id: str | None = None, **detail: Any) -> None:
        with self._writing() as session:
            session.add(AuditRow(at=now, actor=actor, action=action, task_id=task_id, detail=detail))
            session.commit()

    def audit_trail(self, *, task_id: str | None = None, actor: str | None = None, limit: int = 200) -> list[AuditRow]:
        with Session(self.engine) as session:
            query = select(AuditRow)
            if task_id is not None:
                query = query.where(AuditRow.task_id == task_id)
            if actor is not None:
                query = query.where(AuditRow.actor == actor)
            return list(session.exec(query.order_by(col(AuditRow.id)).limit(limit)))
