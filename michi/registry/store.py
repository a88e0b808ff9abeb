"""`ModelRegistry`: model versions, their stages, their rollouts and the rollout plan, in SQL (SQLite or PostgreSQL).

Writes are atomic without locks: a version number or an audit sequence number is
computed from what the transaction read, and a unique constraint rejects the loser
of a race, which re-reads and retries. While a rollout serves, every plan change of its
model also compares and sets the rollout row's revision, so a weight change (which writes
no stage change) and a stage change cannot both commit from the same state.

Rollouts (`start_rollout`, `set_rollout_weight`, `pause_rollout`, `resume_rollout`,
`promote_rollout`, `rollback_rollout`, `abort_rollout`) serve a candidate (stage `canary`)
to a share of the devices beside the champion; a bandit may serve up to three candidates
(`start_rollout(..., more_versions=...)`, kept in `registry_rollout_candidate`, their shares moved
together by `set_rollout_shares`, the winner named to `promote_rollout(..., version=...)`, the other
candidates sent back to candidate). Each action is one decision in the rollout's
log (actor, reason, evidence, the plan it replaced) and one plan revision; `promote` and
`rollback` of a model with a rollout serving end that rollout as manual overrides.

Every decision (a stage change asked for, a rollout action) is one plan revision, however many
stage changes it makes: promoting makes the candidate champion and retires the old one in one
revision, the two changes numbered apart in the audit trail (`sequence`) and sharing the revision.
Each publishes the model's new `RolloutPlan` on `MODEL_ROLLOUTS`
(compacted, keyed by model name) *after* the database commit. Delivery is
at-least-once: when publishing fails the change stays committed, `transition()`
raises `PlanNotPublished`, and `republish_plan(name)` re-sends the current plan
(same event id and revision, so consumers can ignore duplicates).
A registry built without a producer is read-only for stages: it registers, lists, shows
and diffs, and refuses stage changes before touching the database.
"""

from __future__ import annotations

import builtins
import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, create_engine, select

from michi.bus.catalog import MODEL_ROLLOUTS, TopicSpec
from michi.bus.producer import Delivery
from michi.contracts.v1 import operations_pb2
from michi.migrations import upgrade_to_head
from michi.registry.migrations import MIGRATIONS
from michi.registry.records import (
    ModelVersion,
    Rollout,
    RolloutDecision,
    StageChange,
    VersionDiff,
    compare_values,
)
from michi.registry.rollout import MAX_PLAN_ARMS, ServingRollout, build_rollout_plan, plan_problems
from michi.registry.rollout_status import (
    ACTIVE_STATUSES,
    DEFAULT_WEIGHT_PERCENT,
    RolloutAction,
    RolloutRefused,
    RolloutStatus,
    RolloutStrategy,
    candidate_share,
    checked_weight,
    ends_rollout,
    first_weight,
    new_rollout_id,
    plan_reason,
    status_after,
    step_after_weight,
)
from michi.registry.stages import (
    ChangeKind,
    PlannedChange,
    Stage,
    StageRuleViolation,
    champion_lineage,
    plan_rollback,
    plan_rollout_end,
    plan_rollout_start,
    plan_transition,
)
from michi.registry.tables import (
    ModelVersionRow,
    RolloutCandidateRow,
    RolloutDecisionRow,
    RolloutRow,
    StageChangeRow,
)
from michi.rollouts.steps import rollout_spec_from_mapping

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 20
Result = TypeVar("Result")
# Where a new rollout's id comes from: (model name, candidate version) -> `ro-<model>-<candidate>-<8 hex>`.
# `new_rollout_id` draws the hex at random; a test passes a source with fixed hex to replay one rollout's path.
RolloutIdSource = Callable[[str, str], str]


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
        revision=_change_revision(row),
    )


def _change_revision(row: StageChangeRow) -> int:
    """The plan revision of a stage change (rows written before the column: their sequence, as it was then)."""
    return row.revision if row.revision is not None else row.sequence


class _LostRace(Exception):
    """Another writer changed the serving rollout's row between this transaction's read and its write."""


