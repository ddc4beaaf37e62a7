"""CLI of genba.model: `genba model show`, `genba predict`, `genba export` (argument parsing and
printing only; no torch import at module level, so `genba predict --model x.onnx` stays torch-free).

    genba model show M
    genba predict --model M --images DIR [FILES, GLOBS ...] [--top-k 3] [--format csv|jsonl] [--out F]
    genba predict --model x.onnx --images DIR              # an exported CVM graph, onnxruntime only
    genba export --model M --onnx F [--int8]               # or the older `genba export CVM_DIR --onnx F`
"""

from __future__ import annotations

import sys
from pathlib import Path


def register_cli(commands, common) -> None:
    model = commands.add_parser("model", help="inspect a model file")
    sub = model.add_subparsers(dest="model_command", required=True)
    show = sub.add_parser("show", help="print what a model is: kind, encoder, classes, method, data, metrics")
    show.add_argument("model", type=Path, help="a model file, or a run folder holding model.genba")
    show.add_argument("--json", action="store_true", help="print the full description as JSON")
    show.set_defaults(run=cmd_show)
    kinds = sub.add_parser("kinds", help="list the model kinds and what each can do")
    kinds.set_defaults(run=cmd_kinds)

    predict = commands.add_parser("predict", parents=[common], help="classify unsorted images with a model (any kind)")
    predict.add_argument("--model", type=Path, required=True, help="a model (genba adapt|continual|cvm train|movit "
                         "train --out), or an ONNX file from `genba export` (run with onnxruntime only)")
    predict.add_argument("--images", nargs="+", required=True, help="image folders (recursive), files or glob patterns")
    predict.add_argument("--top-k", type=int, default=1, help="also list the k most probable classes (default 1)")
    predict.add_argument("--format", choices=("csv", "jsonl"), default=None,
                         help="csv (default) or jsonl; an ONNX model without --format prints path<TAB>class<TAB>p")
    predict.add_argument("--out", type=Path, default=None, help="write the predictions here (default: stdout)")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.set_defaults(run=cmd_predict)

    learn = commands.add_parser("learn", parents=[common], help="a model learns a new task (new classes from a folder) "
                                "with its continual strategy and is written as the next version")
    learn.add_argument("--model", type=Path, required=True, help="the model to extend (kept as it is)")
    learn.add_argument("--dataset", required=True, help="the new task: folder:<dir> (one sub-folder per new class), "
                       "csv:<file> or a built-in name; several separated by commas")
    learn.add_argument("--out", type=Path, required=True, help="where to write the next version")
    learn.set_defaults(run=cmd_learn)

    export = commands.add_parser("export", parents=[common], help="export a model to ONNX (kinds that are a static graph)")
    export.add_argument("model_dir", type=Path, nargs="?", default=None, help="(older form) a CVM model directory")
    export.add_argument("--model", type=Path, default=None, help="the model to export")
    export.add_argument("--onnx", type=Path, required=True, help="ONNX file to write")
    export.add_argument("--int8", action="store_true", help="also write F.int8.onnx (dynamic int8 quantization) and "
                        "report the change of predictions against fp32")
    export.add_argument("--images", nargs="*", default=None, help="images to check parity / int8 agreement on")
    export.set_defaults(run=cmd_export)


def cmd_kinds(args) -> int:
    from genba.model import kinds  # noqa: F401
    from genba.model.base import CAPABILITIES, MODEL_KINDS

    for entry in MODEL_KINDS.entries():
        caps = ", ".join(c for c in CAPABILITIES if c in entry.obj.capabilities)
        print(f"{entry.name:22s} {caps:45s} {entry.summary}")
    return 0


