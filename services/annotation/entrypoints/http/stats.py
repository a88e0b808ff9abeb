"""Figures: an annotator's own, and for leads the queues, agreement and every annotator's."""

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Query

from services.annotation.entrypoints.http.bodies import (
    COMMON,
    AgreementModel,
    AnnotatorStatsModel,
    MyStatsModel,
    PairModel,
    QueueStatsAnswer,
    QueueStatsModel,
    refusals,
)
from services.annotation.entrypoints.http.dependencies import Service, Who

router = APIRouter()


@router.get(
    "/v1/me/stats",
    response_model=MyStatsModel,
    responses=refusals(*COMMON, 403),
    summary="My throughput and accuracy",
)
def my_stats(who: Who, service: Service) -> MyStatsModel:
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


@router.get(
    "/v1/stats/queues",
    response_model=QueueStatsAnswer,
    responses=refusals(*COMMON, 403),
    summary="Queue depth, age, throughput",
)
def queue_stats(who: Who, service: Service) -> QueueStatsAnswer:
    stats = service.queue_stats(who)
    return QueueStatsAnswer(
        queues=[QueueStatsModel(**asdict(item)) for item in stats],
        gold_pool=service.gold_pool_size(),
        leased=service.queues.leased_count(),
    )


@router.get(
    "/v1/stats/agreement",
    response_model=AgreementModel,
    responses=refusals(*COMMON, 403),
    summary="Annotator agreement: Krippendorff's alpha, Fleiss' kappa, pairwise Cohen's kappa",
)
def agreement(
    who: Who,
    service: Service,
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


@router.get(
    "/v1/stats/annotators",
    response_model=list[AnnotatorStatsModel],
    responses=refusals(*COMMON, 403),
    summary="Per annotator: throughput, gold accuracy, vote weight, agreement with consensus",
)
def annotator_stats(who: Who, service: Service) -> list[AnnotatorStatsModel]:
    return [AnnotatorStatsModel(**asdict(item)) for item in service.annotator_stats(who)]
