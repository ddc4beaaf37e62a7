"""Every method x every built-in dataset x shots x seeds, on cached features.

    python bench/adapt.py [--datasets ...] [--methods ...] [--shots 1 2 4 8 16] [--seeds 0 1 2] [--max-test 1000]
    python bench/adapt.py --methods linear-probe --merge   # add one method's rows to the existing adapt.json

Protocol (genba.adapt): validation (16 per class) carved from train with the seed, K shots
from the rest of train with the same seed; hyperparameters either fixed (paper defaults) or
chosen on that validation set from grids fixed in advance (genba.adapt.SELECTION_GRIDS); the
test stream is a seeded permutation. Methods that use no labels (zeroshot, tda, dmn-zs) run
once per seed and appear flat across shots. `--max-test` caps each test split to a subset
drawn once with seed 0 (the same images for every method and seed), to bound the time of the
test-time methods' one-query-at-a-time streams. Tables give top-1 and balanced accuracy (the
mean per-class recall, which exposes a method that predicts the majority class). `--merge`
keeps the other rows of the existing adapt.json (their commands are listed) and replaces those
of the methods and datasets run now. Writes bench/results/adapt.{md,json,png}.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np
import torch

from _common import RESULTS, base_parser, command_line, installed_datasets

from genba.adapt import SELECTION_GRIDS, AdaptSpec, prepare, run_adapt
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.methods import get_method, method_names
from genba.report import markdown_table, write_json

USES_LABELS = {"tip-adapter", "tip-adapter-f", "dmn-tf", "dmn", "linear-probe"}


def mean_std(values: list[float]) -> str:
    if not values or any(v is None for v in values):
        return "n/a"
    return f"{statistics.mean(values):.1f} ± {statistics.pstdev(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def run_dataset(encoder, name, args, cache) -> list[dict]:
    dataset = load_dataset(name)
    data = prepare(encoder, dataset, cache=cache)
    if args.max_test and len(data.test) > args.max_test:
        keep = np.sort(np.random.default_rng(0).permutation(len(data.test))[: args.max_test])
        data.test = data.test.subset(keep)
    rows = []
    for seed in args.seeds:
        for method in args.methods:
            shot_list = args.shots if method in USES_LABELS else [0]
            for shots in shot_list:
                for select in ("val", "fixed"):
                    if select == "val" and not SELECTION_GRIDS.get(method):
                        continue
                    start = time.perf_counter()
                    result = run_adapt(encoder, dataset, AdaptSpec(method=method, shots=shots, seed=seed, select=select, space=args.space), data=data)
                    result.pop("selection_table")
                    result["wall_seconds"] = time.perf_counter() - start
                    rows.append(result)
                    print(f"{name} seed={seed} {method} shots={shots} {select}: {result['top1']:.1f} ({result['wall_seconds']:.1f}s)", flush=True)
    return rows


def summarise(rows: list[dict], datasets: list[str], methods: list[str], shots: list[int], select: str,
              metric: str = "top1") -> tuple[str, dict]:
    """Markdown table (method x shots, mean ± std over seeds) per dataset and the mean over datasets."""
    def cell(ds, method, k):
        k = k if method in USES_LABELS else 0
        hits = [r.get(metric) for r in rows if r["dataset"] == ds and r["method"] == method and r["shots"] == k and (r["selected_on"] == select or not SELECTION_GRIDS.get(method))]
        return hits

    complete = [d for d in datasets if all(cell(d, m, k) for m in methods for k in shots)]
    means = {"mean over datasets": datasets}
    if complete != datasets:  # some method lacks rows on some dataset: also the mean where every method ran
        means[f"mean over {', '.join(complete)} (every method ran)"] = complete
    curves, parts = {}, []
    for ds in datasets + list(means):
        table = []
        for method in methods:
            line = []
            for k in shots:
                if ds in means:
                    per_seed = [None if None in v else statistics.mean(v) for v in zip(*[cell(d, method, k) for d in means[ds]])]
                    per_seed = per_seed if len(means[ds]) == len([d for d in means[ds] if cell(d, method, k)]) else []
                else:
                    per_seed = cell(ds, method, k)
                line.append(per_seed)
            curves[(ds, method)] = [statistics.mean(v) if v and None not in v else float("nan") for v in line]
            table.append([method] + [mean_std(v) for v in line])
        parts.append(f"### {ds}\n\n" + markdown_table(["method"] + [f"{k}-shot" for k in shots], table))
    return "\n\n".join(parts), curves


def plot(curves: dict, datasets: list[str], methods: list[str], shots: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = datasets + ["mean over datasets"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, ds in zip(axes[0], panels):
        for method in methods:
            ax.plot(shots, curves[(ds, method)], marker="o", label=method, linestyle="-" if method in USES_LABELS else "--")
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots, [str(k) for k in shots])
        ax.set_title(ds)
        ax.set_xlabel("shots per class")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("top-1 (%), hyperparameters chosen on val")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--methods", nargs="*", default=method_names())
    parser.add_argument("--shots", nargs="*", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--space", default="visual", choices=["visual", "joint"])
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--merge", action="store_true", help="keep other methods' rows from the existing adapt.json")
    parser.add_argument("--tables-only", action="store_true", help="rebuild adapt.md and adapt.png from adapt.json, run nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-query streams are tiny ops; two threads only spin on this CPU
    for m in args.methods:
        get_method(m)
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    datasets = installed_datasets(args.datasets)
    start, rows, kept, commands, timings = time.perf_counter(), [], [], [command_line()], [None]
    if (args.merge or args.tables_only) and (RESULTS / "adapt.json").exists():
        old = json.loads((RESULTS / "adapt.json").read_text())
        kept = [r for r in old["rows"] if not (r["method"] in args.methods and r["dataset"] in datasets)]
        previous = old.get("commands", [old["command"]])
        commands, timings = previous + commands, old.get("seconds", [None] * len(previous)) + timings
    methods = list(dict.fromkeys([r["method"] for r in kept] + list(args.methods)))
    if args.tables_only:  # nothing runs: the file's rows and commands as they are
        kept, commands, timings, datasets = old["rows"], commands[:-1], timings[:-1], []
        methods = list(dict.fromkeys(r["method"] for r in kept))
    for name in datasets:
        rows += run_dataset(encoder, name, args, cache)
        write_json(RESULTS / "adapt.json", {"command": command_line(), "commands": commands, "seconds": timings,
                                            "rows": kept + rows})  # progress survives a crash
    seconds = time.perf_counter() - start
    if not args.tables_only:
        timings[-1] = round(seconds)
    rows = kept + rows
    datasets = list(dict.fromkeys([r["dataset"] for r in rows]))  # with --merge, every dataset of the file
    val_text, curves = summarise(rows, datasets, methods, args.shots, "val")
    fixed_text, _ = summarise(rows, datasets, methods, args.shots, "fixed")
    balanced_text, _ = summarise(rows, datasets, methods, args.shots, "val", metric="balanced_accuracy")
    plot(curves, datasets, methods, args.shots, RESULTS / "adapt.png")
    grids = "\n".join(f"- `{m}`: " + ", ".join(f"{k} in {v}" for k, v in g.items()) for m, g in SELECTION_GRIDS.items())
    ran = "\n".join(f"- `{c}` ({'time not recorded' if t is None else f'{t} s'})" for c, t in zip(commands, timings))
    text = (
        f"# Few-shot and test-time adaptation, encoder `{args.encoder}`, cache space `{args.space}`\n\n"
        "Commands, in order, with a warm feature cache (a `--merge` run replaced only the rows of its methods on the "
        f"datasets it ran; the rows say which run made them by their method and dataset):\n{ran}\n\n"
        f"Top-1 (%) on the test split (at most {args.max_test} images per dataset, a fixed seeded subset), mean ± std over seeds {args.seeds}. "
        "Methods without labels (zeroshot, tda, dmn-zs) do not depend on the shots.\n\n"
        f"## Hyperparameters chosen on validation (16 images per class carved from train)\n\nGrids, fixed in advance:\n{grids}\n\n{val_text}\n\n"
        f"## Balanced accuracy (%), hyperparameters chosen on validation\n\nMean recall over the classes present in "
        "the test split; n/a where a row was produced before the metric existed.\n\n"
        f"{balanced_text}\n\n"
        f"## Fixed paper defaults (no selection)\n\n{fixed_text}\n\n![accuracy vs shots](adapt.png)\n"
    )
    (RESULTS / "adapt.md").write_text(text)
    if not args.tables_only:
        write_json(RESULTS / "adapt.json", {"command": command_line(), "commands": commands, "seconds": timings, "rows": rows})
    print(text)


if __name__ == "__main__":
    main()