def cmd_show(args) -> int:
    import json

    from genba.model import load
    from genba.model.base import MODEL_KINDS

    model = load(args.model)
    meta = model.meta
    if args.json:
        print(json.dumps(meta, indent=2, default=str))
        return 0
    kind = MODEL_KINDS.get(model.kind)
    classes = meta["classes"]
    print(f"{model.path}: genba model, kind {model.kind} (version {meta.get('version', 1)}, format "
          f"{meta['format_version']}, genba {meta['genba_version']}, {meta['created']})")
    print(f"can: {', '.join(sorted(kind.capabilities))}")
    if meta.get("encoder"):
        print(f"encoder: {meta['encoder'].get('spec')} ({meta['encoder'].get('provenance')})")
    print(f"classes ({len(classes)}): {', '.join(classes[:20])}{' ...' if len(classes) > 20 else ''}")
    print(f"method: {meta['method']}")
    chosen = meta.get("chosen", {})
    for key, value in meta.get("hyperparameters", {}).items():
        print(f"  {key} = {json.dumps(value, default=str)}" + (f"  ({chosen[key]})" if key in chosen else ""))
    for source in meta.get("data", {}).get("sources", []):
        short = {k: (f"{len(v)} ids" if isinstance(v, list) and len(v) > 6 else v) for k, v in source.items()}
        print(f"data: {short}")
    metrics = meta.get("metrics", {})
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
    if flat:
        print("metrics: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items()))
    for line in kind.describe(model):
        print(line)
    if meta.get("parent"):
        print(f"learned from: {meta['parent']}")
    print(f"made by: {meta['command']}")
    return 0


def cmd_predict(args) -> int:
    from genba.errors import GenbaError

    if args.model.suffix == ".onnx":
        return _predict_onnx(args)
    if args.top_k < 1:
        raise GenbaError(f"--top-k must be 1 or more, got {args.top_k}")
    from genba.model import load
    from genba.model.base import open_predictor
    from genba.model.images import image_paths
    from genba.model.predict import predict_paths, write_rows

    model = load(args.model)
    paths = image_paths(args.images)
    predictor = open_predictor(model, progress=not args.quiet)
    rows, skipped = predict_paths(predictor, paths, top_k=args.top_k, batch_size=args.batch_size,
                                  progress=not args.quiet)
    write_rows(rows, args.out, args.format or "csv")
    where = f" -> {args.out}" if args.out else ""
    print(f"genba predict: {len(rows)} images classified, {len(skipped)} skipped (could not be decoded){where}",
          file=sys.stderr)
    return 0


def _predict_onnx(args) -> int:
    """An exported CVM graph: onnxruntime only, path<TAB>class<TAB>p (torch never imported); a graph
    exported from another model kind: the rows of `genba predict` (its encoder prepares the pixels)."""
    from genba.cvm.predict import ONNX_FORMAT as CVM_ONNX, predict_folder, report_skipped

    if args.format is None and args.top_k == 1 and len(args.images) == 1 and _onnx_tag(args.model) in (CVM_ONNX, None):
        skipped: list[str] = []
        for path, name, prob in predict_folder(args.model, args.images[0], skipped=skipped):
            print(f"{path}\t{name}\t{prob:.4f}")
        sys.stdout.flush()
        report_skipped(skipped)
        return 0
    from genba.model.export import OnnxPredictor
    from genba.model.images import image_paths
    from genba.model.predict import predict_paths, write_rows

    rows, skipped = predict_paths(OnnxPredictor(args.model), image_paths(args.images), top_k=args.top_k,
                                  batch_size=args.batch_size, progress=not args.quiet)
    write_rows(rows, args.out, args.format or "csv")
    print(f"genba predict: {len(rows)} images classified, {len(skipped)} skipped (could not be decoded)", file=sys.stderr)
    return 0


def _onnx_tag(path: Path) -> str | None:
    """The genba.format of an ONNX file, read with onnxruntime (no torch); None if unreadable."""
    try:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - the ONNX path below reports unreadable files in one line
        return None
    return session.get_modelmeta().custom_metadata_map.get("genba.format")


def cmd_learn(args) -> int:
    from genba.model.learn import learn_task
    from genba.report import markdown_table

    cache = None
    if not args.no_cache:
        from genba.cache import TensorCache

        cache = TensorCache(args.cache_dir)
    r = learn_task(args.model, args.dataset, args.out, cache=cache, progress=not args.quiet)
    rows = [[name, "earlier" if i < r["old_tasks"] else "new", f"{b:.1f}", f"{a:.1f}", f"{a - b:+.1f}"]
            for i, (name, b, a) in enumerate(zip(r["tasks"], r["before"], r["after"]))]
    print(markdown_table(["task", "", "top-1 before (%)", "top-1 after (%)", "change"], rows))
    print(f"\nsetting {r['setting']}; model version {r['version']} written to {r['path']} ({args.model} kept)")
    return 0


def cmd_export(args) -> int:
    from genba.errors import GenbaError

    if (args.model is None) == (args.model_dir is None):
        raise GenbaError("give the model to export: `genba export --model M --onnx F` (or a CVM directory)")
    if args.model_dir is not None and (args.model_dir / "cvm.json").is_file() or \
            (args.model_dir is not None and not (args.model_dir / "model.genba").exists()):
        from genba.cvm.export import export_onnx

        path = export_onnx(args.model_dir, args.onnx)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
        return 0
    from genba.model.export import export_model

    report = export_model(args.model or args.model_dir, args.onnx, int8=args.int8, images=args.images,
                          progress=not args.quiet)
    for line in report["lines"]:
        print(line)
    return 0
