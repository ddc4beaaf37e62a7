"""The HTTP JSON API of `genba serve` (FastAPI), a thin layer over `genba.serve.service.Service`.

    POST /memories                          admin: create a memory -> {id, token}
    GET  /memories                          admin: list memories
    POST /memories/import                   admin: import an exported memory (multipart 'archive')
    GET  /memories/{id}                     inspect: spec, fill per class, recent writes, snapshots
    POST /memories/{id}/support             multipart 'files' + one 'labels' per file [+ 'source_ids']
    POST /memories/{id}/predict             multipart 'files' [+ 'update'=true, 'source_ids']
    GET  /memories/{id}/writes              the write log, newest first
    POST /memories/{id}/snapshot            {label} -> {snapshot_id};  GET /memories/{id}/snapshots
    POST /memories/{id}/rollback            {snapshot_id}
    POST /memories/{id}/delete-source       {source_id, vacuum}: entry, snapshot copies, free pages
    GET  /memories/{id}/export              zip of JSON + safetensors
    GET  /status.json (admin), /health, /openapi.json
    the prediction log, corrections, review queue, Label Studio, the console (/console) and the
    offline API docs (/docs): genba.serve.routes
Memory routes take that memory's token or the admin token (Authorization: Bearer). Errors are
JSON {"detail": "..."}: 400 bad input, 401/403 auth, 404, 409 conflict (concurrent writers, or a
memory that cannot be rebuilt), 413 too large, 415 wrong content type, 422 invalid fields, 503 store
busy (with Retry-After). The token is checked before any body is read (`AuthFirst`); JSON routes
take at most `Limits.max_json_bytes`. Blocking work runs in the thread pool.
"""

from __future__ import annotations

import sqlite3
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from genba import __version__
from genba.errors import GenbaError
from genba.serve.auth import bearer
from genba.serve.service import Service
from genba.serve import routes
from genba.store import predlog
from genba.serve.uploads import ApiError, AuthFirst, BodyLimit, BodyTooLarge, Limits, StoreBusy
from genba.store import StaleMemory, UnusableMemory
from genba.store.spec import MAX_LOG, MAX_PER_CLASS


ClassName = Annotated[str, Field(min_length=1, max_length=200)]
Template = Annotated[str, Field(min_length=2, max_length=500)]


class CreateMemory(BaseModel):
    model_config = ConfigDict(extra="forbid")
    classnames: list[ClassName] = Field(min_length=1, max_length=10_000)
    templates: list[Template] = Field(default=["a photo of a {}."], min_length=1, max_length=100)
    encoder: str = "conse"
    method: str = "dmn-tf"
    hyperparameters: dict[str, float | int | bool | str] = {}
    feature_format: Literal["float16", "int8"] = "float16"
    max_age_days: float | None = Field(default=None, gt=0, le=36_500, allow_inf_nan=False)
    max_per_class: int | None = Field(default=None, ge=1, le=MAX_PER_CLASS)
    name: str = Field(default="", max_length=200)
    log_size: int = Field(default=10_000, ge=0, le=MAX_LOG)
    log_images: bool = False


class SnapshotBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="", max_length=200)


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    snapshot_id: int = Field(ge=1, le=2**63 - 1)


class DeleteSourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_id: str = Field(min_length=1, max_length=256)
    vacuum: bool = False


def _multipart(fields: dict[str, str]) -> dict:
    """OpenAPI requestBody of a multipart route (parsed by hand to apply the limits)."""
    props = {name: ({"type": "array", "items": {"type": "string", "format": "binary"}} if kind == "files"
                    else {"type": "array", "items": {"type": "string"}} if kind == "strings" else {"type": kind})
             for name, kind in fields.items()}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": props}}}}}


