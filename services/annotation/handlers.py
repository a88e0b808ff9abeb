"""What the annotation service does with each request and message.

`AnnotationService` works the queues (intake of label requests, lease, answer, skip, adjudication,
gold, rebuild, upkeep) and `Accounts` signs people in. Both are plain synchronous objects over the
adapters `wiring` gives them; the HTTP routes call them. The Kafka consumer hands each decoded request to
`handle_label_request`: one that cannot become a task is refused `invalid-request` (the consumer's loop
dead-letters it), the others are located on the road (from their archived upload) and taken in.

Labels leave through the `LabelPublisher` port and window uploads are read through `WindowUploads`, both
declared here (`adapters/publisher.KafkaLabelPublisher`, `adapters/windows.ArchiveWindowSource`); SQL and
Redis are reached through `AnnotationStore` and `RedisQueues` themselves.

Order of effects for an answer: Redis takes the task off the lease (atomic script), SQL records
the vote and the decision in one transaction, Redis moves the task on (back to its pool, or out),
and only then is a decided label published; a label Kafka did not acknowledge stays unpublished
in SQL and upkeep sends it again with the same event id.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from opentelemetry import trace

from michi.bus.headers import links_to
from michi.bus.producer import Delivery
from michi.contracts import timestamp_to_seconds
from michi.contracts.v1 import common_pb2, labels_pb2, upload_pb2
from michi.kit.consumer import Rejected
from services.annotation.adapters.queues import Lease, RedisQueues, TakeStatus
from services.annotation.adapters.store import (
    AnnotationStore,
    AnnotatorExists,
    DisputedTask,
    IntakeResult,
    NotDisputed,
    NotGoldable,
    SessionRecord,
    UnknownAnnotator,
    UnknownTask,
    VoteOutcome,
)
from services.annotation.domain.agreement import AgreementReport, agreement_report
from services.annotation.domain.consensus import ConsensusPolicy
from services.annotation.domain.credentials import (
    InvalidName,
    check_name,
    hash_password,
    looks_like_session_token,
    new_password,
    new_session_token,
    token_hash,
    verify_password,
)
from services.annotation.domain.frames import evidence_offsets, task_kind
from services.annotation.domain.labels import (
    MOTION,
    TASK_KINDS,
    LabelChoice,
    UnknownAnswer,
    choice_by_name,
    choices_for,
    event_type_name,
)
from services.annotation.domain.quality import Quality, QualityPolicy, assess
from services.annotation.domain.roles import Permission, Role, allowed
from services.annotation.domain.tasks import GOLD_POOL, QUEUE_PATTERN, InvalidRequest, TaskStatus, check_request
from services.annotation.domain.windows import window_location
from services.annotation.metrics import AnnotationMetrics

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

SERVICE = "annotation"
# A task taken off its lease for an answer longer than this ago, and not moved on, was abandoned
# by a crashed process: upkeep puts it where SQL says it belongs.
STALE_PROCESSING_S = 60.0
# Labels younger than this are left to the request that decided them; older unpublished ones are re-sent.
OUTBOX_GRACE_S = 5.0
PUBLISH_TIMEOUT_S = 10.0
QUALITY_CACHE_S = 10.0
SESSION_CACHE_S = 2.0
MAX_REASON_LENGTH = 200
# A hash that never matches, checked for unknown names so sign-in takes as long either way.
_DUMMY_HASH = hash_password("not-a-password-of-anyone", n=2**14)


class LabelPublisher(Protocol):
    """The port decided labels leave through (`adapters/publisher.KafkaLabelPublisher`)."""

    def publish(self, label: labels_pb2.Label) -> concurrent.futures.Future[Delivery]:
        """Send the label; the future resolves once the broker acknowledged it (acks=all)."""
        ...


class WindowUploads(Protocol):
    """The port the archived upload of a request's window is read through (`adapters/windows.ArchiveWindowSource`)."""

    async def upload(self, lineage: common_pb2.Lineage, window_started_at: datetime) -> upload_pb2.Upload | None:
        """The archived upload the lineage names, or None when the archive does not have it."""
        ...


