"""Every method x every built-in dataset x shots x seeds, on cached features.

    python bench/adapt.py [--datasets ...] [--methods ...] [--shots 1 2 4 8 16] [--seeds 0 1 2] [--max-test 1000]
    python bench/adapt.py --methods linear-probe --merge --datasets ...  # add rows to the existing adapt.json
    python bench/adapt.py --methods tip-adapter-f tip-adapter-f-legacy --support-views 10 --merge

Protocol (genba.adapt): validation (16 per class) carved from train with the seed, K shots
from the rest of train with the same seed; hyperparameters either fixed (paper defaults) or
chosen on that validation set from each method's `selection_grid`, fixed in advance; the
test stream is a seeded permutation. Methods that use no labels (zeroshot, tda, dmn-zs) run
once per seed and appear flat across shots. `--max-test` caps each test split to a subset
drawn once with seed 0 (the same images for every method and seed), to bound the time of the
test-time methods' one-query-at-a-time streams. Tables give top-1 and balanced accuracy (the
mean per-class recall, which exposes a method that predicts the majority class), the
expected calibration error (15 bins), the out-of-distribution AUROC of the maximum softmax
probability (the OOD set: the test split of the next installed built-in, capped alike, streamed
separately from the fitted state after reset) and the cost per image (the encoder's, measured on
32 test images per dataset in the run, and the method's stream, apart from its fit).
`--support-views N` also runs the methods of `--views-methods` (tip-adapter-f) with N augmented
views per support image, recorded as `<method>+<N>views`. `--merge`
keeps the other rows of the existing adapt.json (its commands are listed) and replaces those of
the methods and datasets run now; `--tables-only` rebuilds the tables from adapt.json.
Writes bench/results/adapt.{md,json,png}.
"""

from __future__ import annotations

import time

import torch

from _common import RESULTS, base_parser, installed_datasets

import numpy as np

from genba.adapt import AdaptSpec, prepare, run_adapt
from genba.data import sample_few_shot, train_val_split
from genba.features import extract_features
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.experiment import ResultLog, ResultWriter, RunRecord, Summary, cap_split, per_seed, select, sweep
from genba.methods import get_method, method_names
from genba.report import line_panels


VIEWS_SUFFIX = "views"


def registered(method: str) -> type:
    """The method class of a row name (`tip-adapter-f+10views`, `tip-adapter-f@x` -> tip-adapter-f)."""
    return get_method(method.split("+")[0].split("@")[0])


def parse_variant(text: str) -> tuple[str, str, dict]:
    """'ROW=METHOD:key=value,key=value' -> (row name, method, overrides)."""
    from genba.settings import parse_set_pairs

    row, _, rest = text.partition("=")
    method, _, pairs = rest.partition(":")
    if not row or not method:
        raise SystemExit(f"--variant takes ROW=METHOD:key=value,..., got {text!r}")
    return row, method, parse_set_pairs([p for p in pairs.split(",") if p])


def uses_labels(method: str) -> bool:
    return registered(method).needs_support


def runs_of(method: str, args) -> list[dict]:
    """The (shots, select) points of one method: label-free methods once, at 0 shots."""
    selects = ["val", "fixed"] if registered(method).selection_grid else ["fixed"]
    return sweep(shots=args.shots if uses_labels(method) else [0], select=selects)


def variants(args) -> list[tuple[str, str, int, dict]]:
    """(row name, method, support views, overrides) of every method run."""
    rows = [(m, m, 1, {}) for m in args.methods]
    if args.support_views > 1:
        rows += [(f"{m}+{args.support_views}{VIEWS_SUFFIX}", m, args.support_views, {}) for m in args.views_methods]
    return rows + [(row, m, 1, over) for row, m, over in map(parse_variant, args.variant)]


def ood_features(encoder, name, args, cache):
    """Test features of the OOD set of `name`: the next installed built-in (cyclic), capped as test is."""
    names = installed_datasets(None)
    other = names[(names.index(name) + 1) % len(names)]
    return other, cap_split(extract_features(encoder, load_dataset(other), "test", cache=cache), args.max_test, seed=0)


