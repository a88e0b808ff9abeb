"""The annotation API and page: FastAPI routes over `AnnotationService` and `Accounts`.

Run it with `python -m services.annotation` (see `services/annotation/bootstrap.py`); the page is
`GET /`, the API under `/v1`, OpenAPI at `/openapi.json`. Every refusal is an `ErrorBody`
(`reason`, `detail`, optional `field`); every route that needs a session takes
`Authorization: Bearer <token>` from `POST /v1/sessions`.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from michi.contracts import timestamp_to_seconds
from michi.readiness import add_operations_routes
from services.annotation.adapters.windows import ArchiveWindowSource, media_type_of
from services.annotation.domain.labels import LABEL_SET, event_type_name
from services.annotation.domain.roles import PERMISSIONS, Permission, Role
from services.annotation.domain.windows import cut_window
from services.annotation.handlers import Accounts, AnnotationService, Principal, Refused
from services.annotation.metrics import AnnotationMetrics

logger = logging.getLogger(__name__)

TASK_ID = Annotated[str, Path(min_length=1, max_length=128)]
QUEUE = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z0-9-]+$")]
NAME = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
AnswerName = Literal["normal", "harsh-braking", "harsh-acceleration", "harsh-cornering", "confounder"]
MEDIA_CHUNK = 256 * 1024


# ---------------------------------------------------------------------------- bodies


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


# ---------------------------------------------------------------------------- plumbing


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
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


COMMON = (401, 413, 422, 429, 503)


def _json(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json", headers=headers)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, declared or streamed (never read past it)."""

    def __init__(self, app: ASGIApp, limit: int, refused: Callable[[str], None]) -> None:
        self.app = app
        self.limit = limit
        self.refused = refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._refuse(send)
            return
        received = 0
        too_large = False

        async def bounded() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, bounded, send)
        except _BodyTooLarge:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        self.refused("body-too-large")
        body = orjson.dumps(
            {"reason": "body-too-large", "detail": f"request bodies are at most {self.limit} bytes", "field": None}
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


@dataclass
class AnnotationEndpoints:
    """What the routes need; `bootstrap.build_app` fills it."""

    service: AnnotationService
    accounts: Accounts
    windows: ArchiveWindowSource | None
    metrics: AnnotationMetrics
    readiness_checks: dict[str, Callable[[], Awaitable[None]]]
    max_body_bytes: int
    max_media_bytes: int


def _page() -> str:
    return resources.files("services.annotation.entrypoints").joinpath("page.html").read_text(encoding="utf-8")


def create_http_app(endpoints: AnnotationEndpoints, *, lifespan: Any = None) -> FastAPI:
    service, accounts, metrics = endpoints.service, endpoints.accounts, endpoints.metrics
    app = FastAPI(
        title="Michi annotation",
        version="1",
        description="Label queues for people: sign in, lease a task, answer; leads watch agreement and adjudicate. "
        "See docs/annotation.md.",
        lifespan=lifespan,
    )
    page = _page()

    # --- errors

    def refusal(error: Refused) -> Response:
        metrics.refusals.labels(error.reason).inc()
        if error.status >= 500:
            logger.warning("request refused", extra={"reason": error.reason, "status": error.status})
        return _json(error.status, {"reason": error.reason, "detail": error.detail, "field": None}, error.headers)

    @app.exception_handler(Refused)
    async def refused(request: Request, error: Refused) -> Response:
        return refusal(error)

    @app.exception_handler(RedisError)
    async def redis_down(request: Request, error: RedisError) -> Response:
        logger.warning("redis error", exc_info=error)
        return refusal(Refused(503, "redis-unavailable", "Redis does not answer", {"Retry-After": "2"}))

    @app.exception_handler(SQLAlchemyError)
    async def database_down(request: Request, error: SQLAlchemyError) -> Response:
        logger.warning("database error", exc_info=error)
        return refusal(Refused(503, "database-unavailable", "the database does not answer", {"Retry-After": "2"}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
        metrics.refusals.labels("invalid-request").inc()
        return _json(
            422,
            {
                "reason": "invalid-request",
                "detail": str(first.get("msg", "invalid request")),
                "field": ".".join(location) or None,
            },
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        reason = {404: "not-found", 405: "method-not-allowed"}.get(error.status_code, "http-error")
        return _json(
            error.status_code, {"reason": reason, "detail": str(error.detail), "field": None}, dict(error.headers or {})
        )

    # --- who is asking

    def bearer(request: Request) -> str:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(
                401,
                "missing-token",
                "Authorization: Bearer <session token> is required",
                {"WWW-Authenticate": "Bearer"},
            )
        return token.strip()

    def principal(request: Request) -> Principal:
        who = accounts.authenticate(bearer(request))
        if not service.queues.allow_request(who.name, service.config.rate_per_s, service.clock()):
            raise Refused(429, "rate-limited", "too many requests; slow down", {"Retry-After": "1"})
        return who

    Who = Annotated[Principal, Depends(principal)]  # noqa: N806

    # --- page

    @app.get("/", response_class=HTMLResponse, summary="The annotation page (plain HTML and inline JavaScript)")
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store", "Content-Security-Policy": _PAGE_POLICY})

    # --- sessions

    @app.post(
        "/v1/sessions", response_model=SessionAnswer, status_code=201, responses=_errors(*COMMON), summary="Sign in"
    )
    def sign_in(body: SignIn) -> SessionAnswer:
        token, record = accounts.sign_in(body.name, body.password)
        return SessionAnswer(token=token, annotator=record.annotator, role=record.role, expires_at=record.expires_at)

    @app.delete("/v1/sessions/current", status_code=204, responses=_errors(*COMMON), summary="Sign out")
    def sign_out(request: Request, who: Who) -> Response:
        accounts.sign_out(bearer(request))
        return Response(status_code=204)

    @app.get("/v1/me", response_model=MeAnswer, responses=_errors(*COMMON), summary="Who the session belongs to")
    def me(who: Who) -> MeAnswer:
        return MeAnswer(annotator=who.name, role=who.role, permissions=sorted(PERMISSIONS[who.role]))

    @app.get("/v1/label-set", response_model=list[LabelChoiceModel], summary="The answers and their keys")
    def label_set() -> list[LabelChoiceModel]:
        return [LabelChoiceModel(key=choice.key, answer=choice.name, title=choice.title) for choice in LABEL_SET]

    # --- the annotator's loop

    @app.get(
        "/v1/queues",
        response_model=list[QueueModel],
        responses=_errors(*COMMON),
        summary="Queues and their waiting tasks",
    )
    def queues(who: Who) -> list[QueueModel]:
        who.require(Permission.WORK)
        waiting = service.queues.waiting(service.queues.known_queues())
        return [QueueModel(queue=name, waiting=count) for name, count in waiting.items()]

    @app.post(
        "/v1/queues/{queue}/leases",
        response_model=TaskModel,
        responses={
            204: {"description": "No task for this annotator in this queue now"},
            **_errors(*COMMON, 403),
        },
        summary="Lease the next task of a queue (the same one again while a lease is held)",
    )
    def lease(queue: QUEUE, who: Who) -> Response:
        view = service.lease(who, queue)
        if view is None:
            return Response(status_code=204)
        return _json(200, TaskModel(**asdict(view)).model_dump(mode="json"))

    @app.get(
        "/v1/tasks/{task_id}/window",
        response_model=WindowModel,
        responses=_errors(*COMMON, 403, 404),
        summary="The leased window's traces (IMU, speed, GPS track) and media",
    )
    async def window(task_id: TASK_ID, request: Request, who: Who) -> WindowModel:
        if not await run_in_threadpool(service.can_see, who, task_id):
            raise Refused(403, "not-your-task", "only the annotator holding the lease (or a lead) sees a task")
        record = await run_in_threadpool(service.store.task, task_id)
        if record is None:
            raise Refused(404, "unknown-task", f"no task {task_id}")
        request_message = record.request
        span = request_message.window
        start = timestamp_to_seconds(span.started_at)
        end = timestamp_to_seconds(span.ended_at)
        upload = None
        if endpoints.windows is not None and span.HasField("started_at"):
            upload = await endpoints.windows.upload(request_message.lineage, datetime.fromtimestamp(start, UTC))
        base = str(request.url_for("media", task_id=task_id, name="_")).rsplit("/", 1)[0]
        if upload is None:
            return WindowModel(
                task_id=task_id,
                available=False,
                window_duration_s=max(0.0, end - start),
                imu_times_s=[],
                accel_mps2=Axes(x=[], y=[], z=[]),
                gyro_radps=Axes(x=[], y=[], z=[]),
                gps_times_s=[],
                speed_mps=[],
                latitude=[],
                longitude=[],
                media=[],
                sample_rate_hz=0,
                vehicle_type="",
            )
        traces = cut_window(
            upload, start, end, context_s=service.config.context_s, max_points=service.config.max_points
        )
        return WindowModel(
            task_id=task_id,
            available=True,
            window_duration_s=max(0.0, end - start),
            imu_times_s=traces.imu_times_s,
            accel_mps2=Axes(**traces.accel),
            gyro_radps=Axes(**traces.gyro),
            gps_times_s=traces.gps_times_s,
            speed_mps=traces.speed_mps,
            latitude=traces.latitude,
            longitude=traces.longitude,
            media=[
                MediaModel(name=name, url=f"{base}/{name}", content_type=media_type_of(name))
                for name in traces.media_names
            ],
            sample_rate_hz=traces.sample_rate_hz,
            vehicle_type=traces.vehicle_type,
        )

    @app.get(
        "/v1/tasks/{task_id}/media/{name}",
        name="media",
        response_class=Response,
        responses={
            200: {"content": {"image/jpeg": {}, "image/png": {}, "video/mp4": {}}, "description": "The media file"},
            **_errors(*COMMON, 403, 404),
        },
        summary="A camera frame or clip of the leased window's upload",
    )
    async def media(task_id: TASK_ID, name: Annotated[str, Path(min_length=1, max_length=128)], who: Who) -> Response:
        if not await run_in_threadpool(service.can_see, who, task_id):
            raise Refused(403, "not-your-task", "only the annotator holding the lease (or a lead) sees a task")
        record = await run_in_threadpool(service.store.task, task_id)
        if record is None or endpoints.windows is None:
            raise Refused(404, "unknown-media", f"no media {name} for task {task_id}")
        found = await endpoints.windows.media(record.request.lineage, name)
        if found is None:
            raise Refused(404, "unknown-media", f"no media {name} for task {task_id}")
        reader, content_type = found
        limit = endpoints.max_media_bytes

        async def chunks() -> Any:
            sent = 0
            try:
                while sent < limit:
                    chunk = await reader.read(min(MEDIA_CHUNK, limit - sent))
                    if not chunk:
                        break
                    sent += len(chunk)
                    yield chunk
            finally:
                await reader.close()

        return StreamingResponse(chunks(), media_type=content_type, headers={"Cache-Control": "private, max-age=300"})

    @app.post(
        "/v1/tasks/{task_id}/votes",
        response_model=VoteModel,
        responses=_errors(*COMMON, 403, 404, 409),
        summary="Answer a leased task (late answers count if nobody else took the task; else an extra vote)",
    )
    def vote(task_id: TASK_ID, body: VoteBody, who: Who) -> VoteModel:
        answer = service.submit(who, task_id, body.lease_id, body.answer)
        return VoteModel(task_id=answer.task_id, answer=answer.answer, recorded_as=answer.recorded_as)  # type: ignore[arg-type]

    @app.post(
        "/v1/tasks/{task_id}/skips",
        response_model=SkipModel,
        responses=_errors(*COMMON, 403, 404, 409),
        summary="Give a leased task back, with a reason",
    )
    def skip(task_id: TASK_ID, body: SkipBody, who: Who) -> SkipModel:
        outcome = service.skip(who, task_id, body.lease_id, body.reason)
        return SkipModel(task_id=task_id, outcome=outcome)  # type: ignore[arg-type]

    @app.get(
        "/v1/me/stats",
        response_model=MyStatsModel,
        responses=_errors(*COMMON, 403),
        summary="My throughput and accuracy",
    )
    def my_stats(who: Who) -> MyStatsModel:
        stats = service.my_stats(who)
        return MyStatsModel(
            annotator=stats.annotator,
            votes_total=stats.votes_total,
            votes_last_hour=stats.votes_last_hour,
            votes_last_day=stats.votes_last_day,
            skips_total=stats.skips_total,
            last_vote_at=stats.last_vote_at,
            quality_checks=stats.gold_answers,
            accuracy=stats.gold_accuracy,
        )

    # --- leads

    @app.get(
        "/v1/stats/queues",
        response_model=QueueStatsAnswer,
        responses=_errors(*COMMON, 403),
        summary="Queue depth, age, throughput",
    )
    def queue_stats(who: Who) -> QueueStatsAnswer:
        stats = service.queue_stats(who)
        return QueueStatsAnswer(
            queues=[QueueStatsModel(**asdict(item)) for item in stats],
            gold_pool=service.gold_pool_size(),
            leased=service.queues.leased_count(),
        )

    @app.get(
        "/v1/stats/agreement",
        response_model=AgreementModel,
        responses=_errors(*COMMON, 403),
        summary="Annotator agreement: Krippendorff's alpha, Fleiss' kappa, pairwise Cohen's kappa",
    )
    def agreement(
        who: Who,
        queue: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z0-9-]+$")] = None,
        since_hours: Annotated[float | None, Query(gt=0, le=24 * 365)] = None,
    ) -> AgreementModel:
        report = service.agreement(who, queue=queue, since_hours=since_hours)
        return AgreementModel(
            items=report.items,
            ratings=report.ratings,
            krippendorff_alpha=report.krippendorff_alpha,
            fleiss_kappa=report.fleiss_kappa,
            fleiss_items=report.fleiss_items,
            fleiss_raters=report.fleiss_raters,
            pairs=[PairModel(**asdict(pair)) for pair in report.pairs],
            mean_cohen_kappa=report.mean_cohen_kappa,
        )

    @app.get(
        "/v1/stats/annotators",
        response_model=list[AnnotatorStatsModel],
        responses=_errors(*COMMON, 403),
        summary="Per annotator: throughput, gold accuracy, vote weight, agreement with consensus",
    )
    def annotator_stats(who: Who) -> list[AnnotatorStatsModel]:
        return [AnnotatorStatsModel(**asdict(item)) for item in service.annotator_stats(who)]

    @app.get(
        "/v1/disputes",
        response_model=list[DisputeModel],
        responses=_errors(*COMMON, 403),
        summary="Tasks waiting for a lead",
    )
    def disputes(who: Who, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DisputeModel]:
        result = []
        for item in service.disputed(who, limit):
            request = item.task.request
            span = request.window
            has_window = span.HasField("started_at") and span.HasField("ended_at")
            result.append(
                DisputeModel(
                    task_id=item.task.task_id,
                    queue=item.task.queue,
                    suggestion=event_type_name(request.suggested),
                    confidence=float(request.confidence) if request.suggested else None,
                    window_started_at=datetime.fromtimestamp(timestamp_to_seconds(span.started_at), UTC)
                    if has_window
                    else None,
                    window_ended_at=datetime.fromtimestamp(timestamp_to_seconds(span.ended_at), UTC)
                    if has_window
                    else None,
                    votes=[
                        VoteSummary(
                            annotator=vote.annotator,
                            answer=event_type_name(vote.event_type),
                            counted=vote.counted,
                            late=vote.late,
                            voted_at=vote.created_at,
                        )
                        for vote in item.votes
                    ],
                    skips=[SkipSummary(annotator=annotator, reason=reason) for annotator, reason in item.skips],
                )
            )
        return result

    @app.post(
        "/v1/tasks/{task_id}/adjudication",
        response_model=LabelModel,
        responses=_errors(*COMMON, 403, 404, 409),
        summary="Decide a disputed task (publishes its label)",
    )
    def adjudicate(task_id: TASK_ID, body: AdjudicationBody, who: Who) -> LabelModel:
        label = service.adjudicate(who, task_id, body.answer, body.note)
        return LabelModel(
            event_id=label.event_id,
            window_id=label.lineage.window_id,
            answer=event_type_name(label.event_type),
            source="adjudication",
            annotators=list(label.annotators),
            agreement=label.agreement,
        )

    @app.post(
        "/v1/tasks/{task_id}/gold",
        status_code=204,
        responses=_errors(*COMMON, 403, 404, 409),
        summary="Make a task gold (known answer given, or its label)",
    )
    def make_gold(task_id: TASK_ID, body: GoldBody, who: Who) -> Response:
        service.make_gold(who, task_id, body.answer)
        return Response(status_code=204)

    # --- admin

    @app.get(
        "/v1/admin/annotators", response_model=list[AnnotatorModel], responses=_errors(*COMMON, 403), summary="Accounts"
    )
    def list_annotators(who: Who) -> list[AnnotatorModel]:
        who.require(Permission.ADMINISTER)
        return [
            AnnotatorModel(name=record.name, role=record.role, disabled=record.disabled, created_at=record.created_at)
            for record in service.store.annotators()
        ]

    @app.post(
        "/v1/admin/annotators",
        response_model=PasswordAnswer,
        status_code=201,
        responses=_errors(*COMMON, 403, 409),
        summary="Create an account (answers its one-time password)",
    )
    def add_annotator(body: NewAnnotator, who: Who) -> PasswordAnswer:
        who.require(Permission.ADMINISTER)
        return PasswordAnswer(name=body.name, password=accounts.add(body.name, body.role, actor=who.name))

    @app.post(
        "/v1/admin/annotators/{name}/password",
        response_model=PasswordAnswer,
        responses=_errors(*COMMON, 403, 404),
        summary="Reset a password (ends the account's sessions)",
    )
    def reset_password(name: NAME, who: Who) -> PasswordAnswer:
        who.require(Permission.ADMINISTER)
        return PasswordAnswer(name=name, password=accounts.reset_password(name, actor=who.name))

    @app.post(
        "/v1/admin/annotators/{name}/disabled",
        status_code=204,
        responses=_errors(*COMMON, 403, 404),
        summary="Disable an account (ends its sessions)",
    )
    def disable(name: NAME, who: Who) -> Response:
        who.require(Permission.ADMINISTER)
        accounts.set_disabled(name, True, actor=who.name)
        return Response(status_code=204)

    @app.delete(
        "/v1/admin/annotators/{name}/disabled",
        status_code=204,
        responses=_errors(*COMMON, 403, 404),
        summary="Enable again",
    )
    def enable(name: NAME, who: Who) -> Response:
        who.require(Permission.ADMINISTER)
        accounts.set_disabled(name, False, actor=who.name)
        return Response(status_code=204)

    @app.post(
        "/v1/admin/rebuild",
        response_model=RebuildAnswer,
        responses=_errors(*COMMON, 403),
        summary="Rebuild Redis from SQL",
    )
    def rebuild(who: Who) -> RebuildAnswer:
        who.require(Permission.ADMINISTER)
        return RebuildAnswer(tasks=service.rebuild(who.name))

    # --- operations

    add_operations_routes(
        app,
        endpoints.readiness_checks,
        metrics.registry,
        ready_summary="Redis, the database (and, when consuming, Kafka) answer and the consumer makes progress",
    )

    app.add_middleware(
        BodyLimit, limit=endpoints.max_body_bytes, refused=lambda reason: metrics.refusals.labels(reason).inc()
    )
    return app


# The page loads nothing from elsewhere: inline script and style, media from this origin only.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' blob:; "
    "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