class Refused(Exception):
    """A request the service turns down: HTTP status, kebab-case reason, human detail."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role

    def require(self, permission: Permission) -> None:
        if not allowed(self.role, permission):
            raise Refused(403, "forbidden", f"the {self.role.value} role may not {permission.value}")


@dataclass(frozen=True)
class ServiceConfig:
    consensus: ConsensusPolicy = field(default_factory=ConsensusPolicy)
    quality: QualityPolicy = field(default_factory=QualityPolicy)
    lease_s: float = 120.0
    lease_scan: int = 200
    max_skips: int = 5
    rate_per_s: int = 30
    session_ttl_s: float = 12 * 3600.0
    signin_attempts: int = 10
    signin_window_s: int = 300
    context_s: float = 2.0
    max_points: int = 1500


@dataclass(frozen=True)
class TaskView:
    """What an annotator sees of a leased task: never its reason, priority or a known answer."""

    task_id: str
    lease_id: str
    lease_expires_at: datetime
    queue: str
    suggestion: str
    confidence: float | None
    alternative: str
    window_started_at: datetime | None
    window_ended_at: datetime | None
    # `motion` or `camera` (a camera detection's review), and a camera task's evidence frames.
    kind: str = MOTION
    frame_offsets_ms: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class VoteAnswer:
    task_id: str
    answer: str
    # counted: it counts towards the task's label; extra: kept, but the task had moved on; duplicate: answered before.
    recorded_as: str


@dataclass(frozen=True)
class MyStats:
    annotator: str
    votes_total: int
    votes_last_hour: int
    votes_last_day: int
    skips_total: int
    last_vote_at: datetime | None
    gold_answers: int
    gold_accuracy: float | None


@dataclass(frozen=True)
class QueueStats:
    queue: str
    waiting: int
    in_progress: int
    adjudication: int
    oldest_waiting_age_s: float | None
    votes_last_hour: int
    labels_last_hour: int


@dataclass(frozen=True)
class AnnotatorStats:
    annotator: str
    role: str
    disabled: bool
    votes_total: int
    votes_last_hour: int
    skips_total: int
    gold_answers: int
    gold_accuracy: float | None
    weight: float
    below_threshold: bool
    gold_rate: float
    consensus_votes: int
    consensus_agreement: float | None


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class Accounts:
    """Accounts, sign-in and sessions (tokens hashed at rest, cached for at most `SESSION_CACHE_S`)."""

    def __init__(
        self,
        store: AnnotationStore,
        queues: RedisQueues,
        config: ServiceConfig,
        *,
        clock: Callable[[], float] = time.time,
        password_work: int = 2**14,
    ) -> None:
        self.store = store
        self.queues = queues
        self.config = config
        self.clock = clock
        self.password_work = password_work
        self._cache: dict[str, tuple[SessionRecord, float]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, role: Role, *, actor: str, password: str | None = None) -> str:
        """Create an account; returns its password (generated unless given), shown once and never stored."""
        try:
            check_name(name)
        except InvalidName as error:
            raise Refused(422, "invalid-name", str(error)) from error
        secret = password or new_password()
        try:
            password_hash = hash_password(secret, n=self.password_work)
        except ValueError as error:
            raise Refused(422, "invalid-password", str(error)) from error
        try:
            self.store.add_annotator(name, role, password_hash, actor=actor, now=_moment(self.clock()))
        except AnnotatorExists as error:
            raise Refused(409, "annotator-exists", str(error)) from error
        logger.info("annotator added", extra={"annotator": name, "role": role.value, "actor": actor})
        return secret

    def reset_password(self, name: str, *, actor: str) -> str:
        secret = new_password()
        try:
            self.store.set_password(
                name, hash_password(secret, n=self.password_work), actor=actor, now=_moment(self.clock())
            )
        except UnknownAnnotator as error:
            raise Refused(404, "unknown-annotator", f"no annotator {name}") from error
        self._forget()
        return secret

    def set_disabled(self, name: str, disabled: bool, *, actor: str) -> None:
        try:
            self.store.set_disabled(name, disabled, actor=actor, now=_moment(self.clock()))
        except UnknownAnnotator as error:
            raise Refused(404, "unknown-annotator", f"no annotator {name}") from error
        self._forget()

    def sign_in(self, name: str, password: str) -> tuple[str, SessionRecord]:
        """A new session token for a correct name and password; 401 otherwise, 429 after too many failures."""
        if self.queues.signin_failures(name) >= self.config.signin_attempts:
            raise Refused(
                429,
                "too-many-attempts",
                "too many failed sign-ins for this name; try again later",
                {"Retry-After": str(self.config.signin_window_s)},
            )
        record = self.store.annotator(name)
        valid = verify_password(password, record.password_hash if record else _DUMMY_HASH)
        if record is None or not valid or record.disabled:
            self.queues.count_signin_failure(name, self.config.signin_window_s)
            logger.info("sign-in refused", extra={"annotator": name})
            raise Refused(401, "invalid-credentials", "unknown name, wrong password, or a disabled account")
        token = new_session_token()
        now = _moment(self.clock())
        expires_at = now + timedelta(seconds=self.config.session_ttl_s)
        self.store.create_session(name, token_hash(token), now=now, expires_at=expires_at)
        return token, SessionRecord(name, record.role, expires_at)

    def authenticate(self, token: str) -> Principal:
        if not looks_like_session_token(token):
            raise Refused(401, "invalid-token", "not an annotation session token")
        digest = token_hash(token)
        now = self.clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now and cached[0].expires_at.timestamp() > now:
            return Principal(cached[0].annotator, cached[0].role)
        record = self.store.session(digest, _moment(now))
        if record is None:
            raise Refused(401, "invalid-token", "session unknown, expired or signed out")
        with self._lock:
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (record, now + SESSION_CACHE_S)
        return Principal(record.annotator, record.role)

    def sign_out(self, token: str) -> None:
        digest = token_hash(token)
        self.store.revoke_session(digest, _moment(self.clock()))
        with self._lock:
            self._cache.pop(digest, None)

    def _forget(self) -> None:
        with self._lock:
            self._cache.clear()


class AnnotationService:
    def __init__(
        self,
        *,
        store: AnnotationStore,
        queues: RedisQueues,
        publisher: LabelPublisher,
        metrics: AnnotationMetrics,
        config: ServiceConfig,
        clock: Callable[[], float] = time.time,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.queues = queues
        self.publisher = publisher
        self.metrics = metrics
        self.config = config
        self.clock = clock
        self.chance = chance
        self._qualities: dict[str, tuple[Quality, float]] = {}
        self._rebuild_lock = threading.Lock()

    # ------------------------------------------------------------------ intake

    def intake(self, request: labels_pb2.LabelRequest, *, location: tuple[float, float] | None = None) -> IntakeResult:
        """A LabelRequest becomes a task, or merges into its window's task; redelivery changes nothing.

        Raises `InvalidRequest` for a request that cannot become a task.
        """
        check_request(request)
        result = self.store.record_request(request, now=_moment(self.clock()), location=location)
        # Redis follows SQL even for a redelivered request: the first delivery may have died in between.
        if result.live is not None:
            self.queues.upsert(result.live)
        else:
            self.queues.remove(request.lineage.window_id)
        outcome = "duplicate" if not result.new_request else ("new" if result.new_task else "merged")
        self.metrics.requests.labels(outcome).inc()
        return result

    # ------------------------------------------------------------------ the annotator's loop

    def quality(self, annotator: str) -> Quality:
        now = self.clock()
        cached = self._qualities.get(annotator)
        if cached is not None and cached[1] > now:
            return cached[0]
        policy = self.config.quality
        quality = assess(self.store.gold_results(annotator, policy.window), policy)
        self._qualities[annotator] = (quality, now + QUALITY_CACHE_S)
        return quality

    def lease(self, principal: Principal, queue: str) -> TaskView | None:
        """The next task of `queue` for this annotator, leased to them (None: nothing for them now)."""
        principal.require(Permission.WORK)
        if QUEUE_PATTERN.fullmatch(queue) is None or queue == GOLD_POOL:
            raise Refused(422, "invalid-queue", "queue names are 1-40 characters of a-z 0-9 -")
        started = time.perf_counter()
        prefer_gold = self.chance() < self.quality(principal.name).gold_rate
        for _ in range(3):
            lease = self.queues.lease(
                queue,
                principal.name,
                lease_id=uuid.uuid4().hex,
                now_s=self.clock(),
                lease_s=self.config.lease_s,
                prefer_gold=prefer_gold,
                scan=self.config.lease_scan,
            )
            if lease is None:
                self.metrics.leases.labels("empty").inc()
                return None
            view = self._view(lease, queue)
            if view is not None:
                self.metrics.leases.labels("new" if lease.new else "held").inc()
                self.metrics.latency.labels("lease").observe(time.perf_counter() - started)
                return view
            # Redis served a task SQL does not know or has decided (a merge racing a decision, or a
            # replaced database): drop it from the live queues and lease again.
            logger.warning("live queue held a task that is not open", extra={"task_id": lease.task_id})
            self.queues.take(lease.task_id, lease.lease_id, principal.name, now_s=self.clock(), allow_late=False)
            self.queues.finish(lease.task_id, "", "remove", None, held=True)
        return None

    def _view(self, lease: Lease, queue: str) -> TaskView | None:
        record = self.store.task(lease.task_id)
        if record is None or record.status not in (TaskStatus.OPEN, TaskStatus.GOLD):
            return None
        request = record.request
        window = request.window
        has_window = window.HasField("started_at") and window.HasField("ended_at")
        return TaskView(
            task_id=lease.task_id,
            lease_id=lease.lease_id,
            lease_expires_at=_moment(lease.expires_at_s),
            queue=queue,
            suggestion=event_type_name(request.suggested),
            confidence=round(float(request.confidence), 4) if request.suggested else None,
            alternative=event_type_name(request.alternative),
            window_started_at=_moment(timestamp_to_seconds(window.started_at)) if has_window else None,
            window_ended_at=_moment(timestamp_to_seconds(window.ended_at)) if has_window else None,
            kind=task_kind(request),
            frame_offsets_ms=evidence_offsets(request),
        )

    def _check_fits(self, task_id: str, choice: LabelChoice) -> None:
        """Refuse an answer the task's kind does not offer (a camera review answered `harsh-braking`): the answers
        `choices_for(kind)` names, which `GET /v1/disputes` lists for each disputed task."""
        if set(TASK_KINDS) <= set(choice.tasks):  # `normal` fits every task: no read needed
            return
        record = self.store.task(task_id)
        if record is None:
            return  # the caller answers unknown-task
        kind = task_kind(record.request)
        if choice not in choices_for(kind):
            raise Refused(422, "answer-does-not-fit", f"{choice.name} is not an answer for a {kind} task")

    def submit(self, principal: Principal, task_id: str, lease_id: str, answer: str) -> VoteAnswer:
        """Record an answer given under `lease_id` (on time, late, or as an extra vote)."""
        principal.require(Permission.WORK)
        started = time.perf_counter()
        try:
            choice = choice_by_name(answer)
        except UnknownAnswer as error:
            raise Refused(422, "unknown-answer", str(error)) from error
        self._check_fits(task_id, choice)
        status = self.queues.take(task_id, lease_id, principal.name, now_s=self.clock(), allow_late=True)
        if status == TakeStatus.UNKNOWN:
            raise Refused(409, "unknown-lease", "no lease with this id for this task and annotator")
        held = status in (TakeStatus.CURRENT, TakeStatus.LATE)
        try:
            result = self.store.record_vote(
                task_id,
                principal.name,
                choice.event_type,
                lease_id=lease_id,
                counted=held,
                late=status != TakeStatus.CURRENT,
                now=_moment(self.clock()),
                consensus=self.config.consensus,
                quality=self.config.quality,
            )
        except UnknownTask as error:
            self.queues.finish(task_id, "", "remove", None, held=held)
            raise Refused(404, "unknown-task", f"no task {task_id}") from error
        except Exception:
            if held:
                self.queues.restore(task_id, lease_id, principal.name)
            raise
        redis_outcome = {
            VoteOutcome.REQUEUE: "requeue",
            VoteOutcome.DONE: "remove",
            VoteOutcome.ADJUDICATE: "remove",
        }.get(result.outcome, "exclude")
        if redis_outcome == "requeue" and result.live is None:
            redis_outcome = "remove"
        self.queues.finish(task_id, principal.name, redis_outcome, result.live, held=held)
        if result.gold_result is not None:
            self._qualities.pop(principal.name, None)
        if result.outcome == VoteOutcome.ADJUDICATE:
            self.metrics.decisions.labels("adjudication-needed").inc()
            logger.info("task sent to adjudication", extra={"task_id": task_id})
        if result.label is not None:
            self.metrics.decisions.labels("consensus").inc()
            self.publish([result.label])
        kind = "duplicate" if result.duplicate or status == TakeStatus.USED else ("extra" if not held else status)
        self.metrics.votes.labels(kind).inc()
        self.metrics.latency.labels("submit").observe(time.perf_counter() - started)
        recorded_as = "duplicate" if kind == "duplicate" else ("extra" if kind == "extra" else "counted")
        return VoteAnswer(task_id, choice.name, recorded_as)

    def skip(self, principal: Principal, task_id: str, lease_id: str, reason: str) -> str:
        """Give a leased task back with a reason; it is not served to this annotator again."""
        principal.require(Permission.WORK)
        reason = reason.strip()
        if not 1 <= len(reason) <= MAX_REASON_LENGTH:
            raise Refused(422, "invalid-reason", f"a skip needs a reason of 1-{MAX_REASON_LENGTH} characters")
        status = self.queues.take(task_id, lease_id, principal.name, now_s=self.clock(), allow_late=False)
        if status == TakeStatus.UNKNOWN:
            raise Refused(409, "unknown-lease", "no lease with this id for this task and annotator")
        if status == TakeStatus.EXPIRED:
            raise Refused(409, "lease-expired", "the lease ran out; the task went back to its queue")
        held = status != TakeStatus.USED
        try:
            result = self.store.record_skip(
                task_id,
                principal.name,
                reason,
                lease_id=lease_id,
                now=_moment(self.clock()),
                max_skips=self.config.max_skips,
            )
        except UnknownTask as error:
            self.queues.finish(task_id, "", "remove", None, held=held)
            raise Refused(404, "unknown-task", f"no task {task_id}") from error
        except Exception:
            if held:
                self.queues.restore(task_id, lease_id, principal.name)
            raise
        outcome = "requeue" if result.outcome == VoteOutcome.REQUEUE and result.live is not None else "remove"
        if result.duplicate:
            outcome = "exclude"
        self.queues.finish(task_id, principal.name, outcome, result.live, held=held)
        if result.outcome == VoteOutcome.ADJUDICATE:
            self.metrics.decisions.labels("adjudication-needed").inc()
        self.metrics.skips.inc()
        return "duplicate" if result.duplicate else "skipped"

    def can_see(self, principal: Principal, task_id: str) -> bool:
        """The task's data is for the annotator holding it, and for leads."""
        if allowed(principal.role, Permission.OVERSEE):
            return True
        return self.queues.holder(task_id) == principal.name

    def my_stats(self, principal: Principal) -> MyStats:
        principal.require(Permission.WORK)
        counts = self.store.work_counts(principal.name, _moment(self.clock()))
        quality = assess(self.store.gold_results(principal.name, self.config.quality.window), self.config.quality)
        return MyStats(
            annotator=principal.name,
            votes_total=counts.votes_total,
            votes_last_hour=counts.votes_last_hour,
            votes_last_day=counts.votes_last_day,
            skips_total=counts.skips_total,
            last_vote_at=counts.last_vote_at,
            gold_answers=quality.answers,
            gold_accuracy=quality.accuracy,
        )

    # ------------------------------------------------------------------ leads

    def queue_stats(self, principal: Principal) -> list[QueueStats]:
        principal.require(Permission.OVERSEE)
        now = self.clock()
        counts = self.store.queue_counts(_moment(now))
        waiting = self.queues.waiting([count.queue for count in counts] + [GOLD_POOL])
        stats = []
        for count in counts:
            queued = waiting.get(count.queue, 0)
            stats.append(
                QueueStats(
                    queue=count.queue,
                    waiting=queued,
                    in_progress=max(0, count.open - queued),
                    adjudication=count.adjudication,
                    oldest_waiting_age_s=round(now - count.oldest_open_at.timestamp(), 1)
                    if count.oldest_open_at
                    else None,
                    votes_last_hour=count.votes_last_hour,
                    labels_last_hour=count.labeled_last_hour,
                )
            )
            self.metrics.waiting.labels(count.queue).set(queued)
        return stats

    def gold_pool_size(self) -> int:
        return self.queues.waiting([GOLD_POOL])[GOLD_POOL]

    def agreement(
        self, principal: Principal, *, queue: str | None = None, since_hours: float | None = None
    ) -> AgreementReport:
        principal.require(Permission.OVERSEE)
        since = _moment(self.clock() - since_hours * 3600) if since_hours else None
        items = self.store.agreement_items(queue=queue, since=since)
        return agreement_report(items, fleiss_raters=self.config.consensus.votes_required)

    def annotator_stats(self, principal: Principal) -> list[AnnotatorStats]:
        principal.require(Permission.OVERSEE)
        now = _moment(self.clock())
        matches = self.store.consensus_matches()
        stats = []
        for record in self.store.annotators():
            counts = self.store.work_counts(record.name, now)
            quality = assess(self.store.gold_results(record.name, self.config.quality.window), self.config.quality)
            total, matched = matches.get(record.name, (0, 0))
            stats.append(
                AnnotatorStats(
                    annotator=record.name,
                    role=record.role.value,
                    disabled=record.disabled,
                    votes_total=counts.votes_total,
                    votes_last_hour=counts.votes_last_hour,
                    skips_total=counts.skips_total,
                    gold_answers=quality.answers,
                    gold_accuracy=quality.accuracy,
                    weight=round(quality.weight, 4),
                    below_threshold=quality.below_threshold,
                    gold_rate=quality.gold_rate,
                    consensus_votes=total,
                    consensus_agreement=matched / total if total else None,
                )
            )
        return stats

    def disputed(self, principal: Principal, limit: int = 100) -> list[DisputedTask]:
        principal.require(Permission.OVERSEE)
        return self.store.disputed(limit)

    def adjudicate(self, principal: Principal, task_id: str, answer: str, note: str = "") -> labels_pb2.Label:
        principal.require(Permission.OVERSEE)
        try:
            choice = choice_by_name(answer)
        except UnknownAnswer as error:
            raise Refused(422, "unknown-answer", str(error)) from error
        self._check_fits(task_id, choice)
        if len(note) > 1000:
            raise Refused(422, "invalid-note", "notes are at most 1000 characters")
        try:
            label = self.store.adjudicate(
                task_id,
                principal.name,
                choice.event_type,
                note=note,
                now=_moment(self.clock()),
                quality=self.config.quality,
            )
        except UnknownTask as error:
            raise Refused(404, "unknown-task", f"no task {task_id}") from error
        except NotDisputed as error:
            raise Refused(409, "not-disputed", str(error)) from error
        self.queues.remove(task_id)
        self.metrics.decisions.labels("adjudicated").inc()
        logger.info("task adjudicated", extra={"task_id": task_id, "lead": principal.name})
        self.publish([label])
        return label

    def make_gold(self, principal: Principal, task_id: str, answer: str | None) -> None:
        """Make a task gold: its known answer is `answer`, or the label it already has."""
        principal.require(Permission.OVERSEE)
        try:
            known_choice = choice_by_name(answer) if answer else None
        except UnknownAnswer as error:
            raise Refused(422, "unknown-answer", str(error)) from error
        if known_choice is not None:
            self._check_fits(task_id, known_choice)
        known = known_choice.event_type if known_choice is not None else None
        try:
            live = self.store.make_gold(task_id, principal.name, known, now=_moment(self.clock()))
        except UnknownTask as error:
            raise Refused(404, "unknown-task", f"no task {task_id}") from error
        except NotGoldable as error:
            raise Refused(409, "no-known-answer", str(error)) from error
        self.queues.upsert(live)

    # ------------------------------------------------------------------ upkeep

    def publish(self, labels: list[labels_pb2.Label]) -> int:
        """Send labels and mark those Kafka acknowledged; the rest stay for upkeep. Returns how many were sent.

        Each label is sent in a `publish label` span of the trace at hand (the person's request, or upkeep),
        linked to the span that made its task: the trace of the upload the window came from.
        """
        origins = self._task_traceparents(labels)
        futures = []
        for label in labels:
            with tracer.start_as_current_span(
                "publish label",
                links=links_to(origins.get(label.lineage.window_id)),
                attributes={
                    "michi.annotation.task_id": label.lineage.window_id,
                    "michi.annotation.label_event_id": label.event_id,
                    "michi.annotation.label_source": labels_pb2.LabelSource.Name(label.source),
                },
            ) as span:
                try:
                    futures.append((label, self.publisher.publish(label)))
                except Exception:
                    span.set_status(trace.Status(trace.StatusCode.ERROR, "label not published"))
                    self.metrics.publish_failures.inc()
                    logger.warning("label not published", extra={"event_id": label.event_id}, exc_info=True)
        acknowledged = []
        for label, future in futures:
            try:
                future.result(PUBLISH_TIMEOUT_S)
            except Exception:
                self.metrics.publish_failures.inc()
                logger.warning("label not acknowledged", extra={"event_id": label.event_id}, exc_info=True)
                continue
            acknowledged.append(label.event_id)
        self.store.mark_published(acknowledged, _moment(self.clock()))
        self.metrics.labels_published.inc(len(acknowledged))
        return len(acknowledged)

    def _task_traceparents(self, labels: list[labels_pb2.Label]) -> dict[str, str]:
        """Where each label's task was made (for its span's link); {} when SQL cannot say: labels go out anyway."""
        try:
            return self.store.traceparents([label.lineage.window_id for label in labels])
        except Exception:
            logger.warning("task trace contexts not read; labels published without links", exc_info=True)
            return {}

    def rebuild(self, actor: str) -> int:
        """Rebuild the live queues from SQL (after a Redis loss); leases in flight are dropped."""
        with self._rebuild_lock:
            self.queues.clear()
            count = self.queues.load(self.store.live_tasks())
            self.queues.mark_built(self.clock())
            self.store.audit(actor, "queues-rebuilt", now=_moment(self.clock()), tasks=count)
        self.metrics.rebuilds.inc()
        logger.info("live queues rebuilt from SQL", extra={"tasks": count, "actor": actor})
        return count

    def upkeep(self) -> dict[str, int]:
        """Periodic: rebuild if Redis lost the queues, return expired leases, repair stalled answers, re-send labels."""
        done: dict[str, Any] = {}
        if not self.queues.built():
            done["rebuilt"] = self.rebuild("upkeep")
        now = self.clock()
        reclaimed = self.queues.reclaim_expired(now)
        if reclaimed:
            self.metrics.leases_reclaimed.inc(reclaimed)
        done["reclaimed"] = reclaimed
        repaired = 0
        for task_id in self.queues.stale_processing(now - STALE_PROCESSING_S):
            state = self.store.live_task(task_id)
            self.queues.clear_processing(task_id)
            if state is not None and state[1] is not None:
                self.queues.upsert(state[1])
            else:
                self.queues.remove(task_id)
            repaired += 1
        if repaired:
            logger.warning("stalled answers repaired from SQL", extra={"tasks": repaired})
        done["repaired"] = repaired
        pending = self.store.unpublished_labels(created_before=_moment(now - OUTBOX_GRACE_S))
        done["republished"] = self.publish(pending) if pending else 0
        self.metrics.leased.set(self.queues.leased_count())
        return done


