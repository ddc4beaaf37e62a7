"""CLI of genba.cvm: `genba cvm train`, `genba cvm add-class` (`genba export` / `predict`: genba.model.cli).

Argument parsing only (no torch import here, so `genba predict` stays torch-free).
"""

from __future__ import annotations

import sys
from pathlib import Path


def register_cli(commands, common) -> None:
    cvm = commands.add_parser("cvm", help="continual visual mapping: a small model trained into a frozen language model's concept space")
    sub = cvm.add_subparsers(dest="cvm_command", required=True)
    train = sub.add_parser("train", parents=[common], help="train a student continually over a stream of datasets")
    train.add_argument("--stream", required=True, help="comma-separated datasets, in order (e.g. textile,animal-mnist); "
                       "name[c1|c2]xK = K images each of those classes (e.g. classes that entered by name only)")
    train.add_argument("--out", type=Path, required=True, help="model directory to write (weights, concept bank, cvm.json, and model.genba: the model)")
    train.add_argument("--student", default="small", choices=["small", "lite0", "lite1", "lite2"])
    train.add_argument("--head", default="concept", choices=["concept", "linear"], help="concept (CVM) or linear (cross-entropy baseline)")
    train.add_argument("--strategy", default="none",
                       help="a genba.continual method whose requirements the CVM student meets (none = sequential "
                            "fine-tuning; an unknown or unsuitable name lists the ones that work)")
    train.add_argument("--loss", default="auto", choices=["auto", "contrastive", "cosine"], help="mapping loss (auto: chosen on the first task's validation split)")
    train.add_argument("--unseen", default="direct", choices=["direct", "conse"],
                       help="how classes without images are scored: direct (cosine to their concept row) or conse "
                       "(through the student's probabilities over the classes with images; genba.cvm.heads)")
    train.add_argument("--hub", action="store_true",
                       help="subtract a hubness term computed from the concept bank (CSLS) from those classes' logits")
    train.add_argument("--text-model", default="minilm", help="frozen language model: minilm (all-MiniLM-L6-v2) or hf:<CLIP dir>")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-train", type=int, default=1500, help="training images per task (default %(default)s)")
    train.add_argument("--max-test", type=int, default=500, help="test images per task (default %(default)s)")
    train.add_argument("--name-only", action="append", default=[], metavar="DATASET:CLASS",
                       help="a class of a stream dataset that enters by name only (no images)")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="train.lr=..., train.epochs=..., strategy.buffer_size=..., strategy.weight=... (genba.continual names)")
    train.add_argument("--json", type=Path, help="write the results (as `genba continual`) here")
    train.set_defaults(run=cmd_train)

    add = sub.add_parser("add-class", help="add classes by name to a trained CVM model (one concept row each)")
    add.add_argument("model_dir", type=Path)
    add.add_argument("--name", action="append", required=True, help="class name (repeat for several)")
    add.add_argument("--template", action="append", default=[], help="prompt template with {} (default 'a photo of a {}.')")
    add.set_defaults(run=cmd_add_class)

    # `genba export` and `genba predict` live in genba.model.cli (every model kind; ONNX files of CVM too)


def _overrides(pairs: list[str]) -> tuple[dict, dict]:
    from genba.errors import GenbaError
    from genba.settings import parse_set_pairs

    train, strategy = {}, {}
    for key, value in parse_set_pairs(pairs).items():
        scope, dot, name = key.partition(".")
        if not dot or scope not in ("train", "strategy"):
            raise GenbaError(f"--set takes train.KEY=VALUE or strategy.KEY=VALUE, got '{key}=...'")
        (train if scope == "train" else strategy)[name] = value
    return train, strategy


