"""`genba sak distill | train | eval | predict` (argument parsing only; genba.sak.pipeline does the work).

    genba sak distill --out runs/s1 [--data scenes] [--teachers efficientnet-lite0,conse-dense,ppocr-det] [--stem vit]
    genba sak train   --init runs/s1 --out runs/s2 [--data scenes | --data folder:<dir>]
    genba sak eval    --model runs/s2 [--data scenes | --data folder:<dir>]
    genba sak predict --model runs/s2 --images <image or folder> --out preds/

--data: `scenes` (the seeded composites, --train/--val/--test counts), `folder:<dir>` (images/ +
masks/, see genba.sak.folder; split seeded 80/20 into train/val, evaluated on val), or, for
distill only, any genba dataset (textile, fashion-mnist, ...: unlabeled images resized to 64 px).
--set train.KEY=VALUE changes the TrainConfig of the stage. --stem: a frozen pretrained
genba.backbones name (default efficientnet-lite0; trains on its cached activations) or `vit`
(the small ViT stem trained from scratch).
"""

from __future__ import annotations

import json
from pathlib import Path

from genba.errors import GenbaError

DEFAULT_TEACHERS = "efficientnet-lite0,conse-dense,ppocr-det"
DEFAULT_STEM = "efficientnet-lite0"
DEFAULTS = dict(lr=1e-3, epochs=8, batch_size=32, weight_decay=0.05, warmup=0.05, clip_norm=1.0)


def register_cli(commands, common) -> None:
    sak = commands.add_parser("sak", help="Swiss Army Knife: distil several teachers into one multi-task dense student")
    sub = sak.add_subparsers(dest="sak_command", required=True)

    def data_args(p, distill: bool):
        p.add_argument("--data", default="scenes", help="scenes | folder:<dir> (images/ + masks/)"
                       + (" | any genba dataset (unlabeled)" if distill else "") + " (default %(default)s)")
        p.add_argument("--train", type=int, default=800, help="composite train scenes (default %(default)s)")
        p.add_argument("--val", type=int, default=200, help="composite validation scenes (default %(default)s)")
        p.add_argument("--test", type=int, default=400, help="composite test scenes (default %(default)s)")
        p.add_argument("--seed", type=int, default=0, help="training seed (scenes are always seed 0)")
        p.add_argument("--set", action="append", default=[], metavar="train.KEY=VALUE", help="training setting")
        p.add_argument("--out", type=Path, required=True, help="output folder (model.safetensors, checkpoint, report.json)")
        p.add_argument("--resume", action="store_true", help="continue a killed run in --out")

    distill = sub.add_parser("distill", parents=[common], help="stage 1: distil the teachers into a new student")
    data_args(distill, True)
    distill.add_argument("--teachers", default=DEFAULT_TEACHERS, help="comma-separated teachers (default %(default)s; also hf:<dir>)")
    distill.add_argument("--variant", default="sak", help="sak | no-router | no-tsap | many-to-one (default %(default)s)")
    distill.add_argument("--stem", default=DEFAULT_STEM, help="frozen pretrained backbone (efficientnet-lite0/1/2) "
                         "or vit (trained from scratch) (default %(default)s)")
    distill.set_defaults(run=cmd_distill)

    train = sub.add_parser("train", parents=[common], help="stage 2: train the dense task heads, distillation kept")
    data_args(train, False)
    train.add_argument("--init", type=Path, required=True, help="the folder of `genba sak distill`")
    train.add_argument("--distill-weight", type=float, default=1.0, help="weight of the kept distillation loss")
    train.add_argument("--class-balance", choices=["median", "none"], default="median",
                       help="semantic cross-entropy weights: median frequency of the train pixels, or none (default %(default)s)")
    train.set_defaults(run=cmd_train)

    evaluate = sub.add_parser("eval", parents=[common], help="metrics of a trained student on scenes or a mask folder")
    evaluate.add_argument("--model", type=Path, required=True, help="the folder of `genba sak train`")
    evaluate.add_argument("--data", default="scenes", help="scenes (the test composites) | folder:<dir> (every image)")
    evaluate.add_argument("--test", type=int, default=400, help="composite test scenes (default %(default)s)")
    evaluate.add_argument("--json", type=Path, help="write the metrics as JSON here")
    evaluate.set_defaults(run=cmd_eval)

    predict = sub.add_parser("predict", parents=[common], help="write segmentation / boundary / saliency / depth PNGs")
    predict.add_argument("--model", type=Path, required=True, help="the folder of `genba sak train`")
    predict.add_argument("--images", type=Path, required=True, help="an image file or a folder of images")
    predict.add_argument("--out", type=Path, required=True, help="output folder for the PNGs")
    predict.set_defaults(run=cmd_predict)


