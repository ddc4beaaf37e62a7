"""Every method x every built-in dataset x shots x seeds, on cached features.

    python bench/adapt.py [--datasets ...] [--methods ...] [--shots 1 2 4 8 16] [--seeds 0 1 2] [--max-test 1000]

Protocol (genba.adapt): validation (16 per class) carved from train with the seed, K shots
from the rest of train with the same seed; hyperparameters either fixed (paper defaults) or
chosen on that validation set from each method's `selection_grid`, fixed in advance; the
test stream is a seeded permutation. Methods that use no labels (zeroshot, tda, dmn-zs) run
once per seed and appear flat across shots. `--max-test` caps each test split to a subset
drawn once with seed 0 (the same images for every method and seed), to bound the time of the
test-time methods' one-query-at-a-time streams. Writes bench/results/adapt.{md,json,png}.
"""

from __future__ import annotations

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


def cell(records, dataset, method, shots, selected) -> list[float]:
    """Top-1 over seeds of one table cell (label-free methods: their 0-shot runs)."""
    chosen = selected if get_method(method).selection_grid else "fixed"
    return [r.top1 for r in select(records, dataset=dataset, method=method, selected_on=chosen,
                                   shots=shots if uses_labels(method) else 0)]


def summarise(records, datasets, methods, shots, selected) -> tuple[str, dict]:
    """Markdown table (method x shots, mean ± std over seeds) per dataset and the mean over datasets."""
    curves, parts = {}, []
    for ds in datasets + ["mean over datasets"]:
        table = []
        for method in methods:
            line = []
            for k in shots:
                if ds == "mean over datasets":  # per seed, the mean over datasets
                    line.append([statistics.mean(v) for v in zip(*[cell(records, d, method, k, selected) for d in datasets])])
                else:
                    line.append(cell(records, ds, method, k, selected))
            curves[(ds, method)] = [statistics.mean(v) for v in line]
            table.append([method] + [format_mean_std(v) for v in line])
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
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-query streams are tiny ops; two threads only spin on this CPU
    for m in args.methods:
        get_method(m)
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    datasets = installed_datasets(args.datasets)
    writer = ResultWriter("adapt", RESULTS)
    start, records = time.perf_counter(), []
    for name in datasets:
        records += run_dataset(encoder, name, args, cache)
        writer.json({"rows": [r.to_dict() for r in records]})  # progress survives a crash
    val_text, curves = summarise(records, datasets, args.methods, args.shots, "val")
    fixed_text, _ = summarise(records, datasets, args.methods, args.shots, "fixed")
    plot(curves, datasets, args.methods, args.shots, RESULTS / "adapt.png")
    grids = "\n".join(f"- `{m}`: " + ", ".join(f"{k} in {v}" for k, v in get_method(m).selection_grid.items())
                      for m in args.methods if get_method(m).selection_grid)
    body = (
        f"Top-1 (%) on the test split (at most {args.max_test} images per dataset, a fixed seeded subset), mean ± std over seeds {args.seeds}. "
        "Methods without labels (zeroshot, tda, dmn-zs) do not depend on the shots.\n\n"
        f"## Hyperparameters chosen on validation (16 images per class carved from train)\n\nGrids, fixed in advance:\n{grids}\n\n{val_text}\n\n"
        f"## Fixed paper defaults (no selection)\n\n{fixed_text}\n\n![accuracy vs shots](adapt.png)"
    )
    writer.markdown(f"Few-shot and test-time adaptation, encoder `{args.encoder}`, cache space `{args.space}`", body,
                    seconds=time.perf_counter() - start)
    writer.json({"rows": [r.to_dict() for r in records]})
    print(body)


if __name__ == "__main__":
    main()