def create_app(store_path, admin_token: str, *, limits: Limits | None = None,
               encoders: tuple[str, ...] = ("conse", "tiny")) -> FastAPI:
    """The ASGI app serving the memories of the store at `store_path`."""
    service = Service(store_path, admin_token, limits=limits, encoders=encoders)
    limits = service.limits
    app = FastAPI(title="genba", version=__version__, description="Durable adaptation memories: support, predict, "
                  "test-time updates, snapshots, deletion by source id, a prediction log, corrections and an operator "
                  "console (/console).", docs_url=None, redoc_url=None)
    app.state.service = service
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, max_json_bytes=limits.max_json_bytes)
    app.add_middleware(AuthFirst, authorize=service.authorize)  # outermost: no body is read before the token is checked

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    def busy(message: str, retry_after: int) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=503, headers={"Retry-After": str(int(retry_after))})

    app.add_exception_handler(ApiError, lambda r, e: error(e.status, e.message))
    app.add_exception_handler(StaleMemory, lambda r, e: error(409, str(e)))
    app.add_exception_handler(UnusableMemory, lambda r, e: error(409, str(e)))
    app.add_exception_handler(StoreBusy, lambda r, e: busy(str(e), e.retry_after))
    app.add_exception_handler(GenbaError, lambda r, e: error(400, str(e)))
    app.add_exception_handler(BodyTooLarge, lambda r, e: error(413, f"request body is over {limits.max_body_bytes} bytes"))
    app.add_exception_handler(sqlite3.OperationalError, lambda r, e: busy(f"memory store busy ({e}); retry", 1))

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        errs = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errs):
            return error(400, "request body is not valid JSON")
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in errs[:5])
        return error(422, f"invalid request: {where}")

    def token(request: Request) -> str | None:
        return bearer(request.headers.get("authorization"))

    def admin(request: Request) -> None:
        service.authorize(token(request))

    def member(memory_id: str, request: Request) -> str:
        service.authorize(token(request), memory_id)
        return memory_id

    def json_only(request: Request) -> None:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, f"send the body as application/json, not {ctype or 'nothing'}")

    async def form(request: Request, *, files: int):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            raise ApiError(415, f"send images as multipart/form-data, not {ctype or 'nothing'}")
        try:
            return await request.form(max_files=files, max_fields=4 * limits.max_files + 8, max_part_size=64 << 10)
        except HTTPException as exc:
            raise ApiError(400 if exc.status_code >= 500 else exc.status_code, f"bad multipart body: {exc.detail}") from None

    async def uploads(parts) -> list[tuple[bytes, str, str | None]]:
        out = []
        for part in parts:
            if isinstance(part, str):
                raise ApiError(400, "'files' must be file uploads (curl -F files=@image.jpg)")
            data = await part.read(limits.max_image_bytes + 1)
            out.append((data, part.filename or "upload", part.content_type))
        return out

    actor, guarded = routes.register(app, service, member, json_only)

    @app.get("/health", summary="liveness")
    def health() -> dict:
        return {"ok": True, "version": __version__}

    @app.post("/memories", status_code=201, summary="create a memory (admin)", dependencies=[Depends(admin), Depends(json_only)])
    def create(body: CreateMemory, request: Request) -> dict:
        return guarded(request, None, "create", {"method": body.method, "encoder": body.encoder, "name": body.name},
                       lambda: service.create(body.model_dump()))

    @app.get("/memories", summary="list memories (admin)", dependencies=[Depends(admin)])
    def list_memories() -> dict:
        return service.status()

    @app.post("/memories/import", status_code=201, summary="import an exported memory (admin)",
              dependencies=[Depends(admin)], openapi_extra=_multipart({"archive": "files"}))
    async def import_memory(request: Request) -> dict:
        parts = (await form(request, files=1)).getlist("archive")
        if len(parts) != 1 or isinstance(parts[0], str):
            raise ApiError(400, "send the export as one file in the 'archive' field")
        data = await parts[0].read(limits.max_body_bytes + 1)
        out = await run_in_threadpool(service.import_archive, data)
        routes.console.audit(service, out["id"], actor(request), "import", {"bytes": len(data)})
        return out

    @app.get("/memories/{memory_id}", summary="inspect: fill per class, recent writes, snapshots")
    def inspect(memory_id: str = Depends(member)) -> dict:
        return service.inspect(memory_id)

    @app.post("/memories/{memory_id}/support", summary="add labelled support images",
              openapi_extra=_multipart({"files": "files", "labels": "strings", "source_ids": "strings"}))
    async def support(request: Request, memory_id: str = Depends(member)) -> dict:
        data = await form(request, files=limits.max_files)
        files = await uploads(data.getlist("files"))
        labels, sources = [str(v) for v in data.getlist("labels")], [str(v) for v in data.getlist("source_ids")]
        return await run_in_threadpool(guarded, request, memory_id, "support", {"images": len(files)},
                                       lambda: service.add_support(memory_id, files, labels, sources))

    @app.post("/memories/{memory_id}/predict", summary="predict on images (optionally a test-time update)",
              openapi_extra=_multipart({"files": "files", "update": "boolean", "source_ids": "strings"}))
    async def predict(request: Request, memory_id: str = Depends(member)) -> dict:
        data = await form(request, files=limits.max_files)
        files = await uploads(data.getlist("files"))
        flag = str(data.get("update", "false")).strip().lower()
        if flag not in ("true", "1", "yes", "false", "0", "no"):
            raise ApiError(400, f"'update' must be true or false, got {flag[:20]!r}")
        sources = [str(v) for v in data.getlist("source_ids")]
        return await run_in_threadpool(service.predict, memory_id, files, update=flag in ("true", "1", "yes"), source_ids=sources)

    @app.get("/memories/{memory_id}/writes", summary="the write log, newest first (filters: outcome, bank, class, source_id)")
    def writes(limit: int = 100, outcome: str | None = None, bank: str | None = None, cls: int | None = Query(None, alias="class"),
               source_id: str | None = None, memory_id: str = Depends(member)) -> dict:
        return {"writes": predlog.writes(service.store._conn(), memory_id, limit=max(1, min(limit, 10_000)), outcome=outcome,
                                         bank=bank, cls=cls, source_id=source_id)}

    @app.post("/memories/{memory_id}/snapshot", status_code=201, summary="snapshot entries and state",
              dependencies=[Depends(json_only)])
    def snapshot(body: SnapshotBody, request: Request, memory_id: str = Depends(member)) -> dict:
        return guarded(request, memory_id, "snapshot", {"label": body.label},
                       lambda: {"snapshot_id": service.live(memory_id).snapshot(body.label)})

    @app.get("/memories/{memory_id}/snapshots", summary="list snapshots")
    def snapshots(memory_id: str = Depends(member)) -> dict:
        return {"snapshots": service.store.snapshots(memory_id)}

    @app.post("/memories/{memory_id}/rollback", summary="roll back to a snapshot", dependencies=[Depends(json_only)])
    def rollback(body: RollbackBody, request: Request, memory_id: str = Depends(member)) -> dict:
        def run():
            receipt = service.live(memory_id).rollback(body.snapshot_id)
            return {"version": receipt.version, "removed_by_retention": receipt.removed, "fill": service.store.fill(memory_id)}

        return guarded(request, memory_id, "rollback", {"snapshot_id": body.snapshot_id}, run)

    @app.post("/memories/{memory_id}/delete-source", summary="delete every entry and copy from one source id",
              dependencies=[Depends(json_only)])
    def delete_source(body: DeleteSourceBody, request: Request, memory_id: str = Depends(member)) -> dict:
        return guarded(request, memory_id, "delete-source", {"source": predlog.source_tag(body.source_id), "vacuum": body.vacuum},
                       lambda: service.delete_source(memory_id, body.source_id, vacuum=body.vacuum))

    @app.get("/memories/{memory_id}/export", summary="export as a zip of JSON + safetensors",
             response_class=Response, responses={200: {"content": {"application/zip": {}}}})
    def export(memory_id: str = Depends(member)) -> Response:
        return Response(service.export(memory_id), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="genba-memory-{memory_id}.zip"'})

    @app.get("/status.json", summary="what the status page shows (admin)", dependencies=[Depends(admin)])
    def status_json() -> dict:
        return service.status()

    return app
