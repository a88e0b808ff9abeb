"""What the annotation API's requests and answers carry: pydantic bodies, path parameters, documented refusals.

The class names are the OpenAPI schema names: renaming one changes the published contract.
"""

from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Path
from fastapi.responses import Response
from pydantic import BaseModel, Field

from services.annotation.domain.roles import Permission, Role

TASK_ID = Annotated[str, Path(min_length=1, max_length=128)]
QUEUE = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z0-9-]+$")]
NAME = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
AnswerName = Literal[
    "normal",
    "harsh-braking",
    "harsh-acceleration",
    "harsh-cornering",
    "confounder",
    "distraction",
    "drowsiness",
    "tailgating",
]


class ErrorBody(BaseModel):
    """Every refusal: a kebab-case `reason`, a human `detail`, and the field at fault when there is one."""

    reason: str
    detail: str
    field: str | None = None


class SignIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class SessionAnswer(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>`; shown once")
    annotator: str
    role: Role
    expires_at: datetime


class MeAnswer(BaseModel):
    annotator: str
    role: Role
    permissions: list[Permission]


class LabelChoiceModel(BaseModel):
    key: str
    answer: str
    title: str
    tasks: list[Literal["motion", "camera"]] = Field(
        description="the kinds of task this answer is offered for (a task's `kind`)"
    )


class QueueModel(BaseModel):
    queue: str
    waiting: int


class TaskModel(BaseModel):
    """A leased task. Nothing here tells why the task was asked for."""

    task_id: str
    lease_id: str
    lease_expires_at: datetime
    queue: str
    suggestion: str = Field(description="the model's answer ('' when it made none)")
    confidence: float | None
    alternative: str = Field(description="what another model variant said, if anything")
    window_started_at: datetime | None
    window_ended_at: datetime | None
    kind: Literal["motion", "camera"] = Field(
        description="motion: judged from the traces; camera: a camera detection judged from its evidence frames"
    )
    frame_offsets_ms: list[int] = Field(
        description="camera tasks: the evidence frames (ms from the upload's start), at most 16; frame i is "
        "GET /v1/tasks/{task_id}/frames/{i}"
    )


class Axes(BaseModel):
    x: list[float]
    y: list[float]
    z: list[float]


class MediaModel(BaseModel):
    name: str
    url: str
    content_type: str


class WindowModel(BaseModel):
    """The window's traces; times in seconds from the window's start (negative: context before it)."""

    task_id: str
    available: bool = Field(
        description="false: the raw upload is not in the archive; only the request's facts are known"
    )
    window_duration_s: float
    imu_times_s: list[float]
    accel_mps2: Axes
    gyro_radps: Axes
    gps_times_s: list[float]
    speed_mps: list[float]
    latitude: list[float]
    longitude: list[float]
    media: list[MediaModel]
    sample_rate_hz: int
    vehicle_type: str


class VoteBody(BaseModel):
    lease_id: str = Field(min_length=1, max_length=64)
    answer: AnswerName


class VoteModel(BaseModel):
    task_id: str
    answer: str
    recorded_as: Literal["counted", "extra", "duplicate"]


class SkipBody(BaseModel):
    lease_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=200)


class SkipModel(BaseModel):
    task_id: str
    outcome: Literal["skipped", "duplicate"]


class MyStatsModel(BaseModel):
    annotator: str
    votes_total: int
    votes_last_hour: int
    votes_last_day: int
    skips_total: int
    last_vote_at: datetime | None
    quality_checks: int = Field(description="answers to quality-check (gold) tasks in the rolling window")
    accuracy: float | None = Field(description="share right of those; null until enough are in")


class QueueStatsModel(BaseModel):
    queue: str
    waiting: int
    in_progress: int
    adjudication: int
    oldest_waiting_age_s: float | None
    votes_last_hour: int
    labels_last_hour: int


class QueueStatsAnswer(BaseModel):
    queues: list[QueueStatsModel]
    gold_pool: int
    leased: int


class PairModel(BaseModel):
    first: str
    second: str
    items: int
    kappa: float | None


class AgreementModel(BaseModel):
    items: int
    ratings: int
    krippendorff_alpha: float | None
    fleiss_kappa: float | None
    fleiss_items: int
    fleiss_raters: int
    pairs: list[PairModel]
    mean_cohen_kappa: float | None


class AnnotatorStatsModel(BaseModel):
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


class VoteSummary(BaseModel):
    annotator: str
    answer: str
    counted: bool
    late: bool
    voted_at: datetime


class SkipSummary(BaseModel):
    annotator: str
    reason: str


class DisputeModel(BaseModel):
    task_id: str
    queue: str
    kind: Literal["motion", "camera"] = Field(description="the task's kind, as a lease's `TaskModel.kind`")
    answers: list[str] = Field(
        description="the answers a lead may decide this task with: those of the label set offered for its kind "
        "(any other is refused 422 `answer-does-not-fit`)"
    )
    suggestion: str
    confidence: float | None
    window_started_at: datetime | None
    window_ended_at: datetime | None
    votes: list[VoteSummary]
    skips: list[SkipSummary]


class AdjudicationBody(BaseModel):
    answer: AnswerName
    note: str = Field(default="", max_length=1000)


class LabelModel(BaseModel):
    event_id: str
    window_id: str
    answer: str
    source: str
    annotators: list[str]
    agreement: float


class GoldBody(BaseModel):
    answer: AnswerName | None = Field(default=None, description="the known answer; default: the task's label")


class NewAnnotator(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    role: Role = Role.ANNOTATOR


class AnnotatorModel(BaseModel):
    name: str
    role: Role
    disabled: bool
    created_at: datetime


class PasswordAnswer(BaseModel):
    name: str
    password: str = Field(description="one-time: shown once, only its scrypt hash is stored")


class RebuildAnswer(BaseModel):
    tasks: int


# Every route that needs a session can answer these.
COMMON = (401, 413, 422, 429, 503)


def refusals(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route that refuses with `codes`, each an `ErrorBody`."""
    descriptions = {
        401: "No, invalid or expired session token (`missing-token`, `invalid-token`), or wrong credentials",
        403: "The role may not do this (`forbidden`)",
        404: "No such task, queue, media or annotator",
        409: "The lease is unknown or ran out, or the task is not in the state this needs",
        413: "Request body larger than the limit (`body-too-large`)",
        422: "Invalid request; `reason` and `field` say what",
        429: "Too many requests or failed sign-ins; see Retry-After",
        503: "Redis or the database does not answer; see Retry-After",
    }
    return {code: {"model": ErrorBody, "description": descriptions[code]} for code in codes}


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    """An orjson answer, for handlers and routes that choose their own status."""
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)
