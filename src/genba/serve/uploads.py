"""Request limits of the service: body size, files per request, bytes and pixels per image.

Images are checked in this order, each failure a 4xx with one line saying what to change:
declared content type (415), file size (413), then PIL opens the header only, restricted to
PNG / JPEG / WebP / BMP / GIF decoders, and the width x height is checked against `max_pixels`
and `max_side` before a single pixel is decoded (413: decompression bombs never inflate). Any
decoder failure after that is a 400. `BodyLimit` refuses a request body past `max_body_bytes`
from its Content-Length, and counts the bytes of bodies sent without one.
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


class ApiError(Exception):
    """A client error with its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def source_id(data: bytes) -> str:
    """The source id of an uploaded image: sha256 of its bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, name: str, content_type: str | None, limits: Limits) -> Image.Image:
    """Validated RGB image from uploaded bytes, or ApiError (415 / 413 / 400)."""
    if (content_type or "").split(";")[0].strip().lower() not in CONTENT_TYPES:
        raise ApiError(415, f"{name}: content type {content_type!r} is not an image type; send PNG, JPEG, WebP, BMP or GIF")
    if len(data) > limits.max_image_bytes:
        raise ApiError(413, f"{name}: {len(data)} bytes is over the {limits.max_image_bytes} byte limit per image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
            width, height = image.size
            if width * height > limits.max_pixels or max(width, height) > limits.max_side:
                raise ApiError(413, f"{name}: {width}x{height} pixels is over the limit "
                                    f"({limits.max_pixels} pixels, {limits.max_side} per side)")
            image.load()
            return image.convert("RGB")
    except ApiError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, f"{name}: image is a decompression bomb (over {limits.max_pixels} pixels)") from None
    except Exception as error:  # any decoder failure on untrusted bytes is the client's file, not a 500
        raise ApiError(400, f"{name}: not a decodable PNG/JPEG/WebP/BMP/GIF image ({type(error).__name__})") from None


class BodyTooLarge(Exception):
    """Raised inside `receive` when a body without Content-Length grows past the limit."""


class BodyLimit:
    """ASGI middleware: 413 for request bodies over `max_bytes` (declared or streamed)."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _reply(send, 400, "Content-Length is not a number")
            if int(declared) > self.max_bytes:
                return await _reply(send, 413, f"request body of {int(declared)} bytes is over the {self.max_bytes} byte limit")
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await _reply(send, 413, f"request body is over the {self.max_bytes} byte limit")


async def _reply(send, status: int, message: str) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
