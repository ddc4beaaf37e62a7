"""Request limits of the service: body size, files per request, bytes and pixels per image.

Images are checked in this order, each failure a 4xx with one line saying what to change:
declared content type (415), file size (413), then PIL opens the header only, restricted to
PNG / JPEG / WebP / BMP / GIF decoders, and the width x height is checked against `max_pixels`
and `max_side` before a single pixel is decoded (413: decompression bombs never inflate). Any
decoder failure after that is a 400. The headers of all images of a request are checked, and
their pixels summed against `max_request_pixels`, before the first is decoded; the service then
decodes and encodes one batch at a time, so a request never holds more than one batch of
decoded pixels. `BodyLimit` refuses a request body past its limit (`max_json_bytes` for JSON
routes, `max_body_bytes` otherwise) from its Content-Length, and counts the bytes of bodies
sent without one.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass

from PIL import Image

FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF")
CONTENT_TYPES = {"image/png", "image/jpeg", "image/jpg", "image/webp", "image/bmp", "image/x-ms-bmp", "image/gif"}


@dataclass(frozen=True)
class Limits:
    """Per-request limits of the service."""

    max_body_bytes: int = 64 << 20
    """Whole request body."""
    max_files: int = 64
    """Images per request."""
    max_image_bytes: int = 16 << 20
    """One uploaded image file."""
    max_pixels: int = 40_000_000
    """width * height of one image (PIL's own bomb limit is set to this too)."""
    max_side: int = 12_000
    """Longest side of one image."""
    max_import_bytes: int = 512 << 20
    """Inflated size of an imported memory archive."""
    max_json_bytes: int = 1 << 20
    """Body of a JSON route (create, snapshot, rollback, delete-source)."""
    max_request_pixels: int = 64_000_000
    """Sum of width * height over the images of one request (checked from headers before decoding)."""
    max_memory_bytes: int = 2 << 30
    """Estimated RAM of one memory's test-time banks (classes x slots x dim), checked at creation."""
    max_prompts: int = 20_000
    """classnames x templates of one memory: the text prompts encoded at creation."""
    store_wait_s: float = 5.0
    """How long delete-source waits for outside readers before answering 503 with Retry-After."""


class ApiError(Exception):
    """A client error with its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def source_id(data: bytes) -> str:
    """The source id of an uploaded image: sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _open(data: bytes, name: str, content_type: str | None, limits: Limits) -> Image.Image:
    """The image with only its header read, after the content type, size and dimension checks."""
    if (content_type or "").split(";")[0].strip().lower() not in CONTENT_TYPES:
        raise ApiError(415, f"{name}: content type {content_type!r} is not an image type; send PNG, JPEG, WebP, BMP or GIF")
    if len(data) > limits.max_image_bytes:
        raise ApiError(413, f"{name}: {len(data)} bytes is over the {limits.max_image_bytes} byte limit per image")
    image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise ApiError(413, f"{name}: {width}x{height} pixels is over the limit "
                            f"({limits.max_pixels} pixels, {limits.max_side} per side)")
    return image


def _guarded(fn, name: str, limits: Limits):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return fn()
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, f"{name}: image is a decompression bomb (over {limits.max_pixels} pixels)") from None
    except Exception as error:  # any decoder failure on untrusted bytes is the client's file, not a 500
        raise ApiError(400, f"{name}: not a decodable PNG/JPEG/WebP/BMP/GIF image ({type(error).__name__})") from None


def image_pixels(data: bytes, name: str, content_type: str | None, limits: Limits) -> int:
    """width * height of an upload from its header alone (ApiError 415 / 413 / 400 as `decode_image`)."""
    return _guarded(lambda: (lambda im: im.size[0] * im.size[1])(_open(data, name, content_type, limits)), name, limits)


def check_request_pixels(uploads, limits: Limits) -> None:
    """Every upload's header checked, and their pixels summed against the per-request budget (413)."""
    total = sum(image_pixels(data, name, ctype, limits) for data, name, ctype in uploads)
    if total > limits.max_request_pixels:
        raise ApiError(413, f"the images of this request hold {total} pixels, over the budget of "
                            f"{limits.max_request_pixels} per request; send fewer or smaller images per request")


def decode_image(data: bytes, name: str, content_type: str | None, limits: Limits) -> Image.Image:
    """Validated RGB image from uploaded bytes, or ApiError (415 / 413 / 400)."""
    def decode():
        image = _open(data, name, content_type, limits)
        image.load()
        return image.convert("RGB")
    return _guarded(decode, name, limits)


class StoreBusy(Exception):
    """The store could not finish in bounded time; answered 503 with Retry-After."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


PUBLIC = {"/health", "/status", "/console", "/console.js", "/console.css", "/openapi.json", "/docs", "/docs/init.js",
          "/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"}
UPLOAD_ROUTES = ("/support", "/predict")


def required_access(path: str) -> tuple[bool, str | None] | None:
    """(needs a token, memory id or None for admin) of a path, or None for public / unknown paths."""
    if path in PUBLIC:
        return None
    if path in ("/memories", "/memories/", "/memories/import", "/status.json"):
        return True, None
    parts = path.strip("/").split("/")
    if len(parts) >= 2 and parts[0] == "memories":
        return True, parts[1]
    return None


class AuthFirst:
    """ASGI middleware: a request without a valid token is answered 401/403/404 before its body is read.

    `authorize(token, memory_id)` is the service's check (raises ApiError); routes check again.
    """

    def __init__(self, app, authorize) -> None:
        self.app, self.authorize = app, authorize

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            access = required_access(scope.get("path", ""))
            if access is not None:
                from starlette.concurrency import run_in_threadpool

                from genba.serve.auth import bearer

                header = dict(scope.get("headers", [])).get(b"authorization", b"").decode("latin-1")
                try:
                    await run_in_threadpool(self.authorize, bearer(header), access[1])
                except ApiError as error:
                    return await _reply(send, error.status, error.message)
        return await self.app(scope, receive, send)


class BodyTooLarge(Exception):
    """Raised inside `receive` when a body without Content-Length grows past the limit."""


class BodyLimit:
    """ASGI middleware: 413 for request bodies over the limit (declared or streamed).

    Upload routes (support, predict, import) take `max_bytes`; every other route (JSON) `max_json_bytes`.
    """

    def __init__(self, app, max_bytes: int, max_json_bytes: int | None = None) -> None:
        self.app, self.upload_bytes = app, max_bytes
        self.json_bytes = max_bytes if max_json_bytes is None else min(max_json_bytes, max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        uploads = path.endswith(UPLOAD_ROUTES) or path == "/memories/import"
        limit = self.upload_bytes if uploads else self.json_bytes
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not (declared.isdigit() and len(declared) <= 18):
                return await _reply(send, 400, "Content-Length is not a number")
            if int(declared) > limit:
                return await _reply(send, 413, f"request body of {int(declared)} bytes is over the {limit} byte limit"
                                               f"{'' if uploads else ' of JSON routes'}")
        seen, started, over = 0, False, False
        message_413 = f"request body is over the {limit} byte limit{'' if uploads else ' of JSON routes'}"

        async def limited_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if over:  # the app turned BodyTooLarge into its own error (FastAPI: 400 for a JSON body): answer 413
                if not started and message["type"] == "http.response.start":
                    started = True
                    await _reply(send, 413, message_413)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _reply(send, 413, message_413)


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
