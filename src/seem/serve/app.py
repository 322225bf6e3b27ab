"""The FastAPI application: ``create_app(model, granularity_model, config=ServeConfig(...))``.

Routes (all JSON unless stated; errors are ``{"error": CODE, "detail": MESSAGE}``; the OpenAPI schema is at
``/openapi.json`` and interactive docs at ``/docs``):

    GET    /                                  the web page (static/index.html)
    GET    /healthz                           liveness (no API key needed)
    GET    /v1/info                           models, limits, cache use
    POST   /v1/sessions                       upload an image (multipart field 'image', or the raw bytes) → session
    GET    /v1/sessions/{sid}                 session info
    DELETE /v1/sessions/{sid}                 forget the session
    POST   /v1/sessions/{sid}/segment         prompts → one object's mask (SEEM; rounds with memory)
    POST   /v1/sessions/{sid}/granularity     clicks / box → one mask per level (Semantic-SAM)
    POST   /v1/sessions/{sid}/panoptic        panoptic segmentation with a class list
    POST   /v1/sessions/{sid}/everything      segment everything
    GET    /v1/sessions/{sid}/objects         every object and its mask(s)
    GET    /v1/sessions/{sid}/objects/{oid}   one object
    POST   /v1/sessions/{sid}/objects/{oid}/undo
    DELETE /v1/sessions/{sid}/objects/{oid}
    POST   /v1/sessions/{sid}/reset           delete every object
    GET    /v1/sessions/{sid}/export          ?format=coco|png|overlay (every object)
    POST   /v1/sessions/{sid}/export          chosen objects (and granularity levels)
    POST   /v1/videos                         multipart 'frames' (images) or 'video', plus 'prompts' (JSON) → job
    GET    /v1/videos/{jid}                   status and progress
    GET    /v1/videos/{jid}/result            ?format=json|zip
    POST   /v1/videos/{jid}/cancel
    DELETE /v1/videos/{jid}

Model calls run in a bounded thread pool (``seem.serve.gate``); sessions live in an LRU cache with a memory budget
(``seem.serve.sessions``); limits are in ``seem.serve.config.ServeConfig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.datastructures import UploadFile

import seem
from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM
from seem.serve.config import ServeConfig
from seem.serve.errors import ApiError, install_error_handlers
from seem.serve.gate import HEAVY, INTERACTIVE, Deadline, InferenceGate
from seem.serve.jobs import Tracker
from seem.serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware
from seem.serve.schemas import (
    EverythingRequest,
    EverythingResponse,
    ExportRequest,
    GranularityRequest,
    InfoResponse,
    ObjectOut,
    ObjectsResponse,
    PanopticRequest,
    PanopticResponse,
    PromptsIn,
    SegmentRequest,
    SessionOut,
    VideoJobOut,
)
from seem.serve.service import SegmentationService

__all__ = ["STATIC_DIR", "create_app"]

log = logging.getLogger("seem.serve")

STATIC_DIR = Path(str(resources.files("seem.serve").joinpath("static")))

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"error": name, "detail": "..."}}}}
    for code, name, text in (
        (401, "unauthorized", "missing or wrong API key"),
        (404, "session_not_found", "unknown, expired, evicted or deleted session / object / job"),
        (413, "too_large", "body, image pixels or cache need over the limit"),
        (422, "invalid_request", "bad JSON or invalid prompts (the message names the problem)"),
        (503, "busy", "too many model requests at once; retry after Retry-After seconds"),
        (504, "timeout", "the request did not finish within the time limit"),
    )
}

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"image": {"type": "string", "format": "binary"}},
                    "required": ["image"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_VIDEO_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "frames": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "video": {"type": "string", "format": "binary", "description": "MP4, WebM or AVI"},
                        "prompts": {"type": "string", "description": "JSON PromptsIn of the object on frame 0"},
                    },
                    "required": ["prompts"],
                }
            }
        },
    }
}


def _formats(text: str) -> list[str]:
    out = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in out if f not in ("rle", "png")]
    if bad or not out:
        raise ApiError(422, f"mask_formats must be 'rle', 'png' or 'rle,png', got {text!r}", "invalid_request")
    return out


def create_app(
    model: SEEMModel | SemanticSAM | None = None,
    granularity_model: SemanticSAM | None = None,
    *,
    config: ServeConfig | None = None,
    tracker: Tracker | None = None,
) -> FastAPI:
    """Build the app around already-loaded models.

    Args:
        model: a ``SEEMModel`` (or a ``SemanticSAM`` when only Semantic-SAM is served).
        granularity_model: a ``SemanticSAM`` for the granularity levels (with a SEEM ``model``).
        config: limits and switches (``ServeConfig``; defaults otherwise).
        tracker: video tracker (``seem.serve.jobs.Tracker``); default: ``seem.serve.jobs.default_tracker``.

    The service is ``app.state.service`` (``SegmentationService``), the model-call gate ``app.state.gate``.
    """
    cfg = config or ServeConfig()
    seem_model: SEEMModel | None = None
    ssam: SemanticSAM | None = granularity_model
    if isinstance(model, SemanticSAM):
        if ssam is not None:
            raise TypeError("two Semantic-SAM models given; pass a SEEMModel as model")
        ssam = model
    elif model is not None:
        seem_model = model
    service = SegmentationService(seem_model, ssam, cfg, tracker=tracker)
    gate = InferenceGate(cfg.workers, cfg.max_pending, cfg.request_timeout_s)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async def janitor() -> None:
            period = max(0.5, min(30.0, cfg.session_ttl_s / 4))
            while True:
                await asyncio.sleep(period)
                try:
                    service.store.sweep()
                    if service.jobs is not None:
                        service.jobs.sweep()
                except Exception:  # pragma: no cover - keep sweeping
                    log.exception("session sweep failed")

        task = asyncio.create_task(janitor())
        try:
            yield
        finally:
            task.cancel()
            gate.shutdown()
            service.shutdown()

    app = FastAPI(
        title="seem serve",
        version=seem.__version__,
        description="Promptable segmentation (SEEM, Semantic-SAM) over HTTP. Upload an image once (its features are "
        "cached), then send prompts and get masks back (COCO RLE / PNG). See docs/serve.md.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.state.service = service
    app.state.gate = gate
    app.state.config = cfg
    install_error_handlers(app)

    # middleware: the last added runs first (CORS → API key → body limit → routes)
    def limit_for(scope: dict[str, Any]) -> int:
        path = scope.get("path", "")
        if scope.get("method") == "POST" and path.rstrip("/") == "/v1/videos":
            return cfg.max_video_bytes
        return cfg.max_upload_bytes

    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
    if cfg.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=cfg.api_key, protected=lambda p: p.startswith("/v1/"))
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )

    # ---------------------------------------------------------------------------------------------- page

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/healthz", tags=["server"])
    async def healthz() -> dict[str, Any]:
        """Liveness; says whether ``/v1`` needs an API key."""
        return {"status": "ok", "auth_required": cfg.api_key is not None}

    v1 = APIRouter(prefix="/v1")

    async def run(fn: Any, *args: Any, priority: int = INTERACTIVE) -> Any:
        dl = Deadline(gate.timeout_s)
        return await gate.run(fn, *args, dl, deadline=dl, priority=priority)

    @v1.get("/info", response_model=InfoResponse, tags=["server"])
    async def info() -> dict[str, Any]:
        """Loaded model families, the server's limits and its current load."""
        return {
            "version": seem.__version__,
            "families": service.families(),
            "video_tracker": service.tracker_name or "none",
            "limits": cfg.public(),
            "sessions": len(service.store),
            "cache_bytes_used": service.store.total_bytes,
            "pending_requests": gate.pending,
        }

    # ---------------------------------------------------------------------------------------------- sessions

    @v1.post(
        "/sessions",
        status_code=201,
        response_model=SessionOut,
        tags=["sessions"],
        openapi_extra=_UPLOAD_BODY,
    )
    async def create_session(request: Request) -> Any:
        """Upload an image (multipart field ``image``, or the raw bytes as the body): it is checked by content,
        decoded within the pixel limit and encoded once; the returned ``session_id`` names it from then on."""
        ctype = request.headers.get("content-type", "")
        name: str | None = None
        if ctype.startswith("multipart/form-data"):
            async with request.form(max_files=1, max_fields=4) as form:
                part = form.get("image")
                if not isinstance(part, UploadFile):
                    raise ApiError(422, "multipart upload without a file field 'image'", "invalid_request")
                data = await part.read()
                name = part.filename
        else:
            data = await request.body()
        return await run(service.create_session, data, name, priority=HEAVY)

    @v1.get("/sessions/{sid}", response_model=SessionOut, tags=["sessions"])
    async def get_session(sid: str) -> Any:
        return await run(service.session_info, sid)

    @v1.delete("/sessions/{sid}", status_code=204, tags=["sessions"])
    async def delete_session(sid: str) -> Response:
        """Forget the session: its image, features and objects."""
        service.delete_session(sid)
        return Response(status_code=204)

    # ---------------------------------------------------------------------------------------------- prompts

    @v1.post("/sessions/{sid}/segment", response_model=ObjectOut, response_model_exclude_none=True, tags=["prompts"])
    async def segment(sid: str, body: SegmentRequest) -> Any:
        """Add prompts to an object (``object_id`` null: a new object) and run one round; only the decoder runs."""
        return await run(service.segment, sid, body)

    @v1.post(
        "/sessions/{sid}/granularity", response_model=ObjectOut, response_model_exclude_none=True, tags=["prompts"]
    )
    async def granularity(sid: str, body: GranularityRequest) -> Any:
        """Semantic-SAM: one mask per granularity level (1 = whole ... 6 = finest part) for the clicks / box."""
        return await run(service.granularity, sid, body)

    @v1.post(
        "/sessions/{sid}/panoptic", response_model=PanopticResponse, response_model_exclude_none=True, tags=["image"]
    )
    async def panoptic(sid: str, body: PanopticRequest | None = None) -> Any:
        """Panoptic segmentation with a class list (default COCO-panoptic); segments become objects."""
        return await run(service.panoptic, sid, body or PanopticRequest.model_validate({}), priority=HEAVY)

    @v1.post(
        "/sessions/{sid}/everything",
        response_model=EverythingResponse,
        response_model_exclude_none=True,
        tags=["image"],
    )
    async def everything(sid: str, body: EverythingRequest | None = None) -> Any:
        """Segment everything (a grid of clicks, SAM's filtering); masks become objects."""
        return await run(service.everything, sid, body or EverythingRequest.model_validate({}), priority=HEAVY)

    # ---------------------------------------------------------------------------------------------- objects

    @v1.get(
        "/sessions/{sid}/objects", response_model=ObjectsResponse, response_model_exclude_none=True, tags=["objects"]
    )
    async def list_objects(sid: str, mask_formats: str = Query("rle", description="rle, png or rle,png")) -> Any:
        return await run(service.list_objects, sid, _formats(mask_formats))

    @v1.get(
        "/sessions/{sid}/objects/{oid}", response_model=ObjectOut, response_model_exclude_none=True, tags=["objects"]
    )
    async def get_object(sid: str, oid: str, mask_formats: str = Query("rle")) -> Any:
        return await run(service.get_object, sid, oid, _formats(mask_formats))

    @v1.post(
        "/sessions/{sid}/objects/{oid}/undo",
        response_model=ObjectOut,
        response_model_exclude_none=True,
        tags=["objects"],
    )
    async def undo(sid: str, oid: str, mask_formats: str = Query("rle")) -> Any:
        """Drop the object's last round (409 when there is none)."""
        return await run(service.undo, sid, oid, _formats(mask_formats))

    @v1.delete("/sessions/{sid}/objects/{oid}", status_code=204, tags=["objects"])
    async def delete_object(sid: str, oid: str) -> Response:
        await run(service.delete_object, sid, oid)
        return Response(status_code=204)

    @v1.post(
        "/sessions/{sid}/reset", response_model=ObjectsResponse, response_model_exclude_none=True, tags=["objects"]
    )
    async def reset(sid: str) -> Any:
        """Delete every object of the session (the image stays encoded)."""
        return await run(service.reset, sid)

    async def _export(sid: str, req: ExportRequest) -> Response:
        content, media, filename = await run(service.export, sid, req, priority=HEAVY)
        return Response(
            content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    @v1.get(
        "/sessions/{sid}/export",
        tags=["objects"],
        response_class=Response,
        responses={200: {"content": {"application/json": {}, "image/png": {}}}},
    )
    async def export_all(sid: str, format: Literal["coco", "png", "overlay"] = "coco") -> Response:
        """Every object as COCO JSON, an index PNG (pixel = 1-based object position) or an overlay PNG."""
        return await _export(sid, ExportRequest.model_validate({"format": format}))

    @v1.post(
        "/sessions/{sid}/export",
        tags=["objects"],
        response_class=Response,
        responses={200: {"content": {"application/json": {}, "image/png": {}}}},
    )
    async def export_some(sid: str, body: ExportRequest) -> Response:
        """The listed objects (granularity objects at the given level), in order."""
        return await _export(sid, body)

    # ---------------------------------------------------------------------------------------------- video

    @v1.post("/videos", status_code=202, response_model=VideoJobOut, tags=["video"], openapi_extra=_VIDEO_BODY)
    async def submit_video(request: Request) -> Any:
        """Start a video job: the object given by ``prompts`` on frame 0 is tracked through every frame in the
        background; poll ``GET /v1/videos/{job_id}`` and download ``/result`` when ``status`` is ``done``."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(415, "upload the video job as multipart/form-data", "unsupported_media_type")
        async with request.form(max_files=cfg.max_video_frames + 2, max_fields=8, max_part_size=1 << 20) as form:
            raw = form.get("prompts")
            if not isinstance(raw, str):
                raise ApiError(422, "missing form field 'prompts' (JSON)", "invalid_request")
            try:
                prompts = PromptsIn.model_validate(json.loads(raw))
            except json.JSONDecodeError as e:
                raise ApiError(422, f"prompts: not valid JSON: {e}", "invalid_request") from None
            except ValidationError as e:
                msg = "; ".join(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}" for err in e.errors()[:5])
                raise ApiError(422, f"prompts: {msg}", "invalid_prompt") from None
            frames = [await f.read() for f in form.getlist("frames") if isinstance(f, UploadFile)]
            vid = form.get("video")
            video = await vid.read() if isinstance(vid, UploadFile) else None
        if len(frames) > cfg.max_video_frames:
            raise ApiError(413, f"{len(frames)} frames, more than the limit of {cfg.max_video_frames}", "too_large")
        return await run(service.submit_video, frames, video, prompts, priority=HEAVY)

    def _jobs() -> Any:
        if service.jobs is None:
            raise ApiError(400, "video tracking is not available on this server", "feature_unavailable")
        return service.jobs

    @v1.get("/videos/{jid}", response_model=VideoJobOut, tags=["video"])
    async def video_status(jid: str) -> Any:
        return _jobs().get(jid).public()

    @v1.get(
        "/videos/{jid}/result",
        tags=["video"],
        response_class=Response,
        responses={200: {"content": {"application/json": {}, "application/zip": {}}}},
    )
    async def video_result(jid: str, format: Literal["json", "zip"] = "json") -> Response:
        """Per-frame masks: JSON (COCO RLE per frame) or a ZIP of PNG masks (``masks/00000.png`` ...)."""
        job = _jobs().get(jid)
        if job.status != "done":
            raise ApiError(409, f"video job {jid} is {job.status}, not done", "not_ready")
        if format == "zip":
            data = await asyncio.to_thread(job.result_zip)
            return Response(
                data,
                media_type="application/zip",
                headers={"Content-Disposition": f'attachment; filename="{jid}_masks.zip"'},
            )
        return JSONResponse(await asyncio.to_thread(job.result_json))

    @v1.post("/videos/{jid}/cancel", response_model=VideoJobOut, tags=["video"])
    async def video_cancel(jid: str) -> Any:
        """Ask the job to stop (it stops after the frame in progress)."""
        return _jobs().cancel(jid).public()

    @v1.delete("/videos/{jid}", status_code=204, tags=["video"])
    async def video_delete(jid: str) -> Response:
        """Cancel the job if it runs and delete it with its results."""
        _jobs().delete(jid)
        return Response(status_code=204)

    app.include_router(v1)
    return app
