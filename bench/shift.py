"""Shift scenario: test-time adaptation of a source classifier to corrupted test streams.

    python bench/shift.py [--datasets digits] [--n-test 500] [--seed 0] [--severities 1 3 5]

Per dataset, on encoder visual features centred on the mean of the clean train split and
L2-normalised: a clean validation stream (`--val-per-class` per class) is carved from train;
the source classifier is softmax(T cos(q, prototype_c)), prototype_c = normalize(mean of the
other clean train features of class c), T temperature-calibrated (NLL) on clean validation.
The test stream, a seeded subset (`--n-test`) of the test split, is scored clean and under
each ImageNet-C-style corruption (genba.data.corruptions) and severity, features coming from
extract_features with the corruption transform and the cache. Prototypes are the methods'
`text_classifier` and the centred features their `Feats(joint=...)`, so DMN reads each
prototype as its class's anchor row; scale = T for every method. Rows, streamed in one seeded
order: "source", tda and dmn-zs with paper defaults, each with the collapse guard off (paper)
and on (GUARD, fixed before any test run), and "(val)" variants whose selection_grid point is
chosen on the clean validation stream. Test labels only score. Writes <out>.md, .json, .png.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, base_parser, command_line, installed_datasets

from genba.cache import TensorCache
from genba.data import load_dataset, train_val_split
from genba.data.corruptions import corruption_names, corruption_transform
from genba.encoders import l2_normalize, load_encoder
from genba.features import extract_features
from genba.methods import Feats, create_method, get_method, select_on_val
from genba.methods.prototypes import calibrate_temperature, class_prototypes
from genba.report import markdown_table, write_json

# Chosen before any corrupted test stream was run: the prior correction targets the failure
# this scenario provokes (a corruption moves every feature the same way, so the source
# classifier favours one class) and is the guard module's documented example value.
GUARD = {"guard_prior": 0.02}
GUARD_VARIANTS = [{"guard_prior": 0.02}, {"guard_balance": 2.0}, {"guard_max_entropy": 0.5}]  # clean-val table only
BASE = [("source", "zeroshot", {}), ("tda", "tda", {}), ("tda+guard", "tda", GUARD),
        ("dmn-zs", "dmn-zs", {}), ("dmn-zs+guard", "dmn-zs", GUARD)]
SELECTED = [("tda (val)", "tda", {}), ("tda+guard (val)", "tda", GUARD),
            ("dmn-zs (val)", "dmn-zs", {}), ("dmn-zs+guard (val)", "dmn-zs", GUARD)]
METHODS = [m for m, _, _ in BASE + SELECTED]


def stream_subset(dataset, n: int, seed: int):
    """A dataset copy with one extra split: n test indices drawn with `seed` (name holds a digest)."""
    test = dataset.splits["test"]
    idx = np.sort(np.random.default_rng([seed, 7]).choice(test, size=min(n, len(test)), replace=False))
    subset, split = dataset.with_subset_split("test", idx, label="shift-test")
    return subset, split, idx


def run(name: str, protos, q: torch.Tensor, order, overrides: dict) -> torch.Tensor:
    """Fit method `name` on the prototypes, stream q (N, D) in `order`; predicted classes (N,)."""
    method = create_method(name, **overrides)
    method.fit(protos)
    return method.predict_stream(Feats(q), order).argmax(1)


def prepare(encoder, cache, name: str, args) -> dict:
    """Clean train split -> centre, validation stream, prototypes, selected hyperparameters."""
    ds = load_dataset(name)
    train = extract_features(encoder, ds, "train", cache=cache, progress=False)
    centre = train.visual.mean(0)
    x = l2_normalize(train.visual - centre)  # (N, Dv) centred, unit rows
    pool, val = (train.rows_of(part) for part in train_val_split(ds, val_per_class=args.val_per_class, seed=args.seed))
    protos = class_prototypes(x[pool], train.labels[pool], ds.num_classes)
    vq, vy, cos = Feats(x[val]), train.labels[val], x[val] @ protos.T
    scale = {"scale": calibrate_temperature(cos, vy)}
    saturated = [100.0 * ((t * cos).softmax(-1).amax(1) > 0.99).float().mean().item() for t in (100.0, scale["scale"])]
    val_order = np.random.default_rng([args.seed, 1]).permutation(len(val))
    chosen, tables = {}, {}
    for label, method, base in SELECTED:
        config, table = select_on_val(method, get_method(method).selection_grid, {"text_classifier": protos}, vq, vy,
                                      base={**base, **scale}, order=val_order)
        chosen[label] = {k: getattr(config, k) for k in get_method(method).selection_grid}
        tables[label] = table
    guard_val = {}
    for method in ("tda", "dmn-zs"):
        for g in [{}] + GUARD_VARIANTS:
            pred = run(method, protos, x[val], val_order, {**g, **scale})
            guard_val[f"{method} {g or 'off'}"] = 100.0 * (pred == vy).float().mean().item()
    guard_val["source"] = 100.0 * (run("zeroshot", protos, x[val], None, scale) == vy).float().mean().item()
    return {"ds": ds, "centre": centre, "protos": protos, "chosen": chosen, "tables": tables,
            "guard_val": guard_val, "n_val": len(val), "scale": scale, "saturated": saturated}


def evaluate(encoder, cache, name: str, args) -> dict:
    """Every condition x method on one dataset; returns its JSON record."""
    p = prepare(encoder, cache, name, args)
    ds = p["ds"]
    split_ds, split, idx = stream_subset(ds, args.n_test, args.seed)
    order = np.random.default_rng([args.seed, 2]).permutation(len(idx))
    overrides = {m: {**o, **p["scale"]} for m, _, o in BASE} | {
        m: {**o, **p["scale"], **p["chosen"][m]} for m, _, o in SELECTED}
    registered = {m: r for m, r, _ in BASE + SELECTED}
    conditions = [("clean", 0)] + [(c, s) for c in args.corruptions for s in args.severities]
    rows = []
    for corruption, severity in conditions:
        start = time.perf_counter()
        if corruption == "clean":  # the cached clean test split, restricted to the stream's images
            full = extract_features(encoder, ds, "test", cache=cache, progress=False)
            feats = full.subset(full.rows_of(idx))
        else:
            feats = extract_features(encoder, split_ds, split, cache=cache, progress=False,
                                     transform=corruption_transform(corruption, severity))
        seconds_features = time.perf_counter() - start
        q, y = l2_normalize(feats.visual - p["centre"]), feats.labels
        for label in METHODS:
            start = time.perf_counter()
            pred = run(registered[label], p["protos"], q, order, overrides[label])
            rows.append({"corruption": corruption, "severity": severity, "method": label,
                         "top1": 100.0 * (pred == y).float().mean().item(),
                         "predicted_count": (count := torch.bincount(pred, minlength=ds.num_classes).tolist()),
                         "largest_class_share": 100.0 * max(count) / len(idx),
                         "seconds": time.perf_counter() - start, "seconds_features": seconds_features})
        print(f"{name} {corruption} s{severity}: source {rows[-len(METHODS)]['top1']:.1f}, features "
              f"{seconds_features:.1f}s", flush=True)
    return {"dataset": name, "n_test": len(idx), "test_indices_sha256": hashlib.sha256(idx.tobytes()).hexdigest(),
            "true_count": np.bincount(ds.labels[idx], minlength=ds.num_classes).tolist(),
            "n_val": p["n_val"], "scale_T": p["scale"]["scale"], "saturated_val_at_100_and_T": p["saturated"],
            "hyperparameters": {m: overrides[m] for m in METHODS},
            "selection_tables": p["tables"], "guard_on_clean_val": p["guard_val"], "results": rows}


def mean_top1(records, method, severity, datasets=None, key="top1") -> float:
    """Mean of `key` over datasets and corruptions (severity 0 = clean) for one method."""
    vals = [r[key] for d in records if datasets is None or d["dataset"] in datasets for r in d["results"]
            if r["method"] == method and r["severity"] == severity]
    return float(np.mean(vals))


def report(records, args, encoder, seconds) -> str:
    """The markdown report: summary tables first, then every condition, then the selections."""
    sev = [0] + list(args.severities)
    head = ["method"] + [("clean" if s == 0 else f"sev {s}") for s in sev]
    main = [[m] + [mean_top1(records, m, s) for s in sev] for m in METHODS]
    delta = [[m] + [mean_top1(records, m, s) - mean_top1(records, "source", s) for s in sev] for m in METHODS[1:]]
    collapse = [[m] + [mean_top1(records, m, s, key="largest_class_share") for s in sev] for m in METHODS]
    true_share = np.mean([100.0 * max(d["true_count"]) / d["n_test"] for d in records])
    per_ds = "\n\n".join(f"### {d['dataset']} (mean over corruptions)\n\n" + markdown_table(
        head, [[m] + [mean_top1(records, m, s, {d["dataset"]}) for s in sev] for m in METHODS]) for d in records)
    full = []
    for d in records:
        for c in ["clean"] + list(args.corruptions):
            for s in ([0] if c == "clean" else args.severities):
                by = {r["method"]: r["top1"] for r in d["results"] if r["corruption"] == c and r["severity"] == s}
                full.append([d["dataset"], c, s] + [by[m] for m in METHODS])
    hyper = [[d["dataset"], m, ", ".join(f"{k}={v}" for k, v in d["hyperparameters"][m].items()) or "defaults"]
             for d in records for m, _, _ in SELECTED]
    gval = [[g] + [d["guard_on_clean_val"][g] for d in records] for g in records[0]["guard_on_clean_val"]]
    temps = ", ".join(f"{d['dataset']} {d['scale_T']:.1f}" for d in records)
    sat = np.mean([d["saturated_val_at_100_and_T"] for d in records], axis=0)
    wins = [f"sev {s}: {mean_top1(records, 'dmn-zs', s) - mean_top1(records, 'source', s):+.1f}" for s in sev[1:]]
    return "\n\n".join([
        f"# Shift scenario: test-time adaptation under corruptions, encoder `{args.encoder}`",
        f"Command: `{command_line()}`", f"Encoder provenance: `{encoder.provenance}`",
        f"Datasets: {', '.join(d['dataset'] for d in records)}; test stream: {args.n_test} seeded test images "
        f"per dataset (seed {args.seed}), clean and under {', '.join(args.corruptions)} at severities "
        f"{', '.join(map(str, args.severities))}; one seeded stream order per dataset. Source classifier: class "
        f"prototypes of centred clean train features ({args.val_per_class} per class held out as the clean "
        f"validation stream); logit scale T calibrated on it: {temps}. Guard (fixed in advance): "
        f"`{GUARD}`. Paper-default rows use fixed hyperparameters (with scale T); "
        f"'(val)' rows select the grid on the clean validation stream. Total time {seconds / 60:.1f} min.",
        f"Why T and not CLIP's 100: at 100, {sat[0]:.0f}% of clean validation queries get a source top "
        f"probability above 0.99 (at T: {sat[1]:.0f}%): entropies and the softmax fusion saturate "
        f"and the memories can barely move a prediction. dmn-zs minus source, mean over corruptions "
        f"and datasets: {', '.join(wins)} points.",
        "## Top-1 (%), mean over datasets and corruptions\n\n" + markdown_table(head, main),
        "## Difference to the source classifier (points)\n\n" + markdown_table(head, delta),
        "## Share of the most-predicted class (%), mean over datasets and corruptions\n\n"
        f"(a collapse indicator; the true largest-class share of the streams averages {true_share:.1f}%)\n\n"
        + markdown_table(head, collapse),
        "## Per dataset\n\n" + per_ds,
        "## Every dataset x corruption x severity (top-1 %)\n\n"
        + markdown_table(["dataset", "corruption", "severity"] + METHODS, full),
        "## Hyperparameters selected on the clean validation stream\n\n"
        + markdown_table(["dataset", "method", "selected"], hyper),
        "## Guard variants on the clean validation stream (top-1 %, informational)\n\n"
        + markdown_table(["variant"] + [d["dataset"] for d in records], gval),
    ]) + "\n"


def plot(records, args, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sev = [0] + list(args.severities)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in METHODS:
        ax.plot(sev, [mean_top1(records, m, s) for s in sev], marker="o", label=m,
                linestyle="--" if "(val)" in m else "-", linewidth=2.5 if m == "source" else 1.5)
    ax.set_xticks(sev, ["clean"] + [str(s) for s in args.severities])
    ax.set(xlabel="corruption severity", ylabel="top-1 (%), mean over corruptions and datasets",
           title=f"Shift scenario ({', '.join(d['dataset'] for d in records)})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--severities", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--corruptions", nargs="+", default=corruption_names())
    parser.add_argument("--out", default=str(RESULTS / "shift"), help="result path stem (default %(default)s)")
    args = parser.parse_args()
    [corruption_transform(c, s) for c in args.corruptions for s in args.severities]  # bad names fail now
    start = time.perf_counter()
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    records = [evaluate(encoder, cache, name, args) for name in installed_datasets(args.datasets)]
    seconds = time.perf_counter() - start
    text = report(records, args, encoder, seconds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    write_json(out.with_suffix(".json"), {"command": command_line(), "encoder": encoder.provenance, "guard": GUARD,
                                          "seed": args.seed, "seconds": seconds, "datasets": records})
    plot(records, args, out.with_suffix(".png"))
    print(text)


if __name__ == "__main__":
    main()
