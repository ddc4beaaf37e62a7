"""`genba movit train | predict | prototypes`: argument parsing only; genba.movit does the work.

    genba movit train --dataset digits --fraction 0.03 [--setting scratch|head] [--seed 0]
                      [--no-memory] [--steps N] [--val-per-class 0] [--set mem.alpha=0.2] --out runs/m
        -> runs/m/movit.safetensors (model + memory + prototypes) and runs/m/results.json
    genba movit predict --model runs/m/movit.safetensors --dataset digits [--split test]
                        [--full-memory] [--out predictions.json]
    genba movit prototypes --model runs/m/movit.safetensors [--out prototypes.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register_cli(commands, common) -> None:
    """Add `movit` and its sub-commands; `common` carries --cache-dir/--no-cache/--quiet."""
    movit = commands.add_parser("movit", help="MoViT: a ViT with an external attention memory, for small data")
    sub = movit.add_subparsers(dest="movit_command", required=True)
    train = sub.add_parser("train", parents=[common], help="train MoViT on a fraction of a dataset's train split")
    train.add_argument("--dataset", required=True, help="built-in name, folder:<dir> or csv:<file>")
    train.add_argument("--fraction", type=float, required=True, help="share of the train split in (0, 1], e.g. 0.03")
    train.add_argument("--variant", "--setting", dest="setting", choices=("scratch", "head"), default="scratch",
                       help="scratch: small ViT on pixels; head: memory transformer over frozen encoder tokens "
                            "(--setting is its older spelling)")
    train.add_argument("--seed", type=int, default=0, help="seed of the fraction, initialisation and batches")
    train.add_argument("--no-memory", action="store_true", help="the same transformer without memory (baseline)")
    train.add_argument("--steps", type=int, default=None, help="optimiser-step budget (default: 20 epochs clamped to [100, 200] steps)")
    train.add_argument("--val-per-class", type=int, default=0,
                       help="carve this many validation images per class from the fraction to pick the epoch (default 0: last epoch)")
    train.add_argument("--backbone", default="efficientnet-lite0", help="frozen encoder of the head setting")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a setting: train.lr=1e-3, model.dim=96, mem.alpha=1.0, mem.capacity=4096, ...")
    train.add_argument("--out", type=Path, required=True, help="output folder (movit.safetensors, model.genba for "
                       "`genba predict --model DIR`, results.json)")
    train.set_defaults(run=cmd_train)

    predict = sub.add_parser("predict", parents=[common], help="predict a dataset split with a saved MoViT")
    predict.add_argument("--model", type=Path, required=True, help="movit.safetensors from `genba movit train`")
    predict.add_argument("--dataset", required=True)
    predict.add_argument("--split", default="test")
    predict.add_argument("--full-memory", action="store_true", help="retrieve from every memory slot, not the prototypes")
    predict.add_argument("--out", type=Path, help="write predictions and accuracy as JSON here")
    predict.set_defaults(run=cmd_predict)

    protos = sub.add_parser("prototypes", parents=[common], help="which training images each prototype summarises")
    protos.add_argument("--model", type=Path, required=True)
    protos.add_argument("--out", type=Path, help="write the full list as JSON here")
    protos.set_defaults(run=cmd_prototypes)


def _cache(args):
    from genba.cache import TensorCache

    return None if args.no_cache else TensorCache(args.cache_dir)


def cmd_train(args) -> int:
    from genba.errors import GenbaError
    from genba.movit.artefact import save_artefact
    from genba.settings import parse_set_pairs
    from genba.movit.data import fraction_indices
    from genba.movit.run import RunSpec, build_inputs, provenance, run_movit
    from genba.data import load_dataset
    from genba.report import write_json

    spec = RunSpec(dataset=args.dataset, fraction=args.fraction, setting=args.setting, seed=args.seed,
                   memory=not args.no_memory, steps=args.steps, val_per_class=args.val_per_class,
                   overrides=parse_set_pairs(args.set), backbone=args.backbone)
    model_path = args.out / "movit.safetensors"
    if model_path.exists():
        raise GenbaError(f"{model_path} already exists: choose a new --out folder (nothing was changed)")
    dataset = load_dataset(spec.dataset)
    train_ids = fraction_indices(dataset.labels, dataset.splits["train"], spec.fraction, spec.seed, dataset.classnames)
    inputs = build_inputs(spec, dataset, train_ids, _cache(args), not args.quiet)
    result, model = run_movit(spec, dataset=dataset, inputs=inputs, progress=not args.quiet)
    save_artefact(model_path, model, provenance(result, spec, train_ids, dataset, inputs.licences), result["hyperparameters"])
    result["model"] = str(model_path)
    from genba.model.base import MODEL_FILE, save_model
    from genba.model.kinds.movit import from_artefact

    result["genba_model"] = str(save_model(from_artefact(model_path, result), args.out / MODEL_FILE))
    write_json(args.out / "results.json", result)
    print(json.dumps({k: result[k] for k in ("dataset", "setting", "fraction", "memory", "n_train", "test_accuracy",
                                             "inference", "seconds_train")}))
    import numpy as np
    import torch

    from genba.metrics import classification_metrics

    y = torch.as_tensor(dataset.labels[dataset.splits["test"]])
    m = classification_metrics(model.predict_logits(inputs.x_test).argmax(1), y, dataset.num_classes)
    counts = np.bincount(y.numpy(), minlength=dataset.num_classes)
    print(f"{dataset.name}: training {result['n_train']} / validation {result['n_val']} images; test top-1 "
          f"{m['top1']:.1f}%, balanced {m['balanced_accuracy']:.1f}% (chance {100 / dataset.num_classes:.1f}%, "
          f"majority {100 * counts.max() / max(1, counts.sum()):.1f}%)", file=sys.stderr)
    print(f"genba movit: model {model_path}, results {args.out / 'results.json'}", file=sys.stderr)
    return 0


def cmd_predict(args) -> int:
    import torch

    from genba.data import load_dataset
    from genba.errors import GenbaError
    from genba.movit.artefact import load_artefact, read_meta
    from genba.report import write_json

    meta = read_meta(args.model)
    dataset = load_dataset(args.dataset)
    if args.split not in dataset.splits:
        raise GenbaError(f"dataset '{dataset.name}' has no split '{args.split}': it has {', '.join(sorted(dataset.splits))}")
    prov = meta["provenance"]
    indices = dataset.splits[args.split]
    if prov["setting"] == "head":
        from genba.movit.head import head_tokens

        x, input_name = head_tokens(dataset, args.split, prov["backbone"], prov["image_size"], _cache(args), not args.quiet)
    else:
        from genba.movit.data import load_pixels

        size, _, channels = (int(v) for v in prov["input"].split(":", 1)[1].split("x"))
        x = load_pixels(dataset, indices, size, channels, _cache(args), split=args.split)
        input_name = prov["input"]
    model, _ = load_artefact(args.model, expect_input=input_name, expect_classes=list(dataset.classnames))
    if args.full_memory and model.memories:
        model.use_prototypes(False)
    pred = model.predict_logits(x).argmax(1)
    labels = torch.as_tensor(dataset.labels[indices])
    out = {"model": str(args.model), "dataset": dataset.name, "split": args.split, "n": int(len(indices)),
           "inference": "full memory" if args.full_memory else ("prototypes" if model.memories else "no memory"),
           "accuracy": float((pred == labels).float().mean()),
           "predictions": [{"index": int(i), "label": dataset.classnames[int(p)]} for i, p in zip(indices, pred)]}
    if args.out:
        write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("dataset", "split", "n", "inference", "accuracy")}))
    return 0


def cmd_prototypes(args) -> int:
    from genba.movit.artefact import load_artefact, prototype_members
    from genba.report import write_json

    model, meta = load_artefact(args.model)
    members = prototype_members(model)
    if args.out:
        write_json(args.out, {"model": str(args.model), "prototypes": members})
    for m in members[:20]:
        imgs = m["images"]
        print(f"layer {m['layer']} head {m['head']} prototype {m['prototype']}: {m['slots']} slots from "
              f"{len(imgs)} images {imgs[:8]}{' ...' if len(imgs) > 8 else ''}")
    if len(members) > 20:
        print(f"... {len(members) - 20} more (use --out for all)")
    return 0
