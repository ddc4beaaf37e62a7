"""`genba serve`: durable memories over an HTTP JSON API (FastAPI + uvicorn, the `serve` extra).

    genba serve --store site.sqlite --port 8000           # prints a new admin token once
    curl -H "Authorization: Bearer $ADMIN" -H "Content-Type: application/json" \\
         -d '{"classnames": ["ok", "defect"], "encoder": "conse"}' localhost:8000/memories

Modules: `service` (operations, no HTTP), `app` (routes), `auth` (tokens), `uploads` (limits,
image checks), `status` (the HTML page), `cli` (the sub-command). The web stack is imported
only when a server is built, so `import genba` never needs it.
"""

from __future__ import annotations

import importlib.util

from genba.errors import GenbaError


def require_server_deps() -> None:
    """Raise GenbaError naming the install command when the web stack is missing."""
    missing = [name for name, modules in (("fastapi", ["fastapi"]), ("uvicorn", ["uvicorn"]),
                                          ("python-multipart", ["python_multipart", "multipart"]))
               if not any(importlib.util.find_spec(m) for m in modules)]
    if missing:
        raise GenbaError(f"genba serve needs {', '.join(missing)}: install them with pip install 'genba[serve]'")


def create_app(store_path, admin_token: str, **options):
    """The ASGI app (see `genba.serve.app.create_app`); GenbaError if the web stack is missing."""
    require_server_deps()
    from genba.serve.app import create_app as build

    return build(store_path, admin_token, **options)


__all__ = ["create_app", "require_server_deps"]
