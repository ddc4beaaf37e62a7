"""Bearer tokens of the service: one admin token for the server, one API token per memory.

Tokens are 256-bit random strings; the store keeps only sha256(token), compared in constant
time. A request without a token gets 401; a token that is not this memory's (or the admin's)
gets 403, the same answer whether or not the memory exists, so tokens cannot probe for ids.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


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