def _train_config(pairs: list[str], seed: int):
    """--set train.KEY=VALUE pairs over the SAK defaults -> TrainConfig (unknown keys: one clear error)."""
    from genba.settings import parse_set_pairs
    from genba.train import TrainConfig

    values = parse_set_pairs(pairs)  # the one --set parser
    bad = [k for k in values if not k.startswith("train.")]
    if bad:
        raise GenbaError(f"--set takes train.KEY=VALUE, got '{bad[0]}=...'")
    overrides = {k[len("train."):]: v for k, v in values.items()}
    return TrainConfig(**{**DEFAULTS, "seed": seed}).replace(**overrides)


def _cache(args):
    from genba.cache import TensorCache

    return None if args.no_cache else TensorCache(args.cache_dir)


def _splits(args, distill: bool):
    """{'train', 'val' (, 'test')} SceneSets from --data."""
    import numpy as np

    from genba.sak.scenes import SceneSet, make_splits

    if args.data == "scenes":
        return make_splits({"train": args.train, "val": args.val, "test": args.test})
    if args.data.startswith("folder:"):
        from genba.sak.folder import load_mask_folder

        root = Path(args.data[len("folder:"):])
        if (root / "images").is_dir() or (root / "masks").is_dir() or not distill:
            full = load_mask_folder(root)
            if len(full) < 2:
                raise GenbaError(f"'{root}' needs at least 2 images with masks (train and validation)")
            order = np.random.default_rng(0).permutation(len(full))
            cut = max(1, int(round(0.8 * len(full))))
            return {name: _subset(full, order[a:b], name) for name, (a, b) in
                    (("train", (0, cut)), ("val", (cut, len(full))))}
    if not distill:
        raise GenbaError(f"`genba sak train` needs dense labels: --data scenes or folder:<dir> with images/ and masks/, got '{args.data}'")
    from genba.data import load_dataset

    import torch
    from PIL import Image

    dataset = load_dataset(args.data)
    parts = {}
    for name, split in (("train", "train"), ("val", "test")):
        idx = dataset.splits[split]
        pics = [np.asarray(dataset.image(int(i)).resize((64, 64), Image.BILINEAR), dtype=np.uint8) for i in idx]
        images = torch.from_numpy(np.stack(pics)).permute(0, 3, 1, 2).contiguous()
        zeros = torch.zeros(images.shape[0], 64, 64, dtype=torch.uint8)
        parts[name] = SceneSet(f"{dataset.name}:{split}", images, zeros.long(), zeros, zeros, None, ["background"],
                               f"unlabeled images of {dataset.name} ({split}) for distillation")
    return parts


def _subset(full, idx, name):
    from dataclasses import replace

    idx = __import__("torch").as_tensor(idx)
    return replace(full, name=f"{full.name}:{name}", images=full.images[idx], semantic=full.semantic[idx],
                   boundary=full.boundary[idx], saliency=full.saliency[idx], depth=None, fingerprint="")


def cmd_distill(args) -> int:
    from genba.report import write_json
    from genba.sak import pipeline as P

    config = _train_config(args.set, args.seed)
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()]
    if not teachers:
        raise GenbaError("--teachers is empty: name at least one teacher")
    if args.variant not in P.VARIANTS:
        raise GenbaError(f"unknown variant '{args.variant}': choose one of {', '.join(P.VARIANTS)}")
    splits = _splits(args, distill=True)
    targets, info, provenance = P.prepare_targets({k: splits[k] for k in ("train", "val")}, teachers, _cache(args))
    tasks = P.task_channels(splits["train"]) if args.data == "scenes" or args.data.startswith("folder:") else {}
    model = P.build_student(args.variant, info, tasks, stem=args.stem)
    cache = _cache(args)
    result = P.train_stage(model, P.model_tensors(model, splits["train"], targets["train"], cache),
                           P.model_tensors(model, splits["val"], targets["val"], cache),
                           config, stage=1, teachers=teachers, tasks=[], checkpoint_dir=args.out / "checkpoint",
                           resume=args.resume, progress=not args.quiet, desc="sak distill")
    extra = {"stage": 1, "teachers": provenance, "data": args.data}
    P.save_student(args.out, model, extra)
    write_json(args.out / "report.json", {**extra, "train": config.to_dict(), "val_loss": -(result.best_score or 0.0),
                                          "history": result.history})
    print(f"stage 1 ({args.variant}): {len(teachers)} teachers distilled on {len(splits['train'])} images; "
          f"best validation distillation loss {-(result.best_score or 0.0):.4f}; model in {args.out}")
    return 0


