"""What leads decide: disputed tasks and their adjudication, and gold tasks."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from michi.contracts import timestamp_to_seconds
from services.annotation.domain.frames import task_kind
from services.annotation.domain.labels import choices_for, event_type_name
from services.annotation.entrypoints.http.bodies import (
    COMMON,
    TASK_ID,
    AdjudicationBody,
    DisputeModel,
    GoldBody,
    LabelModel,
    SkipSummary,
    VoteSummary,
    refusals,
)
from services.annotation.entrypoints.http.dependencies import Service, Who

router = APIRouter()


@router.get(
    "/v1/disputes",
    response_model=list[DisputeModel],
    responses=refusals(*COMMON, 403),
    summary="Tasks waiting for a lead",
)
def disputes(who: Who, service: Service, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DisputeModel]:
    result = []
    for item in service.disputed(who, limit):
        request = item.task.request
        span = request.window
        has_window = span.HasField("started_at") and span.HasField("ended_at")
        # The answers the adjudication route accepts for this task (`AnnotationService._check_fits` reads the same
        # label set), so the page offers no answer the server refuses.
        kind = task_kind(request)
        result.append(
            DisputeModel(
                task_id=item.task.task_id,
                queue=item.task.queue,
                kind=kind,  # type: ignore[arg-type]
                answers=[choice.name for choice in choices_for(kind)],
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


@router.post(
    "/v1/tasks/{task_id}/adjudication",
    response_model=LabelModel,
    responses=refusals(*COMMON, 403, 404, 409),
    summary="Decide a disputed task (publishes its label)",
)
def adjudicate(task_id: TASK_ID, body: AdjudicationBody, who: Who, service: Service) -> LabelModel:
    label = service.adjudicate(who, task_id, body.answer, body.note)
    return LabelModel(
        event_id=label.event_id,
        window_id=label.lineage.window_id,
        answer=event_type_name(label.event_type),
        source="adjudication",
        annotators=list(label.annotators),
        agreement=label.agreement,
    )


@router.post(
    "/v1/tasks/{task_id}/gold",
    status_code=204,
    responses=refusals(*COMMON, 403, 404, 409),
    summary="Make a task gold (known answer given, or its label)",
)
def make_gold(task_id: TASK_ID, body: GoldBody, who: Who, service: Service) -> Response:
    service.make_gold(who, task_id, body.answer)
    return Response(status_code=204)