async def handle_label_request(
    service: AnnotationService, request: labels_pb2.LabelRequest, windows: WindowUploads | None
) -> IntakeResult:
    """A consumed label request: `Rejected` with `invalid-request` when it cannot become a task (nothing is
    looked up then), else located (`request_location`) and taken in (`AnnotationService.intake`)."""
    try:
        check_request(request)
    except InvalidRequest as error:
        raise Rejected("invalid-request", str(error)) from None
    return service.intake(request, location=await request_location(request, windows))


async def request_location(
    request: labels_pb2.LabelRequest, windows: WindowUploads | None
) -> tuple[float, float] | None:
    """Where the request's window was driven, from its archived upload (None: no archive, no window start,
    the upload not archived, or no fix in it)."""
    if windows is None or not request.window.HasField("started_at"):
        return None
    start = timestamp_to_seconds(request.window.started_at)
    end = timestamp_to_seconds(request.window.ended_at) if request.window.HasField("ended_at") else start
    upload = await windows.upload(request.lineage, datetime.fromtimestamp(start, UTC))
    return window_location(upload, start, end) if upload is not None else None


__all__ = [
    "SERVICE",
    "Accounts",
    "AnnotationService",
    "InvalidRequest",
    "LabelPublisher",
    "Principal",
    "Refused",
    "ServiceConfig",
    "WindowUploads",
    "handle_label_request",
    "request_location",
]
