"""The `genba serve` sub-command: argument parsing only; the library does the work.

`register_cli(commands, common)` adds the sub-parser (genba.cli calls it). The admin token comes
from --admin-token-file (read; created with a new random token, mode 0600, when absent), else
$GENBA_ADMIN_TOKEN, else --admin-token (discouraged: command lines are visible to other users in
`ps`), else a new random token written to <store>.admin-token (0600). A generated token is never
printed, only the path of its file. Tokens shorter than 16 characters are refused.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path


def register_cli(commands, common) -> None:
    """Add `serve` to the CLI's sub-parsers; `common` carries --cache-dir/--no-cache/--quiet."""
    serve = commands.add_parser("serve", parents=[common], help="serve durable memories over HTTP (needs genba[serve])",
                                description="Serve the memories of a store: create, support, predict, snapshot, "
                                            "rollback, delete by source id, export/import, a prediction log and "
                                            "corrections. Operator console at /console#token=<admin token>; API docs "
                                            "at /docs (Swagger UI from the installed fastapi-offline package, no CDN).")
    serve.add_argument("--store", type=Path, required=True, help="SQLite memory store (created if absent)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on (default %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="TCP port (default %(default)s)")
    serve.add_argument("--admin-token-file", type=Path,
                       help="file holding the admin token (created with a new token, mode 0600, if absent; "
                            "default: $GENBA_ADMIN_TOKEN, else <store>.admin-token)")
    serve.add_argument("--admin-token", help="admin token on the command line (visible in ps; prefer --admin-token-file)")
    serve.add_argument("--encoders", default="conse,tiny",
                       help="comma-separated encoder specs API callers may use (default %(default)s)")
    serve.add_argument("--max-upload-mb", type=float, default=64.0, help="request body limit (default %(default)s MB)")
    serve.add_argument("--max-pixels", type=int, default=40_000_000, help="pixels per image (default %(default)s)")
    serve.set_defaults(run=cmd_serve)


def cmd_serve(args) -> int:
    from genba.serve import create_app, require_server_deps
    from genba.serve.uploads import Limits

    require_server_deps()
    import uvicorn

    token, token_file = resolve_admin_token(args)
    limits = Limits(max_body_bytes=int(args.max_upload_mb * (1 << 20)), max_pixels=args.max_pixels)
    encoders = tuple(e.strip() for e in args.encoders.split(",") if e.strip())
    app = create_app(args.store, token, limits=limits, encoders=encoders)
    if not _is_loopback(args.host):
        print(f"genba serve: warning: listening on {args.host} without TLS; put a TLS proxy in front", file=sys.stderr)
    count = len(app.state.service.store.memory_ids())
    from genba.serve.routes import swagger_assets

    docs = "API docs /docs" if swagger_assets() else "API description /openapi.json (pip install 'genba[serve]' for /docs)"
    print(f"genba serve: {count} memories in {args.store}; http://{args.host}:{args.port} "
          f"(console /console#token=<admin token>, {docs})", flush=True)
    if token_file is not None:
        print(f"genba serve: admin token in {token_file} (readable by its owner only)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0


def resolve_admin_token(args) -> tuple[str, Path | None]:
    """(admin token, file it is kept in or None) from the options, as the module docstring orders them."""
    from genba.serve.auth import check_admin_token, read_or_create_token_file

    if args.admin_token_file is not None:
        return read_or_create_token_file(args.admin_token_file)[0], args.admin_token_file
    token = os.environ.get("GENBA_ADMIN_TOKEN") or args.admin_token
    if token is not None:
        return check_admin_token(token), None
    path = Path(str(args.store) + ".admin-token")
    return read_or_create_token_file(path)[0], path


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
