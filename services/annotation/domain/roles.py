"""Who may do what: annotators work queues, leads also watch and adjudicate, admins also manage."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ANNOTATOR = "annotator"
    LEAD = "lead"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    WORK = "work"  # lease, answer, skip, own stats
    OVERSEE = "oversee"  # queue stats, agreement, others' stats, disputes, adjudication, gold
    ADMINISTER = "administer"  # accounts, rebuild of the live queues


PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ANNOTATOR: frozenset({Permission.WORK}),
    Role.LEAD: frozenset({Permission.WORK, Permission.OVERSEE}),
    Role.ADMIN: frozenset({Permission.WORK, Permission.OVERSEE, Permission.ADMINISTER}),
}


def allowed(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]