def _rollout_record(row: RolloutRow, more: Sequence[RolloutCandidateRow] = ()) -> Rollout:
    return Rollout(
        rollout_id=row.rollout_id,
        model_name=row.model_name,
        candidate_version=row.candidate_version,
        champion_version=row.champion_version,
        strategy=row.strategy,
        document=dict(row.document) if row.document is not None else None,
        status=row.status,
        step_index=row.step_index,
        weight_percent=row.weight_percent,
        revision=row.revision,
        started_by=row.started_by,
        started_at=_utc(row.started_at),
        ended_at=_utc(row.ended_at) if row.ended_at is not None else None,
        candidate_weights=(
            ((row.candidate_version, row.weight_percent), *((extra.version, extra.weight_percent) for extra in more))
            if more
            else ()
        ),
    )


def _decision_record(row: RolloutDecisionRow) -> RolloutDecision:
    return RolloutDecision(
        rollout_id=row.rollout_id,
        model_name=row.model_name,
        revision=row.revision,
        action=row.action,
        actor=row.actor,
        reason=row.reason,
        evidence=dict(row.evidence),
        previous_plan=dict(row.previous_plan),
        created_at=_utc(row.created_at),
    )


def _serving(row: RolloutRow | None, more: Sequence[RolloutCandidateRow] = ()) -> ServingRollout | None:
    """What a rollout row (and its further candidates) adds to the plan, while it serves."""
    if row is None or row.status not in ACTIVE_STATUSES:
        return None
    return ServingRollout(
        row.rollout_id,
        row.strategy,
        row.candidate_version,
        candidate_share(row.weight_percent),
        tuple((extra.version, candidate_share(extra.weight_percent)) for extra in more),
    )


def _candidates_of(session: Session, rollout_ids: Sequence[str]) -> dict[str, builtins.list[RolloutCandidateRow]]:
    """The further candidates of each rollout, in plan order (none for a rollout of one candidate)."""
    found: dict[str, builtins.list[RolloutCandidateRow]] = {}
    if not rollout_ids:
        return found
    statement = (
        select(RolloutCandidateRow)
        .where(col(RolloutCandidateRow.rollout_id).in_(builtins.list(rollout_ids)))
        .order_by(col(RolloutCandidateRow.rollout_id), col(RolloutCandidateRow.position))
    )
    for row in session.exec(statement).all():
        found.setdefault(row.rollout_id, []).append(row)
    return found


def _candidate_versions(rollout: RolloutRow, more: Sequence[RolloutCandidateRow]) -> builtins.list[str]:
    return [rollout.candidate_version, *(extra.version for extra in more)]


def _rollout_end(
    stages: Mapping[str, Stage], candidates: Sequence[str], *, promoted: str | None
) -> builtins.list[PlannedChange]:
    """The stage changes that end a rollout of `candidates`: `promoted` (if any) becomes champion, retiring the
    previous one; every other candidate goes back to candidate (where a rolled-back canary has always gone)."""
    planned: builtins.list[PlannedChange] = []
    if promoted is not None:
        planned += plan_rollout_end(stages, promoted, promote=True)
    for version in candidates:
        if version != promoted:
            planned += plan_rollout_end(stages, version, promote=False)
    return planned


def _arms_detail(candidates: Sequence[str], percents: Sequence[float], champion: str) -> dict[str, float]:
    """Percent of the devices per serving arm (candidates in plan order, the champion last), for a decision's
    evidence and `michi rollouts history`."""
    arms = {version: float(percent) for version, percent in zip(candidates, percents, strict=True)}
    arms[champion] = round(100.0 - sum(percents), 4)
    return arms


@dataclass
class _Snapshot:
    """What one transaction read of one model: its versions, stage changes, latest decision, serving rollout."""

    name: str
    rows: dict[str, ModelVersionRow]
    changes: list[StageChangeRow]
    last_decision: RolloutDecisionRow | None
    rollout: RolloutRow | None
    # The serving rollout's further candidates, in plan order.
    more_candidates: builtins.list[RolloutCandidateRow]

    def candidates(self) -> builtins.list[str]:
        """The serving rollout's candidates in plan order (none without one)."""
        return _candidate_versions(self.rollout, self.more_candidates) if self.rollout is not None else []

    def stages(self) -> dict[str, Stage]:
        return {version: Stage(row.stage) for version, row in self.rows.items()}

    def lineage(self) -> list[str]:
        return champion_lineage(
            [(change.version, ChangeKind(change.kind)) for change in self.changes if change.to_stage == Stage.CHAMPION]
        )

    @property
    def revision(self) -> int:
        """The model's plan revision: one per decision (a stage change asked for, a rollout action), whatever
        number of stage changes it makes."""
        changed = max((_change_revision(change) for change in self.changes), default=0)
        decided = self.last_decision.revision if self.last_decision is not None else 0
        return max(changed, decided)


