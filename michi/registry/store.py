"""`ModelRegistry`: model versions, their stages and the rollout plan, in SQL (SQLite or PostgreSQL).

Writes are atomic without locks: a version number or an audit sequence number is
computed from what the transaction read, and a unique constraint rejects the loser
of a race, which re-reads and retries.

Every stage change publishes the model's new `RolloutPlan` on `MODEL_ROLLOUTS`
(compacted, keyed by model name) *after* the database commit. Delivery is
at-least-once: when publishing fails the change stays committed, `transition()`
raises `PlanNotPublished`, and `republish_plan(name)` re-sends the current plan
(same event id and revision, so consumers can ignore duplicates).
A registry built without a producer is read-only for stages: it registers, lists, shows
and diffs, and refuses stage changes before touching the database.
"""

from __future__ import annotations

import builtins
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, create_engine, select

from michi.bus.catalog import MODEL_ROLLOUTS, TopicSpec
from michi.bus.producer import Delivery
from michi.contracts.v1 import operations_pb2
from michi.migrations import upgrade_to_head
from michi.registry.migrations import MIGRATIONS
from michi.registry.records import ModelVersion, StageChange, VersionDiff, compare_values
from michi.registry.rollout import build_rollout_plan
from michi.registry.stages import (
    ChangeKind,
    PlannedChange,
    Stage,
    StageRuleViolation,
    champion_lineage,
    plan_rollback,
    plan_transition,
)
from michi.registry.tables import ModelVersionRow, StageChangeRow

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 20
Result = TypeVar("Result")


class PlanPublisher(Protocol):
    """What the registry needs of a producer (`michi.bus.producer.EventProducer` is one)."""

    def publish_and_wait(self, spec: TopicSpec, key: str, message: Message, timeout: float = 30.0) -> Delivery: ...


class UnknownModelVersion(LookupError):
    """No such model name and version in the registry."""


class VersionAlreadyRegistered(ValueError):
    """A named version (`register(..., version=...)`) that the registry already holds."""


class PlanNotPublished(RuntimeError):
    """The stage change is committed but its rollout plan did not reach Kafka; call `republish_plan`."""


class ConcurrentChangeConflict(RuntimeError):
    """Too many concurrent writers kept winning the race; nothing was changed."""


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _version_record(row: ModelVersionRow) -> ModelVersion:
    return ModelVersion(
        name=row.name,
        version=row.version,
        stage=Stage(row.stage),
        artifact_uri=row.artifact_uri,
        artifact_sha256=row.artifact_sha256,
        code_version=row.code_version,
        data_version=row.data_version,
        parameters=dict(row.parameters),
        metrics=dict(row.metrics),
        parent_version=row.parent_version,
        created_by=row.created_by,
        created_at=_utc(row.created_at),
        number=row.number,
    )


def _change_record(row: StageChangeRow) -> StageChange:
    return StageChange(
        model_name=row.model_name,
        sequence=row.sequence,
        version=row.version,
        from_stage=Stage(row.from_stage),
        to_stage=Stage(row.to_stage),
        kind=ChangeKind(row.kind),
        reason=row.reason,
        actor=row.actor,
        changed_at=_utc(row.changed_at),
    )


def _is_lost_race(error: Exception) -> bool:
    if isinstance(error, IntegrityError):
        return True
    # SQLite answers a writer that waited too long with "database is locked".
    return isinstance(error, OperationalError) and "locked" in str(error).lower()


