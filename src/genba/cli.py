"""The `genba` command line. It parses arguments, builds typed objects and calls the library.

`main(argv)` is testable: it returns the exit status instead of exiting. User errors
(`GenbaError`) print one line `genba: error: ...` and return 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genba.errors import GenbaError
from genba.settings import default_cache_dir


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
        ["dataset", "encoder", "split", "n", "top-1 (%)", "balanced acc (%)", "chance (%)", "majority (%)"],
        [[result["dataset"], args.encoder, result["split"], result["n"], result["top1"], result["balanced_accuracy"],
          result["chance"], result["majority"]]],
    ))
    if args.json:
        write_json(args.json, result)
    return 0


def cmd_adapt(args) -> int:
    from genba.adapt import AdaptSpec, fit_adapt, prepare, run_adapt
    from genba.data import load_dataset
    from genba.encoders import load_encoder
    from genba.report import markdown_table, write_json
    from genba.settings import parse_set_pairs

    from genba.data.splits import plan_split

    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    overrides = parse_set_pairs(args.set)  # applied to every method given; a key one of them lacks is refused
    shots = args.shots if args.shots == "all" else _int_arg(args.shots, "--shots")
    val = args.val_per_class if args.val_per_class == "auto" else _int_arg(args.val_per_class, "--val-per-class")
    check = [AdaptSpec(method=m, shots=1 if shots == "all" else shots, seed=args.seed, space=args.space,
                       select=args.select, views=args.views, support_views=args.support_views, overrides=overrides)
             for m in methods]
    for spec in check:  # every method and option is checked before any data is read
        spec.validate()
    dataset = load_dataset(args.dataset)
    plan = plan_split(dataset, shots, val)  # before any feature is extracted
    print(f"{dataset.name}: {plan.line()}")
    specs = [AdaptSpec(method=m, shots=plan.shots, seed=args.seed, space=args.space, select=args.select,
                       val_per_class=plan.val_per_class, views=args.views, support_views=args.support_views,
                       overrides=overrides) for m in methods]
    for spec in specs:
        spec.validate()
    encoder = load_encoder(args.encoder)
    cache = _cache(args)
    data = prepare(encoder, dataset, cache=cache, progress=not args.quiet)
    results, fits = [], []
    for spec in specs:
        fitted = fit_adapt(encoder, dataset, spec, data=data, cache=cache, progress=not args.quiet)
        result = run_adapt(encoder, dataset, spec, data=data, cache=cache, progress=not args.quiet, fitted=fitted)
        result["encoder_spec"] = args.encoder
        result["val_top1_fitted"] = fitted.val_top1
        results.append(result)
        fits.append(fitted)
    from genba.methods import get_method

    def shown(r):
        keys = get_method(r["method"]).shown_hyperparameters
        return ", ".join(f"{k}={r['hyperparameters'][k]:g}" for k in keys) or "-"
    print(markdown_table(
        ["method", "shots", "seed", "val top-1 (%)", "top-1 (%)", "balanced acc (%)", "hyperparameters", "selected on"],
        [[r["method"], r["shots"], r["seed"], f"{r['val_top1_fitted']:.1f}", r["top1"], r["balanced_accuracy"],
          shown(r), r["selected_on"]] for r in results],
    ))
    counts = class_counts(dataset.labels[dataset.splits["test"]], len(dataset.classnames))
    print(f"\n{dataset.name}: {results[0]['n']} test images, {len(dataset.classnames)} classes (chance "
          f"{100 / len(dataset.classnames):.1f}%, majority {100 * max(counts) / max(1, sum(counts)):.1f}%), "
          f"encoder {args.encoder}, cache space {args.space}, validation {results[0]['n_val']} images from train")
    if args.out:
        from genba.model.base import save_model
        from genba.model.kinds.adapt import from_fitted

        best = max(range(len(results)), key=lambda i: (results[i]["val_top1_fitted"], -i))  # ties: first listed
        r = results[best]
        metrics = {"top1": r["top1"], "balanced_accuracy": r["balanced_accuracy"], "val_top1": r["val_top1_fitted"],
                   "n_test": r["n"], "n_val": r["n_val"], "per_class_recall": r["per_class_recall"],
                   "evaluated_on": f"{dataset.name} test split"}
        model = from_fitted(fits[best], specs[best], dataset=dataset, encoder=encoder, encoder_spec=args.encoder,
                            metrics=metrics)
        path = save_model(model, args.out)
        why = f" (best validation top-1 of {len(results)} methods)" if len(results) > 1 else ""
        print(f"model: {path} (kind {model.kind}{why}); try `genba predict --model {path} --images DIR`")
    if args.json:
        write_json(args.json, results[0] if len(results) == 1 else {"results": results})
    return 0


def _int_arg(text: str, flag: str) -> int:
    from genba.errors import GenbaError

    try:
        return int(text)
    except ValueError:
        raise GenbaError(f"{flag} takes a whole number (or {'all' if flag == '--shots' else 'auto'}), got '{text}'") from None


def class_counts(labels, num_classes: int) -> list[int]:
    """Images per class (for the majority share)."""
    import numpy as np

    return np.bincount(np.asarray(labels), minlength=num_classes).tolist()


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
    from genba.settings import add_hardware_options

    add_hardware_options(common)  # --device, --precision, --runtime on every command that takes the common options
    parser = argparse.ArgumentParser(prog="genba", description="Adapt vision(-language) foundation models on site.")
    from genba import __version__

    parser.add_argument("--version", action="version", version=f"genba {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    zeroshot = commands.add_parser("zeroshot", parents=[common], help="zero-shot top-1 of an encoder on a dataset")
    zeroshot.add_argument("--dataset", required=True, help="built-in name (see `genba datasets`), folder:<dir> or csv:<file>")
    zeroshot.add_argument("--encoder", default="conse", help="encoder spec (see `genba encoders`; default %(default)s)")
    zeroshot.add_argument("--split", default="test")
    zeroshot.add_argument("--json", type=Path, help="write the result as JSON here")
    zeroshot.set_defaults(run=cmd_zeroshot)

    adapt = commands.add_parser("adapt", parents=[common], help="few-shot / test-time adaptation on a dataset")
    adapt.add_argument("--dataset", required=True, help="built-in name, folder:<dir> or csv:<file>")
    adapt.add_argument("--method", required=True, help="method, or several separated by commas (e.g. zeroshot,tip-adapter,dmn)")
    adapt.add_argument("--shots", default="16", help="labeled images per class, or all (every training image left "
                       "after validation; default %(default)s)")
    adapt.add_argument("--seed", type=int, default=0, help="seed of the validation split, the shots and the stream order")
    adapt.add_argument("--encoder", default="conse")
    adapt.add_argument("--space", choices=["visual", "joint"], default="visual", help="where caches and memories live (default %(default)s)")
    adapt.add_argument("--select", choices=["val", "fixed"], default="val", help="hyperparameters: grid on validation, or fixed paper defaults")
    adapt.add_argument("--val-per-class", default="auto", help="validation images per class, carved from train (auto: "
                       "a quarter of the smallest class's train images, at most 16)")
    adapt.add_argument("--views", type=int, default=1, help="test-time augmented views per test image (1: none)")
    adapt.add_argument("--support-views", type=int, default=1,
                       help="augmented views per support image for the cache and training (Tip-Adapter's reference: 10; 1: none)")
    adapt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="fix a hyperparameter of every method given (refused if one of them lacks it)")
    adapt.add_argument("--json", type=Path, help="write the result as JSON here")
    adapt.add_argument("--out", type=Path, help="write the adapted model here (with several methods: the one with "
                       "the best validation top-1; ties go to the first listed)")
    adapt.set_defaults(run=cmd_adapt)

    commands.add_parser("datasets", help="list datasets and whether each is installed").set_defaults(run=cmd_datasets)
    commands.add_parser("encoders", help="list encoder kinds").set_defaults(run=cmd_encoders)
    _add_optional_commands(commands, common)
    return parser


# Sub-commands that live next to their feature: each module has register_cli(commands, common).
FEATURE_CLIS = ("genba.serve.cli", "genba.continual.cli", "genba.cvm.cli", "genba.movit.cli", "genba.sak.cli",
                "genba.model.cli", "genba.serve.models_cli")


def _add_optional_commands(commands, common) -> None:
    """Register the sub-commands of every feature package present in this build."""
    import importlib

    for module_name in FEATURE_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:  # that feature is not part of this build
            if error.name not in (module_name, module_name.rsplit(".", 1)[0]):
                raise
            continue
        module.register_cli(commands, common)


def _hardware(args):
    """genba.device.use(the Hardware of --device/--precision/--runtime); nothing for a torch-free
    command (genba predict) on a machine without torch, unless those options were given."""
    import contextlib

    if not hasattr(args, "device"):
        return contextlib.nullcontext()
    try:
        from genba.device import resolve, use
    except ImportError:
        if (args.device, args.precision, args.runtime) != ("auto", "fp32", "auto"):
            raise GenbaError("--device, --precision and --runtime need torch, which is not installed here") from None
        return contextlib.nullcontext()
    return use(resolve(args.device, args.precision, args.runtime))


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"genba: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv` (default sys.argv[1:]); returns the exit status."""
    import warnings

    args = build_parser().parse_args(argv)
    previous_format, warnings.formatwarning = warnings.formatwarning, _one_line_warning
    try:
        with _hardware(args):
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
