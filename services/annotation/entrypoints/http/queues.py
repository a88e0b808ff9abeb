"""What there is to answer: the label set, the queues, and leasing a queue's next task."""

from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import Response

from services.annotation.domain.labels import LABEL_SET
from services.annotation.domain.roles import Permission
from services.annotation.entrypoints.http.bodies import (
    COMMON,
    QUEUE,
    LabelChoiceModel,
    QueueModel,
    TaskModel,
    json_response,
    refusals,
)
from services.annotation.entrypoints.http.dependencies import Service, Who

router = APIRouter()


@router.get("/v1/label-set", response_model=list[LabelChoiceModel], summary="The answers and their keys")
def label_set() -> list[LabelChoiceModel]:
    return [
        LabelChoiceModel(key=choice.key, answer=choice.name, title=choice.title, tasks=list(choice.tasks))  # type: ignore[arg-type]
        for choice in LABEL_SET
    ]


@router.get(
    "/v1/queues",
    response_model=list[QueueModel],
    responses=refusals(*COMMON),
    summary="Queues and their waiting tasks",
)
def queues(who: Who, service: Service) -> list[QueueModel]:
    who.require(Permission.WORK)
    waiting = service.queues.waiting(service.queues.known_queues())
    return [QueueModel(queue=name, waiting=count) for name, count in waiting.items()]


@router.post(
    "/v1/queues/{queue}/leases",
    response_model=TaskModel,
    responses={
        204: {"description": "No task for this annotator in this queue now"},
        **refusals(*COMMON, 403),
    },
    summary="Lease the next task of a queue (the same one again while a lease is held)",
)
def lease(queue: QUEUE, who: Who, service: Service) -> Response:
    view = service.lease(who, queue)
    if view is None:
        return Response(status_code=204)
    return json_response(200, TaskModel(**asdict(view)).model_dump(mode="json"))
