"""A leased task's window: its traces cut from the archived upload, its camera frames and clips, and a camera
review's evidence frames."""

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from michi.contracts import timestamp_to_seconds
from services.annotation.adapters.frames import FramesUnavailable
from services.annotation.adapters.windows import media_type_of
from services.annotation.domain.frames import MAX_EVIDENCE_FRAMES
from services.annotation.domain.windows import cut_window
from services.annotation.entrypoints.http.bodies import COMMON, TASK_ID, Axes, MediaModel, WindowModel, refusals
from services.annotation.entrypoints.http.dependencies import Endpoints, Service, Who
from services.annotation.handlers import Refused

MEDIA_CHUNK = 256 * 1024
# Evidence frames never change for a request (the media item is checked against its sha256); the cache is the
# reviewer's own (the route needs their session), so it stays private.
FRAME_CACHE_CONTROL = "private, max-age=3600"

router = APIRouter()


@router.get(
    "/v1/tasks/{task_id}/window",
    response_model=WindowModel,
    responses=refusals(*COMMON, 403, 404),
    summary="The leased window's traces (IMU, speed, GPS track) and media",
)
async def window(task_id: TASK_ID, request: Request, who: Who, service: Service, endpoints: Endpoints) -> WindowModel:
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
    traces = cut_window(upload, start, end, context_s=service.config.context_s, max_points=service.config.max_points)
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
            MediaModel(name=name, url=f"{base}/{name}", content_type=media_type_of(name)) for name in traces.media_names
        ],
        sample_rate_hz=traces.sample_rate_hz,
        vehicle_type=traces.vehicle_type,
    )


@router.get(
    "/v1/tasks/{task_id}/media/{name}",
    name="media",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}, "image/png": {}, "video/mp4": {}}, "description": "The media file"},
        **refusals(*COMMON, 403, 404),
    },
    summary="A camera frame or clip of the leased window's upload",
)
async def media(
    task_id: TASK_ID,
    name: Annotated[str, Path(min_length=1, max_length=128)],
    who: Who,
    service: Service,
    endpoints: Endpoints,
) -> Response:
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


@router.get(
    "/v1/tasks/{task_id}/frames/{index}",
    name="frame",
    response_class=Response,
    responses={
        200: {"content": {"image/jpeg": {}}, "description": "The evidence frame, as JPEG"},
        304: {"description": "The frame the client holds (If-None-Match) is still the one"},
        **refusals(*COMMON, 403, 404, 409, 413, 422),
    },
    summary="One evidence frame of a camera review (its index in the task's frames: 0 to 15)",
)
async def frame(
    task_id: TASK_ID,
    index: Annotated[int, Path(ge=0, lt=MAX_EVIDENCE_FRAMES)],
    request: Request,
    who: Who,
    service: Service,
    endpoints: Endpoints,
) -> Response:
    if not await run_in_threadpool(service.can_see, who, task_id):
        raise Refused(403, "not-your-task", "only the annotator holding the lease (or a lead) sees a task")
    record = await run_in_threadpool(service.store.task, task_id)
    if record is None:
        raise Refused(404, "unknown-task", f"no task {task_id}")
    if endpoints.frames is None:
        raise Refused(404, "no-frames", "this service shows no camera frames")
    try:
        strip = await endpoints.frames.strip(record.request)
    except FramesUnavailable as unavailable:
        raise Refused(unavailable.status, unavailable.reason, unavailable.detail) from unavailable
    if index >= len(strip.jpegs):
        raise Refused(404, "unknown-frame", f"task {task_id} has {len(strip.jpegs)} evidence frames")
    tag = f'"{strip.sha256[:32]}-{strip.offsets_ms[index]}"'
    headers = {"Cache-Control": FRAME_CACHE_CONTROL, "ETag": tag, "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == tag:
        return Response(status_code=304, headers=headers)
    return Response(strip.jpegs[index], media_type="image/jpeg", headers=headers)