def view_pool(dataset, args) -> np.ndarray:
    """The union over seeds of the largest supports (supports are nested in the shots): one encoding per view."""
    pools = [sample_few_shot(dataset, train_val_split(dataset, val_per_class=16, seed=s)[0], max(args.shots), s)
             for s in args.seeds]
    return np.unique(np.concatenate(pools))


def run_dataset(encoder, name, args, cache) -> list[RunRecord]:
    dataset = load_dataset(name)
    data = prepare(encoder, dataset, cache=cache)
    data.test = cap_split(data.test, args.max_test, seed=0)
    ood_name, data.ood = ood_features(encoder, name, args, cache)
    if args.support_views > 1:
        data.view_pool = view_pool(dataset, args)
    records = []
    for seed in args.seeds:
        for row, method, support_views, overrides in variants(args):
            for point in runs_of(method, args):
                start = time.perf_counter()
                spec = AdaptSpec(method=method, seed=seed, space=args.space, support_views=support_views,
                                 overrides=overrides, **point)
                result = run_adapt(encoder, dataset, spec, data=data, cache=cache)
                result.pop("selection_table")
                result.update(method=row, ood_dataset=ood_name)
                records.append(RunRecord.from_result(result, wall_seconds=time.perf_counter() - start))
                print(f"{name} seed={seed} {row} shots={point['shots']} {point['select']}: {result['top1']:.1f} "
                      f"({records[-1].extra['wall_seconds']:.1f}s)", flush=True)
    return records


def summarise(records, datasets, methods, shots, selected, metric="top1") -> Summary:
    """Method x shots, mean ± std over seeds, per dataset and the mean over datasets (and, when some
    method lacks a dataset, the mean over the datasets every method ran); label-free methods: their
    0-shot runs, methods without a grid: their fixed runs."""
    summary = Summary(lambda ds, m, k: per_seed(select(
        records, dataset=ds, method=m, selected_on=selected if registered(m).selection_grid else "fixed",
        shots=k if uses_labels(m) else 0), metric), datasets, methods, shots)
    complete = summary.complete()
    summary.add_mean("mean over datasets", datasets)
    if complete != datasets:
        summary.add_mean(f"mean over {', '.join(complete)} (every method ran)", complete)
    return summary


def ood_sets(rows) -> str:
    pairs = sorted({(r.dataset, r.get("ood_dataset")) for r in rows if r.get("ood_dataset")})
    return ", ".join(f"{ood} for {ds}" for ds, ood in pairs) or "none recorded"


def cost_table(rows, datasets, methods) -> str:
    """Per method and dataset at its largest shot count (val selection where it has a grid):
    encoder ms / image, method ms / image (the stream), fit seconds, means over seeds."""
    from genba.report import markdown_table

    lines = []
    for m in methods:
        cells = []
        for ds in datasets:
            mine = [r for r in rows if r.method == m and r.dataset == ds and r.get("method_ms_per_image") is not None
                    and r.selected_on == ("val" if registered(m).selection_grid else "fixed")]
            top = max((r.shots for r in mine), default=None)
            mine = [r for r in mine if r.shots == top]
            cells.append("n/a" if not mine else "{:.2f} + {:.3f} (fit {:.2f} s)".format(
                *(sum(r.get(k) for r in mine) / len(mine) for k in ("encoder_ms_per_image", "method_ms_per_image", "fit_seconds"))))
        lines.append([m] + cells)
    return ("Each cell: encoder ms + method ms per test image (fit seconds once per run), at the method's largest "
            "shot count, mean over seeds; n/a: rows produced before the cost was recorded.\n\n"
            + markdown_table(["method"] + datasets, lines))