@dataclass
class _Revision:
    """What one plan revision changes: stage changes, and the rollout it starts, changes or ends."""

    planned: list[PlannedChange]
    # The reason the stage changes and the plan carry.
    reason: str
    started: RolloutRow | None = None
    # The further candidates of the rollout it starts.
    started_candidates: builtins.list[RolloutCandidateRow] = field(default_factory=builtins.list)
    # New percents of the serving rollout's further candidates, by version.
    candidate_weights: dict[str, float] | None = None
    # New values of the serving rollout's row (empty: only its revision moves on). None: no rollout serves.
    rollout_values: dict[str, Any] | None = None
    # (action, reason, evidence) of the rollout decision to record.
    decision: tuple[RolloutAction, str, dict[str, Any]] | None = None


def _is_lost_race(error: Exception) -> bool:
    if isinstance(error, IntegrityError | _LostRace):
        return True
    # SQLite answers a writer that waited too long with "database is locked".
    return isinstance(error, OperationalError) and "locked" in str(error).lower()


class ModelRegistry:
    def __init__(
        self,
        engine: Engine,
        producer: PlanPublisher | None = None,
        *,
        publish_timeout: float = 30.0,
        rollout_ids: RolloutIdSource = new_rollout_id,
    ) -> None:
        self.engine = engine
        self.producer = producer
        self.publish_timeout = publish_timeout
        self.rollout_ids = rollout_ids

    @classmethod
    def from_url(
        cls,
        database_url: str,
        producer: PlanPublisher | None = None,
        *,
        rollout_ids: RolloutIdSource = new_rollout_id,
    ) -> ModelRegistry:
        registry = cls(create_engine(database_url, pool_pre_ping=True), producer, rollout_ids=rollout_ids)
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
        """Move `version` to `stage` (with the rules' side effects) and publish the new rollout plan.

        With a rollout serving, a move to champion ends it as a manual override (see `promote`); any other
        allowed move (another version to shadow, a candidate retired) leaves it serving.
        """
        target = Stage(stage)
        return self._change(name, reason, actor, lambda stages, _lineage: plan_transition(stages, version, target))

    def promote(self, name: str, version: str, *, actor: str, reason: str) -> operations_pb2.RolloutPlan:
        """Make `version` the champion; the previous champion is retired.

        With a rollout serving, this ends it as a manual override: `promoted` when `version` is its candidate,
        else `aborted` (the canary goes back to candidate), recorded with the actor and "manual override".
        """
        return self.transition(name, version, Stage.CHAMPION, reason=reason, actor=actor)

    def rollback(self, name: str, *, actor: str, reason: str) -> operations_pb2.RolloutPlan:
        """Retire the champion and restore the champion it replaced.

        With a rollout serving, this rolls the rollout back instead (a manual override: the canary goes back
        to candidate, the champion stays and serves every device, the rollout ends `rolled-back`).
        """
        return self._change(name, reason, actor, plan_rollback, rollback=True)

    # --- rollouts

    def start_rollout(
        self,
        name: str,
        version: str,
        *,
        actor: str,
        reason: str,
        strategy: RolloutStrategy | str = RolloutStrategy.CANARY,
        weight: float | None = None,
        document: Mapping[str, Any] | None = None,
        evidence: Mapping[str, Any] | None = None,
        more_versions: Sequence[str] = (),
    ) -> operations_pb2.RolloutPlan:
        """Start serving `version` (a candidate or the shadow, now `canary`) to a share of the devices.

        A bandit may serve `more_versions` beside it (each a candidate or the shadow, each `canary`, after `version`
        in the plan; at most `MAX_PLAN_ARMS - 1` candidates in all, the champion being the last arm): every arm then
        starts with an equal share (or each candidate with `weight` percent), the champion keeping the rest.

        The share is `weight` percent, or the first `set_weight` step of `document` (a rollout document,
        validated by `michi.rollouts.steps.rollout_spec_from_mapping`), or 10 % for a canary and 50 % for an
        A/B test. Refused (`RolloutRefused`) while another rollout of the model runs or is paused.
        """
        chosen = RolloutStrategy(strategy)
        step_index: int | None = None
        stored_document: dict[str, Any] | None = None
        more = [str(other) for other in more_versions]
        if more and chosen != RolloutStrategy.BANDIT:
            raise RolloutRefused("only a bandit serves more than one candidate; a canary or an A/B test serves one")
        if 1 + len(more) > MAX_PLAN_ARMS - 1:
            raise RolloutRefused(
                f"{1 + len(more)} candidates: a bandit serves at most {MAX_PLAN_ARMS - 1} beside the champion "
                f"(inference serves {MAX_PLAN_ARMS} models per plan)"
            )
        if document is not None:
            if weight is not None:
                raise RolloutRefused("give a weight or a rollout document, not both")
            if chosen != RolloutStrategy.CANARY:
                takes = "an A/B test takes a weight" if chosen == RolloutStrategy.AB else "a bandit sets its own shares"
                raise RolloutRefused(f"a rollout document describes a canary; {takes}")
            step_index, percent = first_weight(rollout_spec_from_mapping(document))
            stored_document = json.loads(json.dumps(dict(document), default=str))
        elif weight is None and more:
            percent = round(100.0 / (2 + len(more)), 4)  # every arm alike, the champion taking what rounding leaves
        else:
            percent = DEFAULT_WEIGHT_PERCENT[chosen.value] if weight is None else weight
        percent = checked_weight(percent)
        if percent * (1 + len(more)) > 100.0 + 1e-9:
            raise RolloutRefused(
                f"{1 + len(more)} candidates at {percent:g}% each leave the champion less than nothing"
            )

        def decide(snapshot: _Snapshot) -> _Revision:
            if snapshot.rollout is not None:
                raise RolloutRefused(
                    f"rollout {snapshot.rollout.rollout_id} of {name} is already {snapshot.rollout.status} "
                    f"(candidate {snapshot.rollout.candidate_version}): promote, roll back or abort it first"
                )
            if version not in snapshot.rows:
                raise UnknownModelVersion(f"no version {version} of model {name}")
            for other in more:
                if other not in snapshot.rows:
                    raise UnknownModelVersion(f"no version {other} of model {name}")
            stages = snapshot.stages()
            planned = plan_rollout_start(stages, version, *more)
            champion = next(other for other, stage in stages.items() if stage == Stage.CHAMPION)
            rollout_id = self.rollout_ids(name, version)
            started = RolloutRow(
                rollout_id=rollout_id,
                model_name=name,
                active_model=name,
                candidate_version=version,
                champion_version=champion,
                strategy=chosen.value,
                document=stored_document,
                status=RolloutStatus.RUNNING.value,
                step_index=step_index,
                weight_percent=percent,
                revision=0,  # set to the revision this start publishes
                started_by=actor,
                started_at=datetime.now(UTC),
            )
            details: dict[str, Any] = {
                "strategy": chosen.value,
                "weight_percent": percent,
                "champion_version": champion,
            }
            if step_index is not None:
                details["step_index"] = step_index
            started_candidates = [
                RolloutCandidateRow(rollout_id=rollout_id, position=position, version=other, weight_percent=percent)
                for position, other in enumerate(more, start=1)
            ]
            if more:
                details["candidates"] = [version, *more]
            details["percents"] = _arms_detail([version, *more], [percent] * (1 + len(more)), champion)
            return _Revision(
                planned,
                plan_reason(rollout_id, RolloutAction.START, reason),
                started=started,
                started_candidates=started_candidates,
                decision=(RolloutAction.START, reason, {**details, **dict(evidence or {})}),
            )

        return self._revise(name, actor, decide)

    def set_rollout_weight(
        self, name: str, percent: float, *, actor: str, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> operations_pb2.RolloutPlan:
        """Put `percent` of the devices on the running rollout's candidate (the champion keeps the rest).

        With a rollout document, reaching the weight of a later `set_weight` step moves the rollout to that step.
        """
        checked = checked_weight(percent)
        return self._rollout_action(name, RolloutAction.SET_WEIGHT, actor, reason, evidence, weight=checked)

    def set_rollout_shares(
        self,
        name: str,
        percents: Mapping[str, float],
        *,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
    ) -> operations_pb2.RolloutPlan:
        """Put each candidate of the running rollout on its percent of the devices (`percents`: every candidate,
        by version; the champion keeps the rest): one decision (set-weight), one plan revision. For a rollout of
        one candidate it is `set_rollout_weight`."""
        checked = {str(version): checked_weight(percent) for version, percent in percents.items()}
        if sum(checked.values()) > 100.0 + 1e-9:
            raise RolloutRefused(f"candidates' shares {checked} add up to more than 100%")
        return self._rollout_action(name, RolloutAction.SET_WEIGHT, actor, reason, evidence, percents=checked)

    def pause_rollout(
        self, name: str, *, actor: str, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> operations_pb2.RolloutPlan:
        """Hold the running rollout where it is: same shares, a revision whose reason says paused."""
        return self._rollout_action(name, RolloutAction.PAUSE, actor, reason, evidence)

    def resume_rollout(
        self, name: str, *, actor: str, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> operations_pb2.RolloutPlan:
        """Let a paused rollout go on: same shares, a revision whose reason says resumed."""
        return self._rollout_action(name, RolloutAction.RESUME, actor, reason, evidence)

    def promote_rollout(
        self,
        name: str,
        *,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None = None,
        version: str | None = None,
    ) -> operations_pb2.RolloutPlan:
        """End the rollout by making its candidate the champion (the previous champion is retired). A rollout of
        several candidates needs `version`, the one to promote: the others go back to candidate."""
        return self._rollout_action(name, RolloutAction.PROMOTE, actor, reason, evidence, promoted=version)

    def rollback_rollout(
        self, name: str, *, actor: str, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> operations_pb2.RolloutPlan:
        """End the rollout because its candidate is worse: the candidate (every candidate) goes back to candidate,
        the champion serves every device (a plan without a rollout id)."""
        return self._rollout_action(name, RolloutAction.ROLLBACK, actor, reason, evidence)

    def abort_rollout(
        self, name: str, *, actor: str, reason: str, evidence: Mapping[str, Any] | None = None
    ) -> operations_pb2.RolloutPlan:
        """End the rollout without a verdict: as a rollback, recorded as aborted."""
        return self._rollout_action(name, RolloutAction.ABORT, actor, reason, evidence)

    def active_rollout(self, name: str) -> Rollout | None:
        """The rollout of `name` that runs or is paused, if any."""
        with Session(self.engine) as session:
            row = session.exec(select(RolloutRow).where(RolloutRow.active_model == name)).first()
            if row is None:
                return None
            return _rollout_record(row, _candidates_of(session, [row.rollout_id]).get(row.rollout_id, []))

    def active_rollouts(self) -> builtins.list[Rollout]:
        """Every rollout that runs or is paused, by model name."""
        with Session(self.engine) as session:
            statement = select(RolloutRow).where(col(RolloutRow.active_model).is_not(None))
            rows = builtins.list(session.exec(statement.order_by(col(RolloutRow.model_name))))
            more = _candidates_of(session, [row.rollout_id for row in rows])
            return [_rollout_record(row, more.get(row.rollout_id, [])) for row in rows]

    def rollouts(self, name: str) -> builtins.list[Rollout]:
        """Every rollout of `name`, newest first."""
        with Session(self.engine) as session:
            statement = select(RolloutRow).where(RolloutRow.model_name == name).order_by(col(RolloutRow.id).desc())
            rows = builtins.list(session.exec(statement))
            more = _candidates_of(session, [row.rollout_id for row in rows])
            return [_rollout_record(row, more.get(row.rollout_id, [])) for row in rows]

    def rollout_history(self, name: str) -> builtins.list[RolloutDecision]:
        """Every decision of every rollout of `name`, newest first."""
        with Session(self.engine) as session:
            statement = (
                select(RolloutDecisionRow)
                .where(RolloutDecisionRow.model_name == name)
                .order_by(col(RolloutDecisionRow.revision).desc())
            )
            return [_decision_record(row) for row in session.exec(statement)]

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
        with Session(self.engine) as session:
            return self._plan_of(self._snapshot(session, name))

    # --- internals

    def _changes(self, session: Session, name: str) -> builtins.list[StageChangeRow]:
        statement = (
            select(StageChangeRow).where(StageChangeRow.model_name == name).order_by(col(StageChangeRow.sequence))
        )
        return builtins.list(session.exec(statement).all())

    def _snapshot(self, session: Session, name: str) -> _Snapshot:
        rows = {
            row.version: row for row in session.exec(select(ModelVersionRow).where(ModelVersionRow.name == name)).all()
        }
        last_decision = session.exec(
            select(RolloutDecisionRow)
            .where(RolloutDecisionRow.model_name == name)
            .order_by(col(RolloutDecisionRow.revision).desc())
            .limit(1)
        ).first()
        rollout = session.exec(select(RolloutRow).where(RolloutRow.active_model == name)).first()
        more = _candidates_of(session, [rollout.rollout_id]).get(rollout.rollout_id, []) if rollout is not None else []
        return _Snapshot(name, rows, self._changes(session, name), last_decision, rollout, more)

    def _plan_of(self, snapshot: _Snapshot) -> operations_pb2.RolloutPlan:
        """The plan a snapshot describes: its versions' stages, its serving rollout, its latest revision."""
        changed_at: datetime | None = None
        reason = ""
        latest_change = snapshot.changes[-1] if snapshot.changes else None
        decision = snapshot.last_decision
        if decision is not None and (latest_change is None or decision.revision >= _change_revision(latest_change)):
            changed_at = decision.created_at
            reason = plan_reason(decision.rollout_id, RolloutAction(decision.action), decision.reason)
        elif latest_change is not None:
            changed_at, reason = latest_change.changed_at, latest_change.reason
        versions = sorted((_version_record(row) for row in snapshot.rows.values()), key=lambda version: version.number)
        return build_rollout_plan(
            snapshot.name,
            versions,
            revision=snapshot.revision,
            changed_at=_utc(changed_at) if changed_at is not None else None,
            reason=reason,
            rollout=_serving(snapshot.rollout, snapshot.more_candidates),
        )

    def _change(
        self,
        name: str,
        reason: str,
        actor: str,
        planner: Callable[[dict[str, Stage], builtins.list[str]], builtins.list[PlannedChange]],
        *,
        rollback: bool = False,
    ) -> operations_pb2.RolloutPlan:
        """A stage change asked for directly (`transition`, `promote`, `rollback`), rollout-aware."""

        def decide(snapshot: _Snapshot) -> _Revision:
            rollout = snapshot.rollout
            stages = snapshot.stages()
            if rollout is None:
                return _Revision(planner(stages, snapshot.lineage()), reason)
            candidates = snapshot.candidates()
            if rollback:
                planned = _rollout_end(stages, candidates, promoted=None)
                action = RolloutAction.ROLLBACK
            else:
                planned = planner(stages, snapshot.lineage())
                if not any(change.to_stage == Stage.CHAMPION for change in planned):
                    # Another version to shadow, a candidate retired: the rollout serves on beside it.
                    return _Revision(planned, reason, rollout_values={})
                promoted = next((change.version for change in planned if change.version in candidates), None)
                if promoted is not None:
                    action = RolloutAction.PROMOTE
                    # A bandit's other candidates step back.
                    planned += _rollout_end(stages, [other for other in candidates if other != promoted], promoted=None)
                else:
                    # Another version made champion: the rollout's comparison is void, its canaries step back.
                    action = RolloutAction.ABORT
                    planned += _rollout_end(stages, candidates, promoted=None)
            return self._rollout_revision(snapshot, action, f"manual override: {reason}", {}, planned)

        return self._revise(name, actor, decide)

    def _rollout_action(
        self,
        name: str,
        action: RolloutAction,
        actor: str,
        reason: str,
        evidence: Mapping[str, Any] | None,
        *,
        weight: float | None = None,
        percents: Mapping[str, float] | None = None,
        promoted: str | None = None,
    ) -> operations_pb2.RolloutPlan:
        def decide(snapshot: _Snapshot) -> _Revision:
            rollout = snapshot.rollout
            if rollout is None:
                raise RolloutRefused(f"no rollout of {name} is running or paused")
            candidates = snapshot.candidates()
            stages = snapshot.stages()
            planned: builtins.list[PlannedChange] = []
            weights: dict[str, float] | None = None
            set_weight = weight
            if weight is not None and len(candidates) > 1:
                raise RolloutRefused(
                    f"rollout {rollout.rollout_id} of {name} serves {len(candidates)} candidates "
                    f"({', '.join(candidates)}): their shares are the bandit's (pause it to hold them)"
                )
            if percents is not None:
                if set(percents) != set(candidates):
                    raise RolloutRefused(
                        f"rollout {rollout.rollout_id} of {name} has candidates {', '.join(candidates)}: "
                        f"give a share for each, not for {', '.join(sorted(percents)) or 'none'}"
                    )
                set_weight = percents[rollout.candidate_version]
                weights = {version: percents[version] for version in candidates[1:]}
            if action == RolloutAction.PROMOTE:
                chosen = promoted if promoted is not None else candidates[0]
                if promoted is None and len(candidates) > 1:
                    raise RolloutRefused(
                        f"rollout {rollout.rollout_id} of {name} has candidates {', '.join(candidates)}: "
                        "say which one to promote"
                    )
                if chosen not in candidates:
                    raise RolloutRefused(
                        f"version {chosen} is not a candidate of rollout {rollout.rollout_id} "
                        f"(candidates {', '.join(candidates)})"
                    )
                planned = _rollout_end(stages, candidates, promoted=chosen)
            elif ends_rollout(action):
                planned = _rollout_end(stages, candidates, promoted=None)
            return self._rollout_revision(
                snapshot, action, reason, dict(evidence or {}), planned, weight=set_weight, candidate_weights=weights
            )

        return self._revise(name, actor, decide)

    def _rollout_revision(
        self,
        snapshot: _Snapshot,
        action: RolloutAction,
        reason: str,
        evidence: dict[str, Any],
        planned: builtins.list[PlannedChange],
        *,
        weight: float | None = None,
        candidate_weights: dict[str, float] | None = None,
    ) -> _Revision:
        """The revision an action on the serving rollout makes: its new status, weight(s) and step, and its
        decision."""
        rollout = snapshot.rollout
        assert rollout is not None
        status = status_after(action, RolloutStatus(rollout.status), model_name=snapshot.name)
        values: dict[str, Any] = {"status": status.value}
        details: dict[str, Any] = {"status": {"from": rollout.status, "to": status.value}}
        if weight is not None:
            values["weight_percent"] = weight
            details["weight_percent"] = {"from": rollout.weight_percent, "to": weight}
            percents = [
                weight,
                *(
                    (candidate_weights or {}).get(extra.version, extra.weight_percent)
                    for extra in snapshot.more_candidates
                ),
            ]
            details["percents"] = _arms_detail(snapshot.candidates(), percents, rollout.champion_version)
            if rollout.document is not None and rollout.step_index is not None:
                step = step_after_weight(rollout_spec_from_mapping(rollout.document), rollout.step_index, weight)
                values["step_index"] = step
                details["step_index"] = {"from": rollout.step_index, "to": step}
        if ends_rollout(action):
            values["active_model"] = None
            values["ended_at"] = datetime.now(UTC)
        return _Revision(
            planned,
            plan_reason(rollout.rollout_id, action, reason),
            rollout_values=values,
            candidate_weights=candidate_weights,
            decision=(action, reason, {**details, **evidence}),
        )

    def _revise(self, name: str, actor: str, decide: Callable[[_Snapshot], _Revision]) -> operations_pb2.RolloutPlan:
        """Write one plan revision of `name` in one transaction (what `decide` makes of what it read), then
        publish the plan. Every stage change, rollout start, weight change, pause or end comes through here."""
        if self.producer is None:
            raise PlanNotPublished(
                f"refusing to change the plan of {name}: this registry has no producer to publish with"
            )

        def attempt(session: Session) -> None:
            snapshot = self._snapshot(session, name)
            if not snapshot.rows:
                raise UnknownModelVersion(f"no model named {name}")
            revision = decide(snapshot)
            previous_plan = self._plan_of(snapshot)
            now = datetime.now(UTC)
            # One decision, one plan revision, however many stage changes it makes (each its own audit sequence).
            new_revision = snapshot.revision + 1
            sequence = snapshot.changes[-1].sequence if snapshot.changes else 0
            for change in revision.planned:
                sequence += 1
                snapshot.rows[change.version].stage = change.to_stage.value
                session.add(snapshot.rows[change.version])
                session.add(
                    StageChangeRow(
                        model_name=name,
                        sequence=sequence,
                        revision=new_revision,
                        version=change.version,
                        from_stage=change.from_stage.value,
                        to_stage=change.to_stage.value,
                        kind=change.kind.value,
                        reason=revision.reason,
                        actor=actor,
                        changed_at=now,
                    )
                )
            serving: RolloutRow | None = None
            serving_candidates: builtins.list[RolloutCandidateRow] = []
            if revision.started is not None:
                revision.started.revision = new_revision
                session.add(revision.started)
                session.add_all(revision.started_candidates)
                serving, serving_candidates = revision.started, revision.started_candidates
            elif revision.rollout_values is not None and snapshot.rollout is not None:
                serving = self._compare_and_set(session, snapshot.rollout, revision.rollout_values, new_revision)
                serving_candidates = snapshot.more_candidates
                # Under the rollout row's revision, just compared and set: no other writer changes them meanwhile.
                for extra in serving_candidates:
                    if revision.candidate_weights and extra.version in revision.candidate_weights:
                        extra.weight_percent = revision.candidate_weights[extra.version]
                        session.add(extra)
            if revision.decision is not None:
                action, reason, evidence = revision.decision
                deciding = revision.started if revision.started is not None else snapshot.rollout
                assert deciding is not None, "a rollout decision needs the rollout it decides on"
                rollout_id = deciding.rollout_id
                session.add(
                    RolloutDecisionRow(
                        rollout_id=rollout_id,
                        model_name=name,
                        revision=new_revision,
                        action=action.value,
                        actor=actor,
                        reason=reason,
                        evidence=json.loads(json.dumps(evidence, default=str)),
                        previous_plan=MessageToDict(previous_plan, preserving_proto_field_name=True),
                        created_at=now,
                    )
                )
            versions = [_version_record(row) for row in sorted(snapshot.rows.values(), key=lambda row: row.number)]
            plan = build_rollout_plan(
                name,
                versions,
                revision=new_revision,
                changed_at=now,
                reason=revision.reason,
                rollout=_serving(serving, serving_candidates),
            )
            problems = plan_problems(plan)
            if problems:
                raise RolloutRefused(f"revision {new_revision} of {name} could not be served: {'; '.join(problems)}")
            session.commit()
            logger.info(
                "model plan revised",
                extra={
                    "model": name,
                    "revision": new_revision,
                    "rollout_id": plan.rollout_id,
                    "decision": revision.decision[0].value if revision.decision else None,
                    "changes": [
                        f"{change.version}:{change.from_stage}->{change.to_stage}" for change in revision.planned
                    ],
                    "actor": actor,
                },
            )

        self._retrying(attempt)
        plan = self.current_plan(name)
        self._publish(plan)
        return plan

    def _compare_and_set(
        self, session: Session, rollout: RolloutRow, values: dict[str, Any], new_revision: int
    ) -> RolloutRow:
        """Write `values` to the serving rollout's row only if no one moved its revision since it was read."""
        merged = {**values, "revision": new_revision}
        result = session.exec(
            update(RolloutRow)
            .where(col(RolloutRow.id) == rollout.id, col(RolloutRow.revision) == rollout.revision)
            .values(**merged)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:
            raise _LostRace(f"rollout {rollout.rollout_id} changed under this transaction")
        for key, value in merged.items():
            setattr(rollout, key, value)
        return rollout

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
                f"change of {plan.model_name} committed (revision {plan.revision}) but its rollout plan "
                f"was not published: {error}; re-send it with republish_plan"
            ) from error

    def _retrying(self, attempt: Callable[[Session], Result]) -> Result:
        for attempt_number in range(1, MAX_ATTEMPTS + 1):
            with Session(self.engine) as session:
                try:
                    return attempt(session)
                except (StageRuleViolation, RolloutRefused, UnknownModelVersion):
                    raise
                except (IntegrityError, OperationalError, _LostRace) as error:
                    session.rollback()
                    if not _is_lost_race(error) or attempt_number == MAX_ATTEMPTS:
                        if _is_lost_race(error):
                            raise ConcurrentChangeConflict(f"gave up after {MAX_ATTEMPTS} attempts") from error
                        raise
                    time.sleep(random.uniform(0.0, 0.01 * attempt_number))
        raise AssertionError("unreachable")
