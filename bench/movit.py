"""MoViT bench: accuracy vs training fraction, ablations, prototype vs full-memory cost.

    python bench/movit.py                       # 4 sets, fractions 1/3/10/30/100 %, seeds 0 1 2
                                                # (seed 0 at every fraction, seeds 1 2 at <= 10%: time)
    python bench/movit.py --datasets digits --seeds 0 --fractions 0.1   # a quick look

Per set, seed and fraction (nested class-stratified, genba.movit.data), test on the full test split:
  scratch: MoViT (small ViT + memory) vs the same ViT without memory, same step budget;
  head:    MoViT head vs the same head without memory over frozen EfficientNet-Lite0 tokens
           (final map at 96 px, 3x3x1280), a linear probe and DMN-TF on the same frozen features
           (pooled tokens as DMN's cache space, ConSE joint features for its text logits).
Ablations (scratch, --ablation-set, 3% and 10%): EMA off (alpha = 1, overwrite), memory size,
top-k; "no prototypes" is the full-memory read of every MoViT run (the same trained model).
Cost: one MoViT with a large memory (--cost-capacity slots per layer) trained on the full
--cost-set split; test inference time with prototypes vs the full memory, same model, same run.
Every hyperparameter is fixed in advance (genba.movit defaults); nothing is chosen on test.
Writes bench/results/movit.md, movit.json, movit_fraction.png.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, base_parser, command_line, installed_datasets  # noqa: E402

from genba.cache import TensorCache  # noqa: E402
from genba.data import load_dataset  # noqa: E402
from genba.movit.data import default_image_size, fraction_indices, is_gray, load_pixels  # noqa: E402
from genba.movit.run import Inputs, RunSpec, run_movit  # noqa: E402

FRACTIONS = [0.01, 0.03, 0.1, 0.3, 1.0]
ABLATIONS = {"EMA off (alpha=1)": {"mem.alpha": 1.0}, "memory 32": {"mem.capacity": 32},
             "memory 128": {"mem.capacity": 128}, "top-k 4": {"mem.topk": 4}, "top-k 64": {"mem.topk": 64}}
HEAD_MODEL = {"model.depth": 2}


def timed_accuracy(model, x, y, prototypes: bool, repeats: int = 1) -> tuple[float, float]:
    """(accuracy, best-of-`repeats` seconds) of test inference with prototypes or the full memory."""
    model.use_prototypes(prototypes)
    best, acc = float("inf"), 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = model.predict_logits(x).argmax(1)
        best = min(best, time.perf_counter() - t0)
        acc = float((pred == y).float().mean())
    model.use_prototypes(True)
    return acc, best


class SetData:
    """Everything one dataset needs, loaded once: pixels, head tokens, ConSE features."""

    def __init__(self, name: str, cache: TensorCache, head: bool):
        self.ds = ds = load_dataset(name)
        self.train_split = ds.splits["train"]
        self.y_test = torch.as_tensor(ds.labels[ds.splits["test"]])
        size, patch = default_image_size(ds)
        ch = 1 if is_gray(ds, self.train_split) else 3
        self.px_train = load_pixels(ds, self.train_split, size, ch, cache, split="train")
        self.px_test = load_pixels(ds, ds.splits["test"], size, ch, cache, split="test")
        self.px_fields = dict(stem="patch", image_size=size, patch=patch, channels=ch)
        self.px_input = f"pixels:{size}x{size}x{ch}"
        self.head = head
        if head:
            from genba.encoders import load_encoder
            from genba.features import extract_features
            from genba.movit.head import head_tokens
            from genba.zeroshot import cached_text_classifier

            self.tok_train, self.tok_input = head_tokens(ds, "train", "efficientnet-lite0", 96, cache, False)
            self.tok_test, _ = head_tokens(ds, "test", "efficientnet-lite0", 96, cache, False)
            enc = load_encoder("conse")
            self.conse_train = extract_features(enc, ds, "train", cache=cache, progress=False).image
            self.conse_test = extract_features(enc, ds, "test", cache=cache, progress=False).image
            self.text = cached_text_classifier(enc, ds.classnames, ds.templates, cache)

    def rows(self, ids: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.searchsorted(self.train_split, ids))

    def inputs(self, ids: np.ndarray, setting: str) -> Inputs:
        r = self.rows(ids)
        if setting == "scratch":
            return Inputs(self.px_train[r], self.px_test, self.px_input, self.px_fields, {})
        return Inputs(self.tok_train[r], self.tok_test, self.tok_input,
                      dict(stem="tokens", token_dim=int(self.tok_train.shape[2]), num_tokens=int(self.tok_train.shape[1])),
                      {})


def probe_and_dmn(sd: SetData, ids: np.ndarray, seed: int) -> dict:
    """Linear probe and DMN-TF on the pooled frozen tokens of the fraction."""
    from genba.memory.read import l2_normalize
    from genba.methods import create_method
    from genba.methods.base import Feats
    from genba.movit.head import linear_probe
    from genba.movit.train import step_budget, train_config

    r = sd.rows(ids)
    y = torch.as_tensor(sd.ds.labels[ids])
    cfg = train_config(len(r), step_budget(len(r)), seed, {"weight_decay": 1e-4})
    t0 = time.perf_counter()
    pred = linear_probe(sd.tok_train[r], y, sd.tok_test, sd.ds.num_classes, cfg)
    out = {"probe": float((pred == sd.y_test).float().mean()), "probe_seconds": time.perf_counter() - t0}
    pooled_train = sd.tok_train[r].float().mean(1)
    centre = pooled_train.mean(0)
    method = create_method("dmn-tf", stream_batch=64)
    t0 = time.perf_counter()
    method.fit(sd.text, Feats(sd.conse_train[r], l2_normalize(pooled_train - centre)), y)
    order = np.random.default_rng(seed).permutation(len(sd.y_test))
    probs = method.predict_stream(Feats(sd.conse_test, l2_normalize(sd.tok_test.float().mean(1) - centre)), order)
    out.update(dmn_tf=float((probs.argmax(1) == sd.y_test).float().mean()), dmn_seconds=time.perf_counter() - t0)
    return out


def main_runs(sd: SetData, seed: int, fractions: list[float], head: bool, record) -> dict:
    """MoViT vs no memory (scratch and head), probe and DMN-TF, for one set and seed."""
    hyper = {}
    for frac in fractions:
        ids = fraction_indices(sd.ds.labels, sd.train_split, frac, seed, sd.ds.classnames)
        for setting in ["scratch"] + (["head"] if head else []):
            over = HEAD_MODEL if setting == "head" else {}
            x_test = sd.px_test if setting == "scratch" else sd.tok_test
            for memory in (True, False):
                spec = RunSpec(sd.ds.name, frac, setting, seed, memory=memory, overrides=over)
                res, model = run_movit(spec, dataset=sd.ds, inputs=sd.inputs(ids, setting))
                extra = {k: res[k] for k in ("test_accuracy", "n_train", "steps", "epochs", "seconds_train",
                                             "memory_bytes_full", "memory_bytes_prototypes")}
                if memory:
                    acc_p, t_p = timed_accuracy(model, x_test, sd.y_test, True)
                    acc_f, t_f = timed_accuracy(model, x_test, sd.y_test, False)
                    extra.update(accuracy_full_memory=acc_f, seconds_test_prototypes=t_p, seconds_test_full=t_f,
                                 memory_filled=res["memory_slots_filled"])
                hyper[f"{setting}/{'movit' if memory else 'vit'}"] = res["hyperparameters"]
                record(setting, "movit" if memory else "vit", sd, frac, seed, extra)
        if head:
            record("head", "probe+dmn", sd, frac, seed, probe_and_dmn(sd, ids, seed))
    return hyper


def ablation_runs(sd: SetData, seed: int, fractions: list[float], record) -> None:
    for frac in fractions:
        ids = fraction_indices(sd.ds.labels, sd.train_split, frac, seed, sd.ds.classnames)
        for label, over in ABLATIONS.items():
            res, model = run_movit(RunSpec(sd.ds.name, frac, "scratch", seed, overrides=over), dataset=sd.ds,
                                   inputs=sd.inputs(ids, "scratch"))
            acc_f, _ = timed_accuracy(model, sd.px_test, sd.y_test, False)
            record("ablation", label, sd, frac, seed, {"test_accuracy": res["test_accuracy"], "accuracy_full_memory": acc_f})


def cost_run(sd: SetData, capacity: int, record) -> None:
    """One MoViT with a large memory on the full split: prototypes vs full memory, same model."""
    ids = fraction_indices(sd.ds.labels, sd.train_split, 1.0, 0, sd.ds.classnames)
    spec = RunSpec(sd.ds.name, 1.0, "scratch", 0, overrides={"mem.capacity": capacity, "mem.write": "all"})
    res, model = run_movit(spec, dataset=sd.ds, inputs=sd.inputs(ids, "scratch"))
    acc_p, t_p = timed_accuracy(model, sd.px_test, sd.y_test, True, repeats=2)
    acc_f, t_f = timed_accuracy(model, sd.px_test, sd.y_test, False, repeats=2)
    record("cost", f"movit capacity {capacity}, write all tokens", sd, 1.0, 0,
           {"test_accuracy": acc_p, "accuracy_full_memory": acc_f, "seconds_test_prototypes": t_p,
            "seconds_test_full": t_f, "speedup": t_f / t_p, "seconds_train": res["seconds_train"],
            "memory_filled": res["memory_slots_filled"], "memory_bytes_full": res["memory_bytes_full"],
            "memory_bytes_prototypes": res["memory_bytes_prototypes"], "n_test": len(sd.y_test)})


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="*", default=FRACTIONS)
    parser.add_argument("--full-seeds", type=int, default=1,
                        help="seeds (the first ones) run at every fraction; later seeds run the fractions <= 10%% only")
    parser.add_argument("--no-head", action="store_true", help="skip the head setting")
    parser.add_argument("--ablation-set", default="fashion-mnist")
    parser.add_argument("--ablation-fractions", type=float, nargs="*", default=[0.03, 0.1])
    parser.add_argument("--cost-set", default="fashion-mnist")
    parser.add_argument("--cost-capacity", type=int, default=32768)
    parser.add_argument("--out", default="movit")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from <out>_runs.jsonl")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from movit_report import write_report

    log = RESULTS / f"{args.out}_runs.jsonl"
    sets = installed_datasets(args.datasets)
    if args.report_only:
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        meta, hyper = rows[0], {}
        for r in rows:
            hyper.update(r.get("_hyper", {}))
        runs = [r for r in rows[1:] if "_hyper" not in r]
        wall = max((r["elapsed"] for r in runs), default=0.0)
        write_report(RESULTS, args.out, runs, meta["hyperparameters"] or hyper, meta["sets"], args, wall,
                     meta["command"] + "; tables rebuilt from its run log movit_runs.jsonl with --report-only")
        return
    cache = TensorCache(args.cache_dir)
    start = time.perf_counter()
    runs: list[dict] = []
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = log.open("w")

    def record(setting: str, method: str, sd: SetData, frac: float, seed: int, extra: dict) -> None:
        row = {"setting": setting, "method": method, "dataset": sd.ds.name, "fraction": frac, "seed": seed,
               "elapsed": time.perf_counter() - start, **extra}
        runs.append(row)
        out.write(json.dumps(row) + "\n")
        out.flush()
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    data = {name: SetData(name, cache, head=not args.no_head) for name in sets}
    hyper: dict = {}
    out.write(json.dumps({"command": command_line(), "sets": sets, "hyperparameters": None}) + "\n")
    for i, seed in enumerate(args.seeds):  # seed-major: an interrupted run still covers every set
        for name in sets:
            fractions = args.fractions if i < args.full_seeds else [f for f in args.fractions if f <= 0.1]
            hyper.update(main_runs(data[name], seed, fractions, not args.no_head, record))
            out.write(json.dumps({"_hyper": hyper}) + "\n")
        if i == 0 and args.cost_set in data:
            cost_run(data[args.cost_set], args.cost_capacity, record)
        if args.ablation_set in data:
            ablation_runs(data[args.ablation_set], seed, args.ablation_fractions, record)
    out.close()
    wall = time.perf_counter() - start
    write_report(RESULTS, args.out, runs, hyper, sets, args, wall, command_line())


if __name__ == "__main__":
    main()
