"""Every method x every built-in dataset x shots x seeds, on cached features.

    python bench/adapt.py [--datasets ...] [--methods ...] [--shots 1 2 4 8 16] [--seeds 0 1 2] [--max-test 1000]
    python bench/adapt.py --methods linear-probe --merge --datasets ...  # add rows to the existing adapt.json

Protocol (genba.adapt): validation (16 per class) carved from train with the seed, K shots
from the rest of train with the same seed; hyperparameters either fixed (paper defaults) or
chosen on that validation set from each method's `selection_grid`, fixed in advance; the
test stream is a seeded permutation. Methods that use no labels (zeroshot, tda, dmn-zs) run
once per seed and appear flat across shots. `--max-test` caps each test split to a subset
drawn once with seed 0 (the same images for every method and seed), to bound the time of the
test-time methods' one-query-at-a-time streams. Tables give top-1 and balanced accuracy (the
mean per-class recall, which exposes a method that predicts the majority class). `--merge`
keeps the other rows of the existing adapt.json (its commands are listed) and replaces those of
the methods and datasets run now; `--tables-only` rebuilds the tables from adapt.json.
Writes bench/results/adapt.{md,json,png}.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from _common import RESULTS, base_parser, installed_datasets

from genba.adapt import AdaptSpec, prepare, run_adapt
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.experiment import ResultWriter, RunRecord, cap_split, format_mean_std, select, sweep
from genba.methods import get_method, method_names
from genba.report import markdown_table


def uses_labels(method: str) -> bool:
    return get_method(method).needs_support


def runs_of(method: str, args) -> list[dict]:
    """The (shots, select) points of one method: label-free methods once, at 0 shots."""
    selects = ["val", "fixed"] if get_method(method).selection_grid else ["fixed"]
    return sweep(shots=args.shots if uses_labels(method) else [0], select=selects)


def run_dataset(encoder, name, args, cache) -> list[RunRecord]:
    dataset = load_dataset(name)
    data = prepare(encoder, dataset, cache=cache)
    data.test = cap_split(data.test, args.max_test, seed=0)
    records = []
    for seed in args.seeds:
        for method in args.methods:
            for point in runs_of(method, args):
                start = time.perf_counter()
                result = run_adapt(encoder, dataset, AdaptSpec(method=method, seed=seed, space=args.space, **point), data=data)
                result.pop("selection_table")
                records.append(RunRecord.from_result(result, wall_seconds=time.perf_counter() - start))
                print(f"{name} seed={seed} {method} shots={point['shots']} {point['select']}: {result['top1']:.1f} "
                      f"({records[-1].extra['wall_seconds']:.1f}s)", flush=True)
    return records


def cell(records, dataset, method, shots, selected, metric="top1") -> list[float | None]:
    """`metric` over seeds of one table cell (label-free methods: their 0-shot runs); None where a row lacks it."""
    chosen = selected if get_method(method).selection_grid else "fixed"
    hits = select(records, dataset=dataset, method=method, selected_on=chosen, shots=shots if uses_labels(method) else 0)
    return [r.top1 if metric == "top1" else r.extra.get(metric) for r in hits]


def shown(values) -> str:
    return "n/a" if not values or None in values else format_mean_std(values)


def summarise(records, datasets, methods, shots, selected, metric="top1") -> tuple[str, dict]:
    """Markdown table (method x shots, mean ± std over seeds) per dataset and the mean over datasets
    (and, when some method lacks a dataset, the mean over the datasets every method ran)."""
    complete = [d for d in datasets if all(cell(records, d, m, k, selected) for m in methods for k in shots)]
    means = {"mean over datasets": datasets}
    if complete != datasets:
        means[f"mean over {', '.join(complete)} (every method ran)"] = complete
    curves, parts = {}, []
    for ds in datasets + list(means):
        table = []
        for method in methods:
            line = []
            for k in shots:
                if ds in means:  # per seed, the mean over datasets
                    per = [cell(records, d, method, k, selected, metric) for d in means[ds]]
                    line.append([] if not all(per) else
                                [None if None in v else statistics.mean(v) for v in zip(*per)])
                else:
                    line.append(cell(records, ds, method, k, selected, metric))
            curves[(ds, method)] = [statistics.mean(v) if v and None not in v else float("nan") for v in line]
            table.append([method] + [shown(v) for v in line])
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
            ax.plot(shots, curves[(ds, method)], marker="o", label=method, linestyle="-" if uses_labels(method) else "--")
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
    parser.add_argument("--merge", action="store_true", help="keep other rows of the existing adapt.json")
    parser.add_argument("--tables-only", action="store_true", help="rebuild adapt.md and adapt.png from adapt.json, run nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-query streams are tiny ops; two threads only spin on this CPU
    for m in args.methods:
        get_method(m)
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    datasets = installed_datasets(args.datasets)
    writer = ResultWriter("adapt", RESULTS)
    start, records, kept, commands, timings = time.perf_counter(), [], [], [writer.command], [None]
    if (args.merge or args.tables_only) and (RESULTS / "adapt.json").exists():
        old = json.loads((RESULTS / "adapt.json").read_text())
        rows = [RunRecord(**r) if "extra" in r else RunRecord.from_result(r) for r in old["rows"]]
        kept = [r for r in rows if not (r.method in args.methods and r.dataset in datasets)]
        previous = old.get("commands", [old["command"]])
        commands, timings = previous + commands, old.get("seconds", [None] * len(previous)) + timings
    if args.tables_only:  # nothing runs: the file's rows and commands as they are
        kept, commands, timings, datasets = rows, commands[:-1], timings[:-1], []
        writer.command = commands[-1]

    def payload():
        return {"commands": commands, "seconds": timings, "rows": [r.to_dict() for r in kept + records]}

    for name in datasets:
        records += run_dataset(encoder, name, args, cache)
        writer.json(payload())  # progress survives a crash
    if not args.tables_only:
        timings[-1] = round(time.perf_counter() - start)
    records = kept + records
    datasets = list(dict.fromkeys(r.dataset for r in records))
    methods = list(dict.fromkeys(r.method for r in records))
    val_text, curves = summarise(records, datasets, methods, args.shots, "val")
    fixed_text, _ = summarise(records, datasets, methods, args.shots, "fixed")
    balanced_text, _ = summarise(records, datasets, methods, args.shots, "val", metric="balanced_accuracy")
    plot(curves, datasets, methods, args.shots, RESULTS / "adapt.png")
    grids = "\n".join(f"- `{m}`: " + ", ".join(f"{k} in {v}" for k, v in get_method(m).selection_grid.items())
                      for m in methods if get_method(m).selection_grid)
    ran = "\n".join(f"- `{c}` ({'time not recorded' if t is None else f'{t} s'})" for c, t in zip(commands, timings))
    body = (
        "Commands, in order, with a warm feature cache (a `--merge` run replaced only the rows of its methods on the "
        f"datasets it ran):\n{ran}\n\n"
        f"Top-1 (%) on the test split (at most {args.max_test} images per dataset, a fixed seeded subset), mean ± std over seeds {args.seeds}. "
        "Methods without labels (zeroshot, tda, dmn-zs) do not depend on the shots.\n\n"
        f"## Hyperparameters chosen on validation (16 images per class carved from train)\n\nGrids, fixed in advance:\n{grids}\n\n{val_text}\n\n"
        f"## Balanced accuracy (%), hyperparameters chosen on validation\n\nMean recall over the classes present in "
        f"the test split; n/a where a row was produced before the metric existed.\n\n{balanced_text}\n\n"
        f"## Fixed paper defaults (no selection)\n\n{fixed_text}\n\n![accuracy vs shots](adapt.png)"
    )
    writer.markdown(f"Few-shot and test-time adaptation, encoder `{args.encoder}`, cache space `{args.space}`", body,
                    seconds=timings[-1])
    if not args.tables_only:
        kept, records = records, []
        writer.json(payload())
    print(body)


if __name__ == "__main__":
    main()