def tip_f_section(rows, datasets, shots) -> str:
    """tip-adapter-f (reference-faithful) beside tip-adapter-f-legacy: paired differences per seed (same
    split, shots and stream), 'within noise' where |mean| <= std over seeds; and the alpha, beta searched."""
    from genba.experiment import format_mean_std
    from genba.report import markdown_table

    def cell(method, ds, k):
        sel = "val" if registered(method).selection_grid else "fixed"
        return {r.seed: r for r in rows if r.method == method and r.dataset == ds and r.shots == k and r.selected_on == sel}

    new = [m for m in ("tip-adapter-f", *sorted({r.method for r in rows if r.method.startswith(("tip-adapter-f+", "tip-adapter-f@"))}))
           if any(r.method == m for r in rows)]
    if "tip-adapter-f-legacy" not in {r.method for r in rows} or not new:
        return "n/a: run tip-adapter-f and tip-adapter-f-legacy."
    lines, found = [], []
    for m in new:
        for ds in datasets:
            diffs = []
            for k in shots:
                a, b = cell(m, ds, k), cell("tip-adapter-f-legacy", ds, k)
                d = [a[s].top1 - b[s].top1 for s in a if s in b]
                noisy = len(d) > 1 and abs(sum(d) / len(d)) <= (sum((x - sum(d) / len(d)) ** 2 for x in d) / (len(d) - 1)) ** 0.5
                diffs.append("n/a" if not d else format_mean_std(d) + (" (within noise)" if noisy else ""))
            lines.append([m, ds] + diffs)
        for ds in datasets:
            mine = [r.hyperparameters for r in rows if r.method == m and r.dataset == ds and r.hyperparameters.get("alpha") is not None]
            if mine:
                span = lambda k: f"{min(h[k] for h in mine):.2f}-{max(h[k] for h in mine):.2f}"  # noqa: E731
                h0 = mine[0]
                found.append([m, ds, f"{h0['init_alpha']:g}, {h0['init_beta']:g}",
                              f"[0.1, {h0['search_beta_max']:g}) x {h0['search_beta_steps']}, [0.1, {h0['search_alpha_max']:g}) x "
                              f"{h0['search_alpha_steps']}", span("alpha"), span("beta")])
    return ("Top-1 of each reference-faithful row minus tip-adapter-f-legacy (its alpha, beta chosen on validation by "
            "retraining at every grid point), paired by seed; mean ± std over seeds; 'within noise': |mean| <= std.\n\n"
            + markdown_table(["method", "dataset"] + [f"{k}-shot" for k in shots], lines)
            + "\n\nTraining alpha, beta, the search grid (beta range x steps, alpha range x steps) and the alpha and "
            "beta found by the post-training search on validation (range over seeds and shots):\n\n"
            + markdown_table(["method", "dataset", "train alpha, beta", "search grid", "alpha found", "beta found"], found)
            + "\n\nThe reference's ImageNet ranges (alpha < 3) cannot outweigh the x100 text logits of this encoder, so "
            "tip-adapter-f stays near zero-shot until 16 shots. `tip-adapter-f@genba-scale` (added after those rows "
            "were seen) runs the same training and search with init_alpha 100 and alpha searched up to 1000: the "
            "range the validation grid of tip-adapter picks for visual caches (100-1000), not a value read off test.")


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--methods", nargs="*", default=method_names())
    parser.add_argument("--shots", nargs="*", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--space", default="visual", choices=["visual", "joint"])
    parser.add_argument("--max-test", type=int, default=1000)
    parser.add_argument("--support-views", type=int, default=1, help="also run --views-methods with this many support views")
    parser.add_argument("--views-methods", nargs="*", default=["tip-adapter-f"])
    parser.add_argument("--variant", action="append", default=[], metavar="ROW=METHOD:key=value,...",
                        help="also run METHOD with these hyperparameters, recorded as ROW")
    parser.add_argument("--merge", action="store_true", help="keep other rows of the existing adapt.json")
    parser.add_argument("--tables-only", action="store_true", help="rebuild adapt.md and adapt.png from adapt.json, run nothing")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-query streams are tiny ops; two threads only spin on this CPU
    for m in args.methods + args.views_methods + [parse_variant(v)[1] for v in args.variant]:
        get_method(m)
    writer = ResultWriter("adapt", RESULTS)
    if args.tables_only:  # nothing runs: the file's rows and commands as they are
        log = ResultLog.read(writer)
    else:
        encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
        ran = installed_datasets(args.datasets)
        names = [row for row, *_ in variants(args)]
        log = ResultLog(writer, keep=(lambda r: not (r.method in names and r.dataset in ran)) if args.merge else None)
        for name in ran:
            log.add(run_dataset(encoder, name, args, cache))  # progress survives a crash
        log.finish()
    datasets = list(dict.fromkeys(r.dataset for r in log.rows))
    methods = list(dict.fromkeys(r.method for r in log.rows))
    headers = [f"{k}-shot" for k in args.shots]
    val = summarise(log.rows, datasets, methods, args.shots, "val")
    fixed = summarise(log.rows, datasets, methods, args.shots, "fixed")
    balanced = summarise(log.rows, datasets, methods, args.shots, "val", metric="balanced_accuracy")
    ece = summarise(log.rows, datasets, methods, args.shots, "val", metric="ece")
    ood = summarise(log.rows, datasets, methods, args.shots, "val", metric="ood_auroc")
    grids = "\n".join(f"- `{m}`: " + ", ".join(f"{k} in {v}" for k, v in registered(m).selection_grid.items())
                      for m in methods if registered(m).selection_grid)
    ran = "\n".join(f"- `{c}` ({'time not recorded' if t is None else f'{t} s'})" for c, t in zip(log.commands, log.seconds))
    body = (
        "Commands, in order, with a warm feature cache (a `--merge` run replaced only the rows of its methods on the "
        f"datasets it ran):\n{ran}\n\n"
        f"Top-1 (%) on the test split (at most {args.max_test} images per dataset, a fixed seeded subset), mean ± std over seeds {args.seeds}. "
        "Methods without labels (zeroshot, tda, dmn-zs) do not depend on the shots.\n\n"
        f"## Hyperparameters chosen on validation (16 images per class carved from train)\n\nGrids, fixed in advance:\n{grids}\n\n"
        f"{val.sections(headers)}\n\n"
        f"## Balanced accuracy (%), hyperparameters chosen on validation\n\nMean recall over the classes present in "
        f"the test split; n/a where a row was produced before the metric existed.\n\n{balanced.sections(headers)}\n\n"
        f"## Fixed paper defaults (no selection)\n\n{fixed.sections(headers)}\n\n"
        f"## Tip-Adapter-F: reference-faithful and legacy side by side\n\n{tip_f_section(log.rows, datasets, args.shots)}\n\n"
        f"## Expected calibration error (%, 15 bins; lower is better), hyperparameters chosen on validation\n\n"
        f"n/a: rows produced before the metric existed.\n\n{ece.sections(headers)}\n\n"
        f"## Out-of-distribution detection: AUROC (%) of the maximum softmax probability\n\n"
        f"In-distribution: the test stream above; out-of-distribution: {ood_sets(log.rows)}, streamed separately "
        f"from the fitted state (test-time memories reset). 50 = chance. n/a: rows produced before the metric existed."
        f"\n\n{ood.sections(headers)}\n\n"
        f"## Cost per image (ms, this machine, measured in the run)\n\n{cost_table(log.rows, datasets, methods)}\n\n"
        "![accuracy vs shots](adapt.png)"
    )
    writer.markdown(f"Few-shot and test-time adaptation, encoder `{args.encoder}`, cache space `{args.space}`", body,
                    seconds=log.seconds[-1])  # results.json is already written (log.finish): the figure comes last
    print(body)
    panels = {ds: {m: val.curve(ds, m) for m in methods} for ds in datasets + ["mean over datasets"]}
    fig = line_panels(panels, args.shots, xlabel="shots per class", ylabel="top-1 (%), hyperparameters chosen on val",
                      styles={m: {"linestyle": "-" if uses_labels(m) else "--"} for m in methods}, log2_x=True)
    fig.tight_layout()
    writer.figure(fig, dpi=110)


if __name__ == "__main__":
    main()
