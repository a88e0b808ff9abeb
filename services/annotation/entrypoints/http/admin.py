"""Accounts and the live queues' rebuild, for admins."""

from fastapi import APIRouter
from fastapi.responses import Response

from services.annotation.domain.roles import Permission
from services.annotation.entrypoints.http.bodies import (
    COMMON,
    NAME,
    AnnotatorModel,
    NewAnnotator,
    PasswordAnswer,
    RebuildAnswer,
    refusals,
)
from services.annotation.entrypoints.http.dependencies import Endpoints, Service, Who

router = APIRouter()


@router.get(
    "/v1/admin/annotators", response_model=list[AnnotatorModel], responses=refusals(*COMMON, 403), summary="Accounts"
)
def list_annotators(who: Who, service: Service) -> list[AnnotatorModel]:
    who.require(Permission.ADMINISTER)
    return [
        AnnotatorModel(name=record.name, role=record.role, disabled=record.disabled, created_at=record.created_at)
        for record in service.store.annotators()
    ]


@router.post(
    "/v1/admin/annotators",
    response_model=PasswordAnswer,
    status_code=201,
    responses=refusals(*COMMON, 403, 409),
    summary="Create an account (answers its one-time password)",
)
def add_annotator(body: NewAnnotator, who: Who, endpoints: Endpoints) -> PasswordAnswer:
    who.require(Permission.ADMINISTER)
    return PasswordAnswer(name=body.name, password=endpoints.accounts.add(body.name, body.role, actor=who.name))


@router.post(
    "/v1/admin/annotators/{name}/password",
    response_model=PasswordAnswer,
    responses=refusals(*COMMON, 403, 404),
    summary="Reset a password (ends the account's sessions)",
)
def reset_password(name: NAME, who: Who, endpoints: Endpoints) -> PasswordAnswer:
    who.require(Permission.ADMINISTER)
    return PasswordAnswer(name=name, password=endpoints.accounts.reset_password(name, actor=who.name))


@router.post(
    "/v1/admin/annotators/{name}/disabled",
    status_code=204,
    responses=refusals(*COMMON, 403, 404),
    summary="Disable an account (ends its sessions)",
)
def disable(name: NAME, who: Who, endpoints: Endpoints) -> Response:
    who.require(Permission.ADMINISTER)
    endpoints.accounts.set_disabled(name, True, actor=who.name)
    return Response(status_code=204)


@router.delete(
    "/v1/admin/annotators/{name}/disabled",
    status_code=204,
    responses=refusals(*COMMON, 403, 404),
    summary="Enable again",
)
def enable(name: NAME, who: Who, endpoints: Endpoints) -> Response:
    who.require(Permission.ADMINISTER)
    endpoints.accounts.set_disabled(name, False, actor=who.name)
    return Response(status_code=204)


@router.post(
    "/v1/admin/rebuild",
    response_model=RebuildAnswer,
    responses=refusals(*COMMON, 403),
    summary="Rebuild Redis from SQL",
)
def rebuild(who: Who, service: Service) -> RebuildAnswer:
    who.require(Permission.ADMINISTER)
    return RebuildAnswer(tasks=service.rebuild(who.name))
