"""The `genba` command line. It parses arguments, builds typed objects and calls the library.

`main(argv)` is testable: it returns the exit status instead of exiting. User errors
(`GenbaError`) print one line `genba: error: ...` and return 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from genba.errors import GenbaError


def default_cache_dir() -> Path:
    """$GENBA_CACHE_DIR, else $XDG_CACHE_HOME/genba, else ~/.cache/genba."""
    if os.environ.get("GENBA_CACHE_DIR"):
        return Path(os.environ["GENBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genba"


def _cache(args):
    from genba.cache import TensorCache

    return None if args.no_cache else TensorCache(args.cache_dir)


def cmd_zeroshot(args) -> int:
    from genba.data import load_dataset
    from genba.encoders import load_encoder
    from genba.report import markdown_table, write_json
    from genba.zeroshot import evaluate_zeroshot

    dataset = load_dataset(args.dataset)
    encoder = load_encoder(args.encoder)
    result = evaluate_zeroshot(encoder, dataset, args.split, cache=_cache(args), progress=not args.quiet)
    result["encoder_spec"] = args.encoder
    rows = [[name, f"{acc:.1f}", count] for name, acc, count in zip(result["classnames"], result["per_class_top1"], result["predicted_count"])]
    print(markdown_table(["class", "top-1 (%)", "# predicted"], rows))
    print()
    print(markdown_table(
        ["dataset", "encoder", "split", "n", "top-1 (%)", "chance (%)", "majority (%)"],
        [[result["dataset"], args.encoder, result["split"], result["n"], result["top1"], result["chance"], result["majority"]]],
    ))
    if args.json:
        write_json(args.json, result)
    return 0


def cmd_datasets(args) -> int:
    from genba.data import available_datasets

    for name, ok, text in available_datasets():
        print(f"{name:15s} {'ok     ' if ok else 'MISSING'} {text}")
    print("user data: --dataset folder:<dir> (one sub-folder per class) or csv:<file> (columns path,label)")
    return 0


def cmd_encoders(args) -> int:
    from genba.encoders import encoder_kinds

    for kind, summary in encoder_kinds().items():
        print(f"{kind:8s} {summary}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="feature cache folder (default: %(default)s)")
    common.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    common.add_argument("--quiet", action="store_true", help="no progress bars")
    parser = argparse.ArgumentParser(prog="genba", description="Adapt vision(-language) foundation models on site.")
    commands = parser.add_subparsers(dest="command", required=True)

    zeroshot = commands.add_parser("zeroshot", parents=[common], help="zero-shot top-1 of an encoder on a dataset")
    zeroshot.add_argument("--dataset", required=True, help="built-in name (see `genba datasets`), folder:<dir> or csv:<file>")
    zeroshot.add_argument("--encoder", default="conse", help="encoder spec (see `genba encoders`; default %(default)s)")
    zeroshot.add_argument("--split", default="test")
    zeroshot.add_argument("--json", type=Path, help="write the result as JSON here")
    zeroshot.set_defaults(run=cmd_zeroshot)

    commands.add_parser("datasets", help="list datasets and whether each is installed").set_defaults(run=cmd_datasets)
    commands.add_parser("encoders", help="list encoder kinds").set_defaults(run=cmd_encoders)
    _add_optional_commands(commands, common)
    return parser


def _add_optional_commands(commands, common) -> None:
    """Sub-commands that live next to their feature (e.g. `serve` in genba.serve.cli)."""
    try:
        from genba.serve.cli import register_cli
    except ModuleNotFoundError as error:  # the service module is not part of this build
        if error.name not in ("genba.serve", "genba.serve.cli"):
            raise
        return
    register_cli(commands, common)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"genba: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default sys.argv[1:]); returns the exit status."""
    import warnings

    args = build_parser().parse_args(argv)
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        return args.run(args)
    except GenbaError as error:
        print(f"genba: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("genba: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = previous_format


if __name__ == "__main__":
    sys.exit(main())
