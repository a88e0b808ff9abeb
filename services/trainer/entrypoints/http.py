"""The trainer's HTTP door (FastAPI, 127.0.0.1:8082 by default; OpenAPI at /openapi.json).

GET  /healthz                       the process answers
GET  /readyz                        consumer assigned and polling (and progressing, given a progress check), bootstrap attempted
GET  /metrics                       Prometheus
GET  /v1/runs?limit=20              past runs, newest first
GET  /v1/runs/{run_id}              one run with its steps and experiment record
GET  /v1/runs/{run_id}/experiment   the experiment record as Markdown
POST /v1/runs                       queue a run {"reason": "..."} → 202
GET  /v1/trigger                    which trigger is due now and the label counts (cheap)
POST /v1/dry-run                    what a run would do now (builds the dataset, trains nothing)

Every /v1 route needs `Authorization: Bearer <MICHI_TRAINER_API_TOKEN>`; in dev without a token
set, only loopback clients are answered.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from michi.readiness import add_operations_routes
from michi.telemetry import http_telemetry
from services.trainer.adapters.metrics import TrainerMetrics
from services.trainer.domain.triggers import MANUAL, Trigger
from services.trainer.entrypoints.worker import TrainingWorker
from services.trainer.handlers import TrainerWiring, dry_run, new_run_id, trigger_state
from services.trainer.handlers import due as due_trigger


class RunRequest(BaseModel):
    reason: str = Field("requested through the API", max_length=500, description="why this run is wanted")


class QueuedRun(BaseModel):
    queued: bool
    run_id: str
    trigger: str
    reason: str
    queued_runs: int


LOOPBACK_CLIENTS = frozenset({"127.0.0.1", "::1", "localhost"})


def operator_check(api_token: str | None) -> Callable[[Request], None]:
    """The /v1 routes' guard: the bearer token when one is configured, else loopback clients only."""

    def check(request: Request) -> None:
        if api_token is None:
            host = request.client.host if request.client is not None else ""
            if host not in LOOPBACK_CLIENTS:
                raise HTTPException(
                    403, "the trainer API answers loopback clients only until MICHI_TRAINER_API_TOKEN is set"
                )
            return
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), api_token.encode()):
            raise HTTPException(401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"})

    return check


def create_http_app(
    wiring: TrainerWiring,
    worker: TrainingWorker,
    metrics: TrainerMetrics,
    readiness_checks: Callable[[], dict[str, str]],
    *,
    api_token: str | None = None,
) -> FastAPI:
    app = FastAPI(
        title="michi trainer",
        version="1",
        description="Continuous training of the risk model.",
        telemetry=http_telemetry(),
    )
    store = wiring.store
    operator = [Depends(operator_check(api_token))]

    # `readiness_checks` may block on the broker and runs its own event loop: it runs in a thread.
    add_operations_routes(
        app,
        readiness_checks,
        metrics.render,
        ready_summary="The training worker started; the consumer polls, holds partitions and progresses",
        service="trainer",
    )

    @app.get("/v1/runs", dependencies=operator)
    def list_runs(limit: int = Query(20, ge=1, le=500)) -> dict[str, Any]:
        runs = store.runs(model_name=wiring.model_name, limit=limit)
        return {"runs": [run.to_json() for run in runs]}

    @app.get("/v1/runs/{run_id}", dependencies=operator)
    def show_run(run_id: str) -> dict[str, Any]:
        found = store.run(run_id)
        if found is None:
            if run_id in worker.queued:
                return {"run_id": run_id, "status": "queued"}
            raise HTTPException(404, f"no run {run_id}")
        return found.to_json(with_record=True)

    @app.get("/v1/runs/{run_id}/experiment", dependencies=operator, response_class=PlainTextResponse)
    def show_experiment(run_id: str) -> PlainTextResponse:
        found = store.run(run_id)
        if found is None:
            raise HTTPException(404, f"no run {run_id}")
        if not found.experiment_markdown:
            raise HTTPException(409, f"run {run_id} has no experiment record yet (status {found.status})")
        return PlainTextResponse(found.experiment_markdown, media_type="text/markdown")

    @app.post("/v1/runs", dependencies=operator, status_code=202)
    def request_run(request: RunRequest) -> QueuedRun:
        run_id = new_run_id()
        queued = worker.request(Trigger(MANUAL, request.reason, run_id=run_id))
        return QueuedRun(queued=True, run_id=run_id, trigger=MANUAL, reason=request.reason, queued_runs=queued)

    @app.get("/v1/trigger", dependencies=operator)
    def trigger_now() -> dict[str, Any]:
        state = trigger_state(wiring)
        fired = due_trigger(wiring)
        return {
            "due": {"kind": fired.kind, "reason": fired.reason} if fired else None,
            "new_labels": state.new_labels,
            "label_threshold": wiring.triggers.label_count,
            "schedule_s": wiring.triggers.interval_s,
            "last_run_started_at": state.last_run_started_at,
            "pending_alert": state.pending_alert.reason if state.pending_alert else None,
        }

    @app.post("/v1/dry-run", dependencies=operator)
    async def dry_run_now() -> dict[str, Any]:
        return await run_in_threadpool(dry_run, wiring)

    return app
