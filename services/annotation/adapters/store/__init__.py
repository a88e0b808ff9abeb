"""`AnnotationStore`: the durable record in SQL (SQLite by default, PostgreSQL in production).

One store per aggregate, all over one engine (`database.SqlStore`): `accounts` (annotators and
sessions), `tasks` (label requests into tasks, their live form for Redis), `votes` (answers, skips,
consensus), `adjudication` (disputes, a lead's decision, gold), `labels` (labels and their outbox),
`statistics` (counts for the lead view) and `audit`. `AnnotationStore` is all of them on one
engine, the one object the handlers, the CLI and the tests use.

Decisions about one task (votes, skips, adjudication, gold) run in one transaction that first locks
the task's row (`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite this process serialises its writes,
and WAL mode with a busy timeout covers other processes), so two answers to one task never decide it
twice.
"""

from services.annotation.adapters.store.accounts import (
    AccountStore,
    AnnotatorExists,
    AnnotatorRecord,
    SessionRecord,
    UnknownAnnotator,
)
from services.annotation.adapters.store.adjudication import (
    AdjudicationStore,
    DisputedTask,
    NotDisputed,
    NotGoldable,
)
from services.annotation.adapters.store.audit import AuditStore
from services.annotation.adapters.store.labels import LabelStore
from services.annotation.adapters.store.statistics import QueueCounts, StatisticsStore, WorkCounts
from services.annotation.adapters.store.tasks import IntakeResult, TaskRecord, TaskStore, UnknownTask
from services.annotation.adapters.store.votes import SkipResult, VoteOutcome, VoteRecord, VoteResult, VoteStore


class AnnotationStore(AccountStore, TaskStore, VoteStore, AdjudicationStore, LabelStore, StatisticsStore, AuditStore):
    """Every part of the store on one engine and one writer lock."""


__all__ = [
    "AnnotationStore",
    "AnnotatorExists",
    "AnnotatorRecord",
    "DisputedTask",
    "IntakeResult",
    "NotDisputed",
    "NotGoldable",
    "QueueCounts",
    "SessionRecord",
    "SkipResult",
    "TaskRecord",
    "UnknownAnnotator",
    "UnknownTask",
    "VoteOutcome",
    "VoteRecord",
    "VoteResult",
    "WorkCounts",
]