def cmd_train(args) -> int:
    from genba.report import markdown_table, write_json
    from genba.sak import pipeline as P

    config = _train_config(args.set, args.seed)
    model, extra = P.load_student(args.init)
    splits = _splits(args, distill=False)
    tasks = P.task_channels(splits["train"])
    if dict(model.cfg.tasks) != tasks:  # new heads for these tasks / classes (stage 1 ran on other data)
        fresh = P.SAKStudent(P.StudentConfig(**{**model.cfg.to_dict(), "tasks": tasks}))
        fresh.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(("heads.", "routers."))}, strict=False)
        model = fresh
    teachers = list(model.cfg.teachers)
    targets, info, _ = P.prepare_targets(splits, teachers, _cache(args))
    if any(info[t] != list(model.cfg.teachers[t]) for t in teachers):
        raise GenbaError(f"the teachers' maps differ from the ones stage 1 distilled ({info} vs {model.cfg.teachers})")
    cache = _cache(args)
    P.train_stage(model, P.model_tensors(model, splits["train"], targets["train"], cache),
                  P.model_tensors(model, splits["val"], targets["val"], cache), config, stage=2,
                  teachers=teachers, tasks=list(tasks), distill_weight=args.distill_weight,
                  class_weights=P.class_weights(splits["train"]) if args.class_balance == "median" else None,
                  checkpoint_dir=args.out / "checkpoint", resume=args.resume, progress=not args.quiet, desc="sak train")
    evaluated = "test" if "test" in splits else "val"
    metrics, gates = P.evaluate(model, splits[evaluated])
    info_out = {**extra, "stage": 2, "classnames": splits["train"].classnames, "data": args.data}
    P.save_student(args.out, model, info_out)
    write_json(args.out / "report.json", {**info_out, "train": config.to_dict(), "split": evaluated,
                                          "metrics": metrics, "gates": gates})
    print(markdown_table(["split", *metrics], [[evaluated, *[round(v, 3) for v in metrics.values()]]]))
    print(f"model in {args.out}")
    return 0


def cmd_eval(args) -> int:
    from genba.report import markdown_table, write_json
    from genba.sak import pipeline as P

    model, extra = P.load_student(args.model)
    if args.data == "scenes":
        from genba.sak.scenes import make_scenes

        scenes = make_scenes("test", args.test)
    elif args.data.startswith("folder:"):
        from genba.sak.folder import load_mask_folder

        scenes = load_mask_folder(args.data[len("folder:"):], size=model.cfg.image_size)
    else:
        raise GenbaError(f"`genba sak eval` needs dense labels: --data scenes or folder:<dir>, got '{args.data}'")
    classes = model.cfg.tasks.get("semantic")
    if classes is not None and int(scenes.semantic.max()) >= classes:
        raise GenbaError(f"the masks hold class id {int(scenes.semantic.max())} but the model segments {classes} classes "
                         "(background included): evaluate on data with the classes it was trained on")
    metrics, gates = P.evaluate(model, scenes)
    print(markdown_table(["data", "images", *metrics], [[args.data, len(scenes), *[round(v, 3) for v in metrics.values()]]]))
    if args.json:
        write_json(args.json, {"data": args.data, "images": len(scenes), "metrics": metrics, "gates": gates})
    return 0


def cmd_predict(args) -> int:
    import numpy as np
    import torch
    from PIL import Image

    from genba.data.user import IMAGE_EXTENSIONS
    from genba.sak import pipeline as P

    model, extra = P.load_student(args.model)
    if not model.cfg.tasks:
        raise GenbaError(f"the model in '{args.model}' has no task heads (stage 1 only): run `genba sak train` first")
    files = [args.images] if args.images.is_file() else sorted(
        p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS) if args.images.is_dir() else []
    if not files:
        raise GenbaError(f"no images at '{args.images}': pass an image file or a folder of images")
    size = model.cfg.image_size
    args.out.mkdir(parents=True, exist_ok=True)
    for path in files:
        try:
            with Image.open(path) as im:
                pic = im.convert("RGB")
        except OSError as error:
            raise GenbaError(f"cannot read image '{path}' ({error})") from None
        x = torch.from_numpy(np.array(pic.resize((size, size), Image.BILINEAR), dtype=np.uint8)).permute(2, 0, 1)[None]
        outputs, _ = P.predict_outputs(model, x)
        maps = {}
        if "semantic" in outputs:
            maps["semantic"] = outputs["semantic"][0].argmax(0).to(torch.uint8)  # class ids
        for task in ("boundary", "saliency"):
            if task in outputs:
                maps[task] = (outputs[task][0, 0].sigmoid() * 255).round().to(torch.uint8)
        if "depth" in outputs:
            maps["depth"] = (outputs["depth"][0, 0].clamp(0, 1) * 255).round().to(torch.uint8)
        for task, m in maps.items():
            img = Image.fromarray(m.numpy(), mode="L").resize(pic.size, Image.NEAREST if task == "semantic" else Image.BILINEAR)
            img.save(args.out / f"{path.stem}_{task}.png")
    (args.out / "classes.json").write_text(json.dumps(extra.get("classnames", []), indent=2) + "\n")
    print(f"wrote {len(files)} x {len(model.cfg.tasks)} PNGs to {args.out} (semantic = class ids, see classes.json; "
          "boundary / saliency = probability x 255; depth x 255, larger = farther)")
    return 0
