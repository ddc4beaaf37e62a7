"""`genba continual`: argument parsing and printing only; genba.continual.protocol does the work.

    genba continual --stream textile,fashion-mnist,digits --method replay --setting xtail --seed 0 \
        [--encoder conse] [--control animal-mnist] [--set buffer_size=200 --set train.lr=1e-3] [--json out.json]

Everything (stream, datasets, features, method, hyperparameters, settings) is checked before
the first weight is trained or the first file written; a bad input prints one
`genba: error: ...` line (exit 2) and leaves no checkpoint or buffer behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

SETTINGS = ("mtil", "xtail")


def register_cli(commands, common) -> None:
    p = commands.add_parser("continual", parents=[common], help="continual learning over a stream of tasks",
                            description="Train one continual method task by task over a stream and print the "
                                        "accuracy matrix (zero-shot row first) and the metrics.")
    p.add_argument("--stream", required=True,
                   help="comma-separated tasks: datasets, class subsets name[0-4] or name[c1|c2] (optionally xK: K "
                        "training images per class), class-incremental name#N, folder:<dir>, csv:<file>")
    p.add_argument("--strategy", "--method", dest="method", required=True,
                   help="continual strategy, a registered one (genba.continual.strategies; an unknown name, or one "
                        "the learner cannot run, lists the ones that work); --method is its older spelling")
    p.add_argument("--setting", choices=SETTINGS, default="mtil",
                   help="mtil: task id known, each task among its own classes; xtail: no task id, union label space")
    p.add_argument("--seed", type=int, default=0, help="seed of validation split, caps, batches (default 0)")
    p.add_argument("--encoder", default="conse", help="encoder spec (default conse; hf:<dir> for a CLIP checkpoint)")
    p.add_argument("--control", default=None,
                   help="control task never in the stream (default: the first built-in dataset not in it; 'none')")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method hyperparameter (e.g. buffer_size=200) or a training setting (train.lr=1e-3)")
    p.add_argument("--select", choices=("fixed", "first-task"), default="fixed",
                   help="fixed hyperparameters, or train.lr chosen on the FIRST task's validation split")
    p.add_argument("--hidden", type=int, default=0, help="adapter bottleneck width (0: linear adapter)")
    p.add_argument("--trunk", default=None, metavar="BACKBONE:STAGE",
                   help="also train the trunk's stages after STAGE from cached activations, e.g. "
                        "efficientnet-lite0:block14 (the conse encoder's own network)")
    p.add_argument("--trunk-size", type=int, default=224, help="input size of the trunk activations (default 224)")
    p.add_argument("--lora", type=int, default=None, metavar="RANK",
                   help="train LoRA (peft) of this rank on an hf: CLIP image tower, on images (keep the stream "
                        "small with --max-*-per-class)")
    p.add_argument("--val-per-class", type=int, default=16, help="validation rows per class carved from train")
    p.add_argument("--max-train-per-class", type=int, default=None, help="cap training rows per class (seeded)")
    p.add_argument("--max-test-per-class", type=int, default=None, help="cap test rows per class (seeded)")
    p.add_argument("--out", type=Path, default=None, help="directory for checkpoints, the replay buffer and the "
                   "trained model (DIR/model.genba: `genba predict --model DIR`)")
    p.add_argument("--resume", action="store_true", help="continue a killed run in --out")
    p.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    p.set_defaults(run=cmd_continual)


def _split_sets(pairs: list[str]):
    from genba.settings import parse_set_pairs

    values = parse_set_pairs(pairs)
    train = {k[len("train."):]: v for k, v in values.items() if k.startswith("train.")}
    method = {k: v for k, v in values.items() if not k.startswith("train.")}
    return method, train


def prepare(args):
    """Everything checked and loaded before training: (stream, reference, spec), through
    genba.continual.inputs (the same function bench scripts call); --out / --resume checked here."""
    from genba.cache import TensorCache
    from genba.continual.inputs import StreamInputs, load_inputs
    from genba.continual.protocol import DEFAULT_TRAIN, ContinualSpec
    from genba.errors import GenbaError

    method_hp, train_hp = _split_sets(args.set)
    spec = ContinualSpec(method=args.method, hyperparameters=method_hp, settings=(args.setting,), seed=args.seed,
                         train=DEFAULT_TRAIN.replace(**train_hp), hidden=args.hidden, select=args.select)
    spec.validate()  # unknown method / hyperparameter / setting: before any data is read
    if args.out is not None and not args.resume and args.out.exists() and any(args.out.iterdir()):
        raise GenbaError(f"{args.out} is not empty: pass --resume to continue that run, or choose a new --out")
    if args.resume and args.out is None:
        raise GenbaError("--resume needs --out (the directory of the run to continue)")
    inputs = StreamInputs(stream=args.stream, encoder=args.encoder, control=args.control, seed=args.seed,
                          val_per_class=args.val_per_class, max_train_per_class=args.max_train_per_class,
                          max_test_per_class=args.max_test_per_class, trunk=args.trunk, trunk_size=args.trunk_size,
                          lora=args.lora, progress=not args.quiet)
    stream, reference = load_inputs(inputs, spec, None if args.no_cache else TensorCache(args.cache_dir))
    return stream, reference, spec


def format_result(result: dict, setting: str) -> str:
    from genba.report import markdown_table

    block = result["settings"][setting]
    names = result["stream"]
    rows = [["zero-shot" if j == 0 else f"after {names[j - 1]}"] + [f"{a:.1f}" for a in row]
            for j, row in enumerate(block["accuracy_matrix"])]
    m = block["metrics"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    keys = ["transfer", "avg", "last", "bwt", "fwt", "forgetting", "control_before", "control_after", "ece"]
    m = {"ece": None, **m}  # results written before ECE existed
    cost = result["cost"]
    drift = block["drift"][-1]
    lines = [f"# {result['method']} ({setting}), seed {result['seed']}, control: {result['control'] or 'none'}", "",
             markdown_table(["step \\ task"] + names, rows), "",
             markdown_table(keys, [[fmt(m[k]) for k in keys]]), "",
             markdown_table(["alignment (end)", "CKA vs initial (end)", "train s", "learn ms/img", "score ms/img",
                             "trainable params", "extra bytes"],
                            [[f"{drift['alignment']:.3f}", f"{drift['cka']:.3f}", f"{cost['seconds']:.1f}",
                              fmt(cost.get("learn_ms_per_image")), fmt(m.get("ms_per_image")),
                              cost["trainable_parameters"], cost["extra_bytes"]]]), "",
             f"hyperparameters: {result['hyperparameters']['method']}; train.lr={result['hyperparameters']['train']['lr']}"
             f", epochs={result['hyperparameters']['train']['epochs']}; selected_on: {result['selected_on']}"]
    return "\n".join(lines)


def flatten(result: dict, setting: str) -> dict:
    """The CLI's JSON: the issue's keys at the top (accuracy_matrix, metrics, hyperparameters, selected_on)."""
    block = result["settings"][setting]
    out = {"setting": setting, "accuracy_matrix": block["accuracy_matrix"], "metrics": block["metrics"],
           "drift": block["drift"], "hyperparameters": result["hyperparameters"], "selected_on": result["selected_on"]}
    out.update({k: v for k, v in result.items() if k not in ("settings", "hyperparameters", "selected_on")})
    return out


def cmd_continual(args) -> int:
    from genba.continual.protocol import run_continual
    from genba.report import write_json

    stream, reference, spec = prepare(args)
    created = args.out is not None and not args.out.exists()
    keep: dict = {}
    try:
        result = run_continual(stream, reference, spec, out_dir=args.out, resume=args.resume, progress=not args.quiet,
                               keep=keep)
    except BaseException:
        if created and args.out.exists():  # a fresh run that failed leaves nothing behind
            shutil.rmtree(args.out)
        raise
    print(format_result(result, args.setting))
    if args.out is not None and not args.trunk and args.lora is None:
        from genba.encoders import load_encoder
        from genba.model.base import MODEL_FILE, save_model
        from genba.model.kinds.continual import from_run

        caps = (args.max_train_per_class, args.max_test_per_class)
        model = from_run(result, keep["learner"], stream, encoder=load_encoder(args.encoder), encoder_spec=args.encoder,
                         stream_items=[t.name for t in stream.tasks], setting=args.setting, seed=args.seed,
                         val_per_class=args.val_per_class, caps=caps)
        path = save_model(model, args.out / MODEL_FILE)
        print(f"model: {path} (kind continual); try `genba predict --model {path} --images DIR`")
    if args.json:
        write_json(args.json, flatten(result, args.setting))
    return 0
