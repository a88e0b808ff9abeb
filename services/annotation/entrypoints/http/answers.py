"""Answering a leased task, or giving it back."""

from fastapi import APIRouter

from services.annotation.entrypoints.http.bodies import (
    COMMON,
    TASK_ID,
    SkipBody,
    SkipModel,
    VoteBody,
    VoteModel,
    refusals,
)
from services.annotation.entrypoints.http.dependencies import Service, Who

router = APIRouter()


@router.post(
    "/v1/tasks/{task_id}/votes",
    response_model=VoteModel,
    responses=refusals(*COMMON, 403, 404, 409),
    summary="Answer a leased task (late answers count if nobody else took the task; else an extra vote)",
)
def vote(task_id: TASK_ID, body: VoteBody, who: Who, service: Service) -> VoteModel:
    answer = service.submit(who, task_id, body.lease_id, body.answer)
    return VoteModel(task_id=answer.task_id, answer=answer.answer, recorded_as=answer.recorded_as)  # type: ignore[arg-type]


@router.post(
    "/v1/tasks/{task_id}/skips",
    response_model=SkipModel,
    responses=refusals(*COMMON, 403, 404, 409),
    summary="Give a leased task back, with a reason",
)
def skip(task_id: TASK_ID, body: SkipBody, who: Who, service: Service) -> SkipModel:
    outcome = service.skip(who, task_id, body.lease_id, body.reason)
    return SkipModel(task_id=task_id, outcome=outcome)  # type: ignore[arg-type]
