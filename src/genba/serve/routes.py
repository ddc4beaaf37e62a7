"""The console's HTTP routes, its action guards (audit, idempotency) and the offline API docs.

    GET  /memories/{id}/console.json        everything the console shows for one memory
    GET  /memories/{id}/predictions         the prediction log (?limit, ?order=recent|uncertain|least-confident)
    POST /memories/{id}/predictions/{pid}/label   {label}: confirm or correct -> labelled support
    GET  /memories/{id}/queue               unlabelled predictions, smallest margin first
    GET  /memories/{id}/queue/label-studio  the queue as Label Studio tasks (?config=true: labeling config XML)
    POST /memories/{id}/label-studio        Label Studio's JSON export -> labels
    POST /memories/{id}/delete-source/preview   {source_id}: what a deletion would remove
    GET  /memories/{id}/audit               who did what through the service
    GET  /console, /status                  the console page; /docs Swagger UI from installed assets

Every action (POST) takes the admin or the memory's token in the Authorization header (no
cookies: nothing a cross-site request can ride), is written to the audit log, and honours an
`Idempotency-Key` header: a repeated key (a double click) gets the first answer and does nothing
again (`Once`). The console sends one key per intended action.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from genba.serve import console, labelstudio
from genba.serve.auth import bearer, matches
from genba.serve.status import CSP, CONSOLE_CSS, CONSOLE_HTML, CONSOLE_JS, DOCS_CSP, DOCS_HTML, DOCS_JS
from genba.serve.uploads import ApiError
from genba.store import predlog


class LabelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | int


class SourceBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_id: str = Field(min_length=1, max_length=256)


class Once:
    """Answers by (actor, route, Idempotency-Key): the first call runs, repeats get its answer.

    A repeat that arrives while the first is still running waits for it. Failed calls are not
    kept (a retry runs again). The newest `size` keys are kept.
    """

    def __init__(self, size: int = 1024) -> None:
        self._lock, self._slots, self.size = threading.Lock(), OrderedDict(), size

    def run(self, key: tuple | None, fn):
        if key is None:
            return fn()
        with self._lock:
            slot = self._slots.get(key)
            if slot is None:
                slot = self._slots[key] = [threading.Lock(), None]
                while len(self._slots) > self.size:
                    self._slots.popitem(last=False)
        with slot[0]:
            if slot[1] is None:
                slot[1] = fn()
            return slot[1]


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 0 < len(key) <= 128:
        raise ApiError(400, "Idempotency-Key must be 1 to 128 characters")
    return key


def register(app: FastAPI, service, member, json_only) -> tuple:
    """Add the console routes; returns (actor(request), guarded(request, memory_id, action, detail, fn))."""
    once = Once()

    def actor(request: Request) -> str:
        return "admin" if matches(bearer(request.headers.get("authorization")), service.admin_hash) else "memory"

    def guarded(request: Request, memory_id: str | None, action: str, detail: dict, fn):
        """Run an action once per Idempotency-Key and audit it (the repeat is audited as such)."""
        key = idempotency_key(request)
        ran = []

        def owner(result):  # a created memory is audited under its new id
            return memory_id or (result.get("id") if isinstance(result, dict) else None)

        def first():
            ran.append(True)
            result = fn()
            console.audit(service, owner(result), actor(request), action, detail)
            return result

        result = once.run(None if key is None else (actor(request), memory_id, action, key), first)
        if not ran:
            console.audit(service, owner(result), actor(request), action + " (repeat, not run again)", detail)
        return result

    @app.get("/memories/{memory_id}/console.json", summary="what the console shows for one memory")
    def console_json(buckets: int = 48, memory_id: str = Depends(member)) -> dict:
        return console.console_data(service, memory_id, buckets=max(4, min(buckets, 200)))

    @app.get("/memories/{memory_id}/predictions", summary="the prediction log")
    def predictions(limit: int = 50, order: str = "recent", memory_id: str = Depends(member)) -> dict:
        if order not in ("recent", "uncertain", "least-confident"):
            raise ApiError(400, "order must be recent, uncertain or least-confident")
        spec = service.store.spec(memory_id)
        rows = predlog.rows(service.store._conn(), memory_id, limit=max(1, min(limit, 10_000)), order=order,
                            with_thumbnails=spec.log_images)
        return {"predictions": [console._named(r, spec.classnames) for r in rows]}

    @app.post("/memories/{memory_id}/predictions/{prediction_id}/label", summary="confirm or correct a logged prediction",
              dependencies=[Depends(json_only)])
    def label(prediction_id: int, body: LabelBody, request: Request, memory_id: str = Depends(member)) -> dict:
        return guarded(request, memory_id, "label", {"prediction_id": prediction_id, "label": body.label},
                       lambda: console.label(service, memory_id, prediction_id, body.label))

    @app.get("/memories/{memory_id}/queue", summary="review queue: unlabelled predictions, smallest margin first")
    def queue(limit: int = 50, memory_id: str = Depends(member)) -> dict:
        return {"order": "margin p1 - p2, ascending", "queue": console.queue(service, memory_id, max(1, min(limit, 10_000)))}

    @app.get("/memories/{memory_id}/queue/label-studio", summary="the review queue as Label Studio tasks")
    def queue_label_studio(limit: int = 100, config: bool = False, memory_id: str = Depends(member)):
        spec = service.store.spec(memory_id)
        if config:
            return Response(labelstudio.label_config(spec.classnames), media_type="application/xml")
        rows = console.queue(service, memory_id, max(1, min(limit, 10_000)))
        return JSONResponse(labelstudio.tasks(rows, memory_id, spec.method))

    @app.post("/memories/{memory_id}/label-studio", summary="import Label Studio annotations (its JSON export)",
              dependencies=[Depends(json_only)])
    async def import_label_studio(request: Request, memory_id: str = Depends(member)) -> dict:
        from starlette.concurrency import run_in_threadpool

        try:
            export = await request.json()
        except ValueError:
            raise ApiError(400, "request body is not valid JSON") from None
        found, skipped = labelstudio.annotations(export)

        def apply():
            done = [console.label(service, memory_id, pid, name) for pid, name in found]
            return {"labelled": sum(d["changed"] for d in done), "unchanged": sum(not d["changed"] for d in done),
                    "skipped": skipped}

        return await run_in_threadpool(guarded, request, memory_id, "label-studio import", {"tasks": len(found)}, apply)

    @app.post("/memories/{memory_id}/delete-source/preview", summary="what deleting a source would remove",
              dependencies=[Depends(json_only)])
    def preview(body: SourceBody, memory_id: str = Depends(member)) -> dict:
        return console.preview_delete(service, memory_id, body.source_id)

    @app.get("/memories/{memory_id}/audit", summary="the audit log of actions on this memory")
    def audit(limit: int = 100, memory_id: str = Depends(member)) -> dict:
        return {"audit": predlog.audit_rows(service.store._conn(), memory_id, max(1, min(limit, 10_000)))}

    for path in ("/console", "/status"):
        app.add_api_route(path, lambda: HTMLResponse(CONSOLE_HTML, headers={"Content-Security-Policy": CSP}),
                          response_class=HTMLResponse, include_in_schema=path == "/console",
                          summary="the operator console (open as /console#token=<admin or memory token>)")
    app.add_api_route("/console.js", lambda: Response(CONSOLE_JS, media_type="text/javascript"), include_in_schema=False)
    app.add_api_route("/console.css", lambda: Response(CONSOLE_CSS, media_type="text/css"), include_in_schema=False)
    add_docs(app)
    return actor, guarded


def swagger_assets() -> Path | None:
    """The folder of the Swagger UI 5 assets the fastapi-offline package installs, or None.

    Only its static files are used (the package's own page has an inline script)."""
    try:
        spec = importlib.util.find_spec("fastapi_offline")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "static"
    return path if (path / "swagger-ui-bundle.js").is_file() else None


DOC_FILES = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


def add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the installed fastapi-offline package (no CDN); without it, a page
    that says how to install it and links /openapi.json."""
    assets = swagger_assets()

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs() -> HTMLResponse:
        if assets is None:
            return HTMLResponse("<!doctype html><title>genba API</title><p>Swagger UI is not installed: "
                                "pip install 'genba[serve]'. The API description is at <a href=\"/openapi.json\">"
                                "/openapi.json</a>.</p>", headers={"Content-Security-Policy": CSP})
        return HTMLResponse(DOCS_HTML, headers={"Content-Security-Policy": DOCS_CSP})

    @app.get("/docs/init.js", include_in_schema=False)
    def docs_js() -> Response:
        return Response(DOCS_JS, media_type="text/javascript")

    @app.get("/docs/{name}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        if assets is None or name not in DOC_FILES:
            raise ApiError(404, "no such file")
        return Response((assets / name).read_bytes(), media_type=DOC_FILES[name],
                        headers={"Cache-Control": "public, max-age=86400"})
