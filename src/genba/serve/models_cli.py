"""`genba memory put | get | fill`: served memories and models (genba.model.memory does the work).

    genba memory put  --store site.sqlite --model site.genba [--name "line 3"]   # -> {"id", "token"}
    genba memory get  --store site.sqlite --memory ID --out line3.genba
    genba memory fill --store site.sqlite --memory ID --dataset folder:site/

Works on the store file directly (a running `genba serve` sees the change at its next request:
its live memories reload when the store's version moves). Argument parsing and printing only.
"""

from __future__ import annotations

import sys
from pathlib import Path


def register_cli(commands, common) -> None:
    memory = commands.add_parser("memory", help="served memories <-> models; fill a served memory from a folder")
    msub = memory.add_subparsers(dest="memory_command", required=True)
    put = msub.add_parser("put", parents=[common], help="put an adapt model (joint space) into a store as a memory")
    put.add_argument("--store", type=Path, required=True, help="the SQLite store `genba serve --store` serves")
    put.add_argument("--model", type=Path, required=True)
    put.add_argument("--name", default="", help="label on the status page")
    put.set_defaults(run=cmd_memory_put)
    get = msub.add_parser("get", parents=[common], help="write a served memory out as a model file")
    get.add_argument("--store", type=Path, required=True)
    get.add_argument("--memory", required=True, help="memory id")
    get.add_argument("--out", type=Path, required=True, help="model file to write")
    get.set_defaults(run=cmd_memory_get)
    fill = msub.add_parser("fill", parents=[common], help="add every image of a labelled folder to a memory as support "
                           "(source id = the path inside the folder, erasable with delete-source)")
    fill.add_argument("--store", type=Path, required=True)
    fill.add_argument("--memory", required=True, help="memory id")
    fill.add_argument("--dataset", required=True, help="folder:<dir> (one sub-folder per class) or csv:<file>")
    fill.set_defaults(run=cmd_memory_fill)



def _open_store(path: Path, create: bool):
    from genba.errors import GenbaError
    from genba.store.db import Store

    if not create and not path.is_file():
        raise GenbaError(f"no memory store at {path}: pass the file `genba serve --store` uses")
    return Store(path)


def cmd_memory_put(args) -> int:
    import json

    from genba.model import load
    from genba.model.memory import put_model
    from genba.serve.auth import new_token, token_hash

    model = load(args.model)
    token = new_token()
    with _open_store(args.store, create=True) as store:
        memory_id = put_model(store, model, name=args.name, token_hash=token_hash(token))
    print(json.dumps({"id": memory_id, "token": token}))
    print(f"genba memory: {args.model} is memory {memory_id} in {args.store} (its API token is shown once, above)",
          file=sys.stderr)
    return 0


def cmd_memory_get(args) -> int:
    from genba.model.base import save_model
    from genba.model.memory import get_model

    with _open_store(args.store, create=False) as store:
        model = get_model(store, args.memory)
    path = save_model(model, args.out)
    print(f"model: {path} (kind {model.kind}, {len(model.classes)} classes) from memory {args.memory}")
    return 0


def cmd_memory_fill(args) -> int:
    from genba.model.memory import fill_from_folder

    with _open_store(args.store, create=False) as store:
        report = fill_from_folder(store, args.memory, args.dataset, progress=not args.quiet)
    counts = ", ".join(f"{c} {n}" for c, n in report["per_class"].items())
    print(f"memory {args.memory}: {report['added']} support images added ({counts}); version {report['version']}")
    return 0


