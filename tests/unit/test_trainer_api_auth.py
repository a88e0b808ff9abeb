"""The trainer's /v1 API: a bearer token when configured, loopback clients only without one."""

from __future__ import annotations

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr, ValidationError

from services.trainer.entrypoints.http import operator_check
from services.trainer.settings import TrainerSettings


def _app(token: str | None) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/runs", dependencies=[Depends(operator_check(token))])
    def runs() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def test_a_configured_token_is_required() -> None:
    client = TestClient(_app("s3cret-token"))
    assert client.get("/v1/runs").status_code == 401
    assert client.get("/v1/runs").headers["www-authenticate"] == "Bearer"
    assert client.get("/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/runs", headers={"Authorization": "Basic s3cret-token"}).status_code == 401
    assert client.get("/v1/runs", headers={"Authorization": "Bearer s3cret-token"}).json() == {"ok": "yes"}


def test_without_a_token_only_loopback_clients_are_answered() -> None:
    assert TestClient(_app(None)).get("/v1/runs").status_code == 403  # TestClient's host is "testclient"
    assert TestClient(_app(None), client=("127.0.0.1", 50000)).get("/v1/runs").status_code == 200


def test_a_token_is_required_outside_dev() -> None:
    with pytest.raises(ValidationError, match="MICHI_TRAINER_API_TOKEN"):
        TrainerSettings(env="production", token_secret=SecretStr("a-real-signing-secret-1234567890"))
    with pytest.raises(ValidationError, match="MICHI_TRAINER_API_TOKEN"):
        TrainerSettings(
            env="production",
            token_secret=SecretStr("a-real-signing-secret-1234567890"),
            trainer_api_token=SecretStr("changethis"),
        )
    settings = TrainerSettings(
        env="production",
        token_secret=SecretStr("a-real-signing-secret-1234567890"),
        trainer_api_token=SecretStr("a-long-random-operator-token"),
    )
    assert "a-long-random-operator-token" not in repr(settings)