class ModelRegistry:
    def __init__(self, engine: Engine, producer: PlanPublisher | None = None, *, publish_timeout: float = 30.0) -> None:
        self.engine = engine
        self.producer = producer
        self.publish_timeout = publish_timeout

    @classmethod
    def from_url(cls, database_url: str, producer: PlanPublisher | None = None) -> ModelRegistry:
        registry = cls(create_engine(database_url, pool_pre_ping=True), producer)
        registry.create_tables()
        return registry

    def create_tables(self) -> None:
        """Bring the registry's tables to the newest schema: Alembic `upgrade head` (`michi.migrations`).

        Only the registry's tables (other owners migrate theirs); safe when many processes start at once.
        """
        upgrade_to_head(self.engine, MIGRATIONS)

    def close(self) -> None:
        self.engine.dispose()

    # --- writes

    def register(
        self,
        name: str,
        artifact_uri: str,
        sha256: str,
        code_version: str,
        data_version: str,
        parameters: dict[str, Any],
        metrics: dict[str, Any],
        parent_version: str | None = None,
        *,
        created_by: str,
        version: str | None = None,
    ) -> ModelVersion:
        """Add the next version of `name` as a candidate; concurrent callers get distinct versions.

        `version` names it instead of its number ("physics-3": a rule set registered once, whose name
        says what it is); a named version takes the next number all the same (registration order), and
        a name already registered raises `VersionAlreadyRegistered`.
        """
        if not name:
            raise ValueError("a model needs a name")
        if version is not None and (not version or version.isdigit() or len(version) > 32):
            # Digits are what numbered registrations are called: a named "7" would collide with one.
            raise ValueError(f"a named version must be 1-32 characters and not only digits, not {version!r}")
        if parent_version is not None:
            self.get(name, parent_version)  # raises when the parent is unknown

        def attempt(session: Session) -> ModelVersion:
            if version is not None:
                existing = session.exec(
                    select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.version == version)
                ).first()
                if existing is not None:
                    raise VersionAlreadyRegistered(f"{name} {version} is already registered")
            highest = session.exec(select(func.max(ModelVersionRow.number)).where(ModelVersionRow.name == name)).one()
            number = (highest or 0) + 1
            row = ModelVersionRow(
                name=name,
                version=version if version is not None else str(number),
                number=number,
                stage=Stage.CANDIDATE.value,
                artifact_uri=artifact_uri,
                artifact_sha256=sha256,
                code_version=code_version,
                data_version=data_version,
                parameters=parameters,
                metrics=metrics,
                parent_version=parent_version,
                created_by=created_by,
                created_at=datetime.now(UTC),
            )
            session.add(row)
            session.commit()
            session.refresh(row)
            return _version_record(row)

        registered = self._retrying(attempt)
        logger.info("model version registered", extra={"model": name, "version": registered.version})
        return registered

    def transition(
        self, name: str, version: str, stage: Stage | str, *, reason: str, actor: str
    ) -> operations_pb2.RolloutPlan:
        """Move `version` to `stage` (with the rules' side effects) and publish the new rollout plan."""
        target = Stage(stage)
        return self._change(name, reason, actor, lambda stages, _lineage: plan_transition(stages, version, target))

    def promote(self, name: str, version: str, *, actor: str, reason: str) -> operations_pb2.RolloutPlan:
        """Make `version` the champion; the previous champion is retired."""
        return self.transition(name, version, Stage.CHAMPION, reason=reason, actor=actor)

    def rollback(self, name: str, *, actor: str, reason: str) -> operations_pb2.RolloutPlan:
        """Retire the champion and restore the champion it replaced."""
        return self._change(name, reason, actor, plan_rollback)

    def republish_plan(self, name: str) -> operations_pb2.RolloutPlan:
        """Send the current plan again (after `PlanNotPublished`, or to repair the topic)."""
        plan = self.current_plan(name)
        self._publish(plan)
        return plan

    # --- reads

    def get(self, name: str, version: str) -> ModelVersion:
        with Session(self.engine) as session:
            row = session.exec(
                select(ModelVersionRow).where(ModelVersionRow.name == name, ModelVersionRow.version == version)
            ).first()
            if row is None:
                raise UnknownModelVersion(f"no version {version} of model {name}")
            return _version_record(row)

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """Every version (of one model when `name` is given), by name then version number."""
        with Session(self.engine) as session:
            statement = select(ModelVersionRow)
            if name is not None:
                statement = statement.where(ModelVersionRow.name == name)
            rows = session.exec(statement.order_by(col(ModelVersionRow.name), col(ModelVersionRow.number))).all()
            return [_version_record(row) for row in rows]

    def champion(self, name: str) -> ModelVersion | None:
        return next((version for version in self.list(name) if version.stage == Stage.CHAMPION), None)

    def history(self, name: str) -> builtins.list[StageChange]:
        """The audit trail of `name`, oldest first."""
        with Session(self.engine) as session:
            return [_change_record(row) for row in self._changes(session, name)]

    def diff(self, name: str, left: str, right: str) -> VersionDiff:
        first, second = self.get(name, left), self.get(name, right)
        return VersionDiff(
            name=name,
            left=first,
            right=second,
            parameters=compare_values(first.parameters, second.parameters),
            metrics=compare_values(first.metrics, second.metrics),
        )

    def current_plan(self, name: str) -> operations_pb2.RolloutPlan:
        """The rollout plan the database describes now (the compacted topic's latest value converges to it)."""
        versions = self.list(name)
        changes = self.history(name)
        latest = changes[-1] if changes else None
        return build_rollout_plan(
            name,
            versions,
            revision=latest.sequence if latest else 0,
            changed_at=latest.changed_at if latest else None,
            reason=latest.reason if latest else "",
        )

    # --- internals

    def _changes(self, session: Session, name: str) -> builtins.list[StageChangeRow]:
        statement = (
            select(StageChangeRow).where(StageChangeRow.model_name == name).order_by(col(StageChangeRow.sequence))
        )
        return builtins.list(session.exec(statement).all())

    def _change(
        self,
        name: str,
        reason: str,
        actor: str,
        planner: Callable[[dict[str, Stage], builtins.list[str]], builtins.list[PlannedChange]],
    ) -> operations_pb2.RolloutPlan:
        if self.producer is None:
            raise PlanNotPublished(
                f"refusing to change stages of {name}: this registry has no producer to publish with"
            )

        def attempt(session: Session) -> None:
            rows = {
                row.version: row
                for row in session.exec(select(ModelVersionRow).where(ModelVersionRow.name == name)).all()
            }
            if not rows:
                raise UnknownModelVersion(f"no model named {name}")
            changes = self._changes(session, name)
            lineage = champion_lineage(
                [(change.version, ChangeKind(change.kind)) for change in changes if change.to_stage == Stage.CHAMPION]
            )
            planned = planner({version: Stage(row.stage) for version, row in rows.items()}, lineage)
            sequence = changes[-1].sequence if changes else 0
            now = datetime.now(UTC)
            for change in planned:
                sequence += 1
                rows[change.version].stage = change.to_stage.value
                session.add(rows[change.version])
                session.add(
                    StageChangeRow(
                        model_name=name,
                        sequence=sequence,
                        version=change.version,
                        from_stage=change.from_stage.value,
                        to_stage=change.to_stage.value,
                        kind=change.kind.value,
                        reason=reason,
                        actor=actor,
                        changed_at=now,
                    )
                )
            session.commit()
            logger.info(
                "model stages changed",
                extra={
                    "model": name,
                    "changes": [f"{change.version}:{change.from_stage}->{change.to_stage}" for change in planned],
                    "actor": actor,
                },
            )

        self._retrying(attempt)
        plan = self.current_plan(name)
        self._publish(plan)
        return plan

    def _publish(self, plan: operations_pb2.RolloutPlan) -> None:
        if self.producer is None:
            raise PlanNotPublished(f"cannot publish the plan of {plan.model_name}: this registry has no producer")
        try:
            self.producer.publish_and_wait(MODEL_ROLLOUTS, plan.model_name, plan, timeout=self.publish_timeout)
        except Exception as error:
            logger.warning(
                "rollout plan not published",
                extra={"model": plan.model_name, "revision": plan.revision, "error": str(error)[:300]},
            )
            raise PlanNotPublished(
                f"stage change of {plan.model_name} committed (revision {plan.revision}) but its rollout plan "
                f"was not published: {error}; re-send it with republish_plan"
            ) from error

    def _retrying(self, attempt: Callable[[Session], Result]) -> Result:
        for attempt_number in range(1, MAX_ATTEMPTS + 1):
            with Session(self.engine) as session:
                try:
                    return attempt(session)
                except StageRuleViolation:
                    raise
                except (IntegrityError, OperationalError) as error:
                    session.rollback()
                    if not _is_lost_race(error) or attempt_number == MAX_ATTEMPTS:
                        if _is_lost_race(error):
                            raise ConcurrentChangeConflict(f"gave up after {MAX_ATTEMPTS} attempts") from error
                        raise
                    time.sleep(random.uniform(0.0, 0.01 * attempt_number))
        raise AssertionError("unreachable")
