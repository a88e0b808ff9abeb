"""Signing in and out, and who a session belongs to."""

from fastapi import APIRouter
from fastapi.responses import Response

from services.annotation.domain.roles import PERMISSIONS
from services.annotation.entrypoints.http.bodies import COMMON, MeAnswer, SessionAnswer, SignIn, refusals
from services.annotation.entrypoints.http.dependencies import Endpoints, Token, Who

router = APIRouter()


@router.post(
    "/v1/sessions", response_model=SessionAnswer, status_code=201, responses=refusals(*COMMON), summary="Sign in"
)
def sign_in(body: SignIn, endpoints: Endpoints) -> SessionAnswer:
    token, record = endpoints.accounts.sign_in(body.name, body.password)
    return SessionAnswer(token=token, annotator=record.annotator, role=record.role, expires_at=record.expires_at)


@router.delete("/v1/sessions/current", status_code=204, responses=refusals(*COMMON), summary="Sign out")
def sign_out(who: Who, token: Token, endpoints: Endpoints) -> Response:
    endpoints.accounts.sign_out(token)
    return Response(status_code=204)


@router.get("/v1/me", response_model=MeAnswer, responses=refusals(*COMMON), summary="Who the session belongs to")
def me(who: Who) -> MeAnswer:
    return MeAnswer(annotator=who.name, role=who.role, permissions=sorted(PERMISSIONS[who.role]))