def cmd_train(args) -> int:
    from genba.cache import TensorCache
    from genba.cvm.stream import CVMConfig, default_train, run_stream
    from genba.cvm.tasks import TaskSpec, parse_stream
    from genba.errors import GenbaError
    from genba.report import markdown_table, write_json

    specs = parse_stream(args.stream)
    for item in args.name_only:
        dataset, sep, name = item.rpartition(":")  # the dataset may hold colons itself (folder:<dir>)
        match = [i for i, s in enumerate(specs) if s.dataset == dataset and not s.only]
        if not sep or not match:
            raise GenbaError(f"--name-only takes DATASET:CLASS with DATASET in the stream, got '{item}'")
        s = specs[match[0]]
        specs[match[0]] = TaskSpec(s.dataset, s.name_only + (name,))
    train_set, strategy_hp = _overrides(args.set)
    cfg = CVMConfig(stream=specs, student=args.student, head=args.head, strategy=args.strategy, strategy_hp=strategy_hp,
                    loss="ce" if args.head == "linear" else args.loss, text_model=args.text_model, seed=args.seed,
                    unseen=args.unseen, hub=args.hub,
                    max_train=args.max_train, max_test=args.max_test,
                    train=default_train(args.student).replace(**train_set))
    cache = None if args.no_cache else TensorCache(args.cache_dir)
    result = run_stream(cfg, cache=cache, out_dir=args.out, progress=not args.quiet)
    result.pop("_objective")
    for name, n_train, n_val in zip(result["stream"], result["rows"]["train"], result["rows"]["val"]):
        print(f"{name}: training {n_train} / validation {n_val} images (validation: at most a quarter of each class)")
    for setting, block in result["settings"].items():
        matrix = block["accuracy_matrix"]
        print(f"\n{setting.upper()} accuracy matrix (rows: before training, then after each task)")
        print(markdown_table(["after"] + result["stream"], [[("untrained" if j == 0 else result["stream"][j - 1])] + row
                                                            for j, row in enumerate(matrix)]))
        m = block["metrics"]
        print(markdown_table(["avg", "last", "transfer", "bwt", "fwt", "forgetting"],
                             [[m["avg"], m["last"], m["transfer"], m["bwt"], m["fwt"], m["forgetting"]]]))
    from genba.model.base import MODEL_FILE, save_model
    from genba.model.kinds.cvm import from_model_dir

    model_path = save_model(from_model_dir(args.out), args.out / MODEL_FILE)
    print(f"\n{result['method']} ({result['student']} student, strategy {result['strategy']}); model in {args.out} "
          f"({model_path}: `genba predict --model {args.out} --images DIR`)")
    if args.json:
        write_json(args.json, result)
    return 0


def cmd_add_class(args) -> int:
    from genba.cvm.model_dir import add_classes

    bank = add_classes(args.model_dir, args.name, args.template)
    from genba.model.base import MODEL_FILE, save_model
    from genba.model.kinds.cvm import from_model_dir

    if (args.model_dir / MODEL_FILE).is_file():  # the model file follows its directory
        save_model(from_model_dir(args.model_dir), args.model_dir / MODEL_FILE)
    print(f"{args.model_dir}: {len(bank)} classes ({', '.join(args.name)} added by name); re-export with `genba export`")
    return 0


def predict_main(argv: list[str] | None = None) -> int:
    """`python -m genba.cvm.cli --model FILE --images DIR`: `genba predict` on an exported CVM graph
    without the rest of the CLI (onnxruntime only, torch never imported)."""
    import argparse

    from genba.cvm.predict import predict_folder, report_skipped
    from genba.errors import GenbaError

    parser = argparse.ArgumentParser(prog="genba predict")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    args = parser.parse_args(argv)
    skipped: list[str] = []
    try:
        for path, name, prob in predict_folder(args.model, args.images, skipped=skipped):
            print(f"{path}\t{name}\t{prob:.4f}")
    except GenbaError as error:
        print(f"genba: error: {error}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    report_skipped(skipped)
    return 0


if __name__ == "__main__":
    raise SystemExit(predict_main())
