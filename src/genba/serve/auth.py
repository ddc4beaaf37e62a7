"""Bearer tokens of the service: one admin token for the server, one API token per memory.

Tokens are 256-bit random strings; the store keeps only sha256(token), compared in constant
time. A request without a token gets 401; a token that is not this memory's (or the admin's)
gets 403, the same answer whether or not the memory exists, so tokens cannot probe for ids.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from genba.errors import GenbaError

MIN_ADMIN_TOKEN = 16


def new_token() -> str:
    """A fresh random token (43 URL-safe characters)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """Hex sha256 of a token: what the store keeps."""
    return hashlib.sha256(token.encode()).hexdigest()


def matches(token: str | None, stored_hash: str | None) -> bool:
    """True when `token` hashes to `stored_hash` (constant-time compare; None never matches)."""
    if not token or not stored_hash:
        return False
    return hmac.compare_digest(token_hash(token), stored_hash)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def check_admin_token(token) -> str:
    """The admin token, refused (GenbaError) when blank after stripping or shorter than 16 characters."""
    if not isinstance(token, str) or len(token.strip()) < MIN_ADMIN_TOKEN or token != token.strip():
        raise GenbaError(f"the admin token must be at least {MIN_ADMIN_TOKEN} characters with no surrounding blanks; "
                         "leave it out to have genba generate one into --admin-token-file")
    return token


def read_or_create_token_file(path: Path) -> tuple[str, bool]:
    """(token, created): read the admin token from `path`, or write a new one there readable by its owner only.

    The file is created with mode 0600 (O_EXCL, so an existing file is never replaced); a file
    that others can read is refused, as its token would no longer be secret.
    """
    path = Path(path)
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise GenbaError(f"admin token file {path} is readable by other users; run chmod 600 {path}")
        return check_admin_token(path.read_text().strip()), False
    token = new_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token, True
