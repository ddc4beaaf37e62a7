"""DMN's dynamic-memory write label: the reference rule (zero-shot pseudo-label) against `final`
(the served prediction), on the few-shot protocol and on the shift scenario.

    python bench/write_label.py [--datasets digits textile] [--shots 1 2 4 8 16] [--seeds 0 1 2] \
        [--shift-corruptions gaussian_noise ...] [--shift-severities 3 5] [--n-test 500]

Few-shot: for every installed built-in (or --datasets), shot count and seed, `genba.adapt.run_adapt`
runs dmn-tf with paper defaults (select "fixed", so nothing is chosen on any label), once with
write_label=reference and once with write_label=final, on the same support, validation split
and seeded test stream; dmn-zs (0 shots) the same. Reported: top-1 per rule and the paired
difference final - reference (mean and sample std over seeds; "within noise" when |mean| is
below 2 standard errors, or with one seed).
Shift: bench/shift.py's protocol (centred visual features, calibrated prototypes as the text
classifier, a seeded test stream of --n-test images), dmn-zs and dmn-zs+guard under both rules,
clean and under each --shift-corruptions x --shift-severities.
Writes <--out>.json, then .md (default bench/results/write_label), with the command at the top.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, base_parser, command_line, installed_datasets

from genba.adapt import AdaptSpec, prepare, run_adapt
from genba.cache import TensorCache, atomic_write_bytes
from genba.data import load_dataset
from genba.data.corruptions import corruption_transform
from genba.encoders import l2_normalize, load_encoder
from genba.features import extract_features
from genba.report import markdown_table

RULES = ("reference", "final")


def few_shot(encoder, cache, name: str, shots: list[int], seeds: list[int]) -> list[dict]:
    ds = load_dataset(name)
    data = prepare(encoder, ds, cache=cache, progress=False)
    rows = []
    for k in [0, *shots]:
        method = "dmn-zs" if k == 0 else "dmn-tf"
        for seed in seeds:
            for rule in RULES:
                spec = AdaptSpec(method=method, shots=k, seed=seed, select="fixed", overrides={"write_label": rule})
                r = run_adapt(encoder, ds, spec, cache=cache, data=data, progress=False)
                rows.append({"dataset": name, "method": method, "shots": k, "seed": seed, "rule": rule, "top1": r["top1"],
                             "balanced": r.get("balanced_accuracy"), "predicted_count": r["predicted_count"],
                             "stream_seconds": r["stream_seconds"]})
                print(f"{name} {method} {k}-shot seed {seed} {rule}: {r['top1']:.2f}", flush=True)
    return rows


def shift(encoder, cache, name: str, args) -> list[dict]:
    import shift as bench_shift  # bench/shift.py: the same protocol and helpers

    class Options:  # what bench_shift.prepare reads
        val_per_class, seed = args.val_per_class, args.seeds[0]

    p = bench_shift.prepare(encoder, cache, name, Options)
    ds = p["ds"]
    split_ds, split, idx = bench_shift.stream_subset(ds, args.n_test, args.seeds[0])
    order = np.random.default_rng([args.seeds[0], 2]).permutation(len(idx))
    rows = []
    for corruption, severity in [("clean", 0)] + [(c, s) for c in args.shift_corruptions for s in args.shift_severities]:
        if corruption == "clean":
            full = extract_features(encoder, ds, "test", cache=cache, progress=False)
            feats = full.subset(full.rows_of(idx))
        else:
            feats = extract_features(encoder, split_ds, split, cache=cache, progress=False,
                                     transform=corruption_transform(corruption, severity))
        q, y = l2_normalize(feats.visual - p["centre"]), feats.labels
        for label, guard in (("dmn-zs", {}), ("dmn-zs+guard", bench_shift.GUARD)):
            for rule in RULES:
                pred = bench_shift.run("dmn-zs", p["protos"], q, order, {**guard, **p["scale"], "write_label": rule})
                rows.append({"dataset": name, "corruption": corruption, "severity": severity, "method": label, "rule": rule,
                             "top1": 100.0 * (pred == y).float().mean().item(),
                             "largest_class_share": 100.0 * torch.bincount(pred).max().item() / len(idx)})
        print(f"{name} shift {corruption} s{severity} done", flush=True)
    return rows


def paired(rows: list[dict], keys: tuple[str, ...]) -> list[list]:
    """Per group (keys without seed): mean top-1 per rule, final - reference mean +- std, verdict."""
    groups: dict = {}
    for r in rows:
        g = groups.setdefault(tuple(r[k] for k in keys), {})
        g.setdefault(r.get("seed", 0), {})[r["rule"]] = r["top1"]
    out = []
    for key, by_seed in groups.items():
        ref = np.array([v["reference"] for v in by_seed.values()])
        fin = np.array([v["final"] for v in by_seed.values()])
        d = fin - ref
        sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
        noise = len(d) < 2 or abs(d.mean()) < 2 * sd / math.sqrt(len(d))
        if not np.any(d):
            verdict = "identical"  # e.g. dmn-zs where zero-shot and the served class always agree
        else:
            verdict = "within noise" if noise else ("final better" if d.mean() > 0 else "reference better")
        out.append([*key, f"{ref.mean():.2f}", f"{fin.mean():.2f}", f"{d.mean():+.2f} ± {sd:.2f}" if len(d) > 1
                    else f"{d.mean():+.2f}", len(d), verdict])
    return out


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--shift-corruptions", nargs="*", default=["gaussian_noise", "gaussian_blur", "contrast"])
    parser.add_argument("--shift-severities", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--skip-shift", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / "write_label"), help="result path stem (default %(default)s)")
    args = parser.parse_args()
    start = time.perf_counter()
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    names = installed_datasets(args.datasets)
    fs = [r for name in names for r in few_shot(encoder, cache, name, args.shots, args.seeds)]
    sh = [] if args.skip_shift else [r for name in names for r in shift(encoder, cache, name, args)]
    result = {"command": command_line(), "encoder": encoder.provenance, "seconds": time.perf_counter() - start,
              "few_shot": fs, "shift": sh}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out.with_suffix(".json"), json.dumps(result, indent=1).encode())
    head = ["reference top-1", "final top-1", "final - reference", "seeds", "verdict"]
    md = [f"# DMN write label: reference (zero-shot) vs final (served)\n\n`{result['command']}`\n",
          f"Encoder {encoder.provenance}; {result['seconds']:.0f} s. Paper defaults, nothing selected on labels.\n",
          "## Few-shot (dmn-zs at 0 shots, dmn-tf otherwise)\n",
          markdown_table(["dataset", "method", "shots", *head], paired(fs, ("dataset", "method", "shots")))]
    if sh:
        md += ["\n## Shift (bench/shift protocol, one seeded stream)\n",
               markdown_table(["dataset", "corruption", "severity", "method", *head],
                              paired(sh, ("dataset", "corruption", "severity", "method")))]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
