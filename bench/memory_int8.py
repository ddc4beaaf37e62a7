"""int8 against float16 dynamic memory: accuracy of DMN (zero-shot) on the shift scenario's streams.

    python bench/memory_int8.py [--datasets textile digits animal-mnist] [--corrupt digits:gaussian_noise:5]

The protocol of bench/shift.py (its `prepare`, `stream_subset` and `run`): centred visual
features, prototype source classifier with temperature T calibrated on clean validation, a
seeded test stream of `--n-test` images in one seeded order. dmn-zs runs with paper defaults
(scale T), guard off and on (shift.GUARD), once with `memory_dtype="float16"` (the default)
and once with `"int8"` (codes + per-row scale); everything else is identical, so the top-1
difference is the int8 memory's. Conditions: each dataset's clean stream (cached features)
plus the corrupted streams named by `--corrupt dataset:corruption:severity` (encoded now).
Writes bench/results/memory_int8.{md,json}; bench/memory_cost.py quotes the summary.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import RESULTS, base_parser, command_line

import shift
from genba.cache import TensorCache
from genba.data.corruptions import corruption_transform
from genba.encoders import l2_normalize, load_encoder
from genba.features import extract_features
from genba.report import markdown_table, write_json

VARIANTS = [("dmn-zs", {}), ("dmn-zs+guard", shift.GUARD)]


def stream_features(encoder, cache, p, name, corruption, severity, args):
    ds = p["ds"]
    split_ds, split, idx = shift.stream_subset(ds, args.n_test, args.seed)
    if corruption == "clean":
        full = extract_features(encoder, ds, "test", cache=cache, progress=False)
        pos = {int(i): r for r, i in enumerate(full.indices.tolist())}
        feats = full.subset([pos[int(i)] for i in idx])
    else:
        feats = extract_features(encoder, split_ds, split, cache=cache, progress=False,
                                 transform=corruption_transform(corruption, severity))
    order = np.random.default_rng([args.seed, 2]).permutation(len(idx))
    return l2_normalize(feats.visual - p["centre"]), feats.labels, order


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-per-class", type=int, default=30)
    parser.add_argument("--corrupt", nargs="*", default=["digits:gaussian_noise:5"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    datasets = args.datasets or ["textile", "digits", "animal-mnist"]
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    conditions = [(d, "clean", 0) for d in datasets] + [(d, c, int(s)) for d, c, s in (x.split(":") for x in args.corrupt)]
    start, rows, prepared = time.perf_counter(), [], {}
    for name, corruption, severity in conditions:
        if name not in prepared:
            prepared[name] = shift.prepare(encoder, cache, name, args)
        p = prepared[name]
        q, y, order = stream_features(encoder, cache, p, name, corruption, severity, args)
        for label, guard in VARIANTS:
            row = {"dataset": name, "corruption": corruption, "severity": severity, "method": label}
            for dtype in ("float16", "int8"):
                t0 = time.perf_counter()
                pred = shift.run("dmn-zs", p["protos"], q, order, {**guard, **p["scale"], "memory_dtype": dtype})
                row[f"top1_{dtype}"] = 100.0 * (pred == y).float().mean().item()
                row[f"seconds_{dtype}"] = time.perf_counter() - t0
            row["diff"] = row["top1_int8"] - row["top1_float16"]
            rows.append(row)
            print(row, flush=True)
    diffs = [abs(r["diff"]) for r in rows]
    worst = max(diffs)
    summary = (f"over {len(rows)} streams ({len(conditions)} conditions x {len(VARIANTS)} variants, {args.n_test} images each), "
               f"|int8 - float16| top-1 is {np.mean(diffs):.2f} points on average and {worst:.2f} at most: target "
               f"within 0.3 points {'met' if worst <= 0.3 else f'NOT met (by {worst - 0.3:.2f})'}. Conditions: "
               + ", ".join(f"{d} {c}{'' if c == 'clean' else f' s{s}'}" for d, c, s in conditions)
               + " (the full shift scenario's corrupted features are not cached; this smaller scenario was measured instead).")
    table = markdown_table(["dataset", "condition", "method", "float16 top-1", "int8 top-1", "int8 - float16", "s float16", "s int8"],
                           [[r["dataset"], r["corruption"] if r["corruption"] == "clean" else f"{r['corruption']} s{r['severity']}",
                             r["method"], r["top1_float16"], r["top1_int8"], f"{r['diff']:+.2f}", f"{r['seconds_float16']:.1f}",
                             f"{r['seconds_int8']:.1f}"] for r in rows])
    text = (f"# int8 vs float16 dynamic memory (DMN zero-shot, shift protocol)\n\nCommand: `{command_line()}` "
            f"({time.perf_counter() - start:.0f} s)\n\nEncoder provenance: `{encoder.provenance}`\n\n{summary}\n\n{table}\n")
    (RESULTS / "memory_int8.md").write_text(text)
    write_json(RESULTS / "memory_int8.json", {"command": command_line(), "summary": summary, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
