"""Choose how the embedded default joins EfficientNet-Lite0 to MiniLM, on validation splits.

    python bench/conse_join.py [--datasets ...] [--val-per-class 100]

For every installed built-in dataset: the pooled visual features of the train split (cached)
give a validation set carved from train (never test); each join (ConSE top-k mean for several
k, and the ridge map from classifier weights to class-name embeddings for several lambda) turns
them into joint embeddings, scored by zero-shot top-1 against the dataset's text classifier.
The join with the best mean validation top-1 is the one to make the default. Test top-1 is
reported for information only; it plays no part in the choice.
Writes bench/results/conse_join.md and conse_join.json.
"""

from __future__ import annotations

import torch

from _common import RESULTS, base_parser, command_line, installed_datasets

from genba.cache import TensorCache
from genba.data import load_dataset, train_val_split
from genba.encoders.conse import ConseEncoder, ConseOptions
from genba.features import extract_features
from genba.report import markdown_table, write_json
from genba.zeroshot import cached_text_classifier, top1, zeroshot_logits

JOINS = [ConseOptions(join="topk", top_k=k) for k in (1, 3, 10, 100, 1000)] + [
    ConseOptions(join="linear", ridge=r) for r in (0.01, 0.1, 1.0, 10.0)
]


def label(options: ConseOptions) -> str:
    return f"topk k={options.top_k}" if options.join == "topk" else f"linear lam={options.ridge:g}"


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--val-per-class", type=int, default=100)
    args = parser.parse_args()
    cache = TensorCache(args.cache_dir)
    base = ConseEncoder()  # features (incl. visual) are extracted once with the default join
    encoders = [ConseEncoder(o) for o in JOINS]
    for encoder in encoders:  # share the loaded models; only the join differs
        encoder.__dict__.update(text_model=base.text_model, backbone=base.backbone, class_text=base.class_text)
    datasets = installed_datasets(args.datasets)
    val_scores = {label(o): [] for o in JOINS}
    test_scores = {label(o): [] for o in JOINS}
    for name in datasets:
        dataset = load_dataset(name)
        train = extract_features(base, dataset, "train", cache=cache)
        test = extract_features(base, dataset, "test", cache=cache)
        _, val_idx = train_val_split(dataset, val_per_class=args.val_per_class, seed=0)
        rows = torch.isin(train.indices, torch.as_tensor(val_idx))
        val_visual, val_labels = train.visual[rows], train.labels[rows]
        classifier = cached_text_classifier(base, dataset.classnames, dataset.templates, cache)
        for options, encoder in zip(JOINS, encoders):
            val_scores[label(options)].append(top1(zeroshot_logits(encoder.join_visual(val_visual), classifier), val_labels))
            test_scores[label(options)].append(top1(zeroshot_logits(encoder.join_visual(test.visual), classifier), test.labels))
        print(name, {k: round(v[-1], 1) for k, v in val_scores.items()})
    mean = lambda xs: sum(xs) / len(xs)
    best = max(val_scores, key=lambda k: mean(val_scores[k]))
    headers = ["join"] + [f"{d} val" for d in datasets] + ["mean val", "mean test (info)"]
    rows = [[k] + val_scores[k] + [mean(val_scores[k]), mean(test_scores[k])] for k in val_scores]
    text = (
        f"# ConSE join selection on validation splits\n\nCommand: `{command_line()}`\n\n"
        f"Validation: up to {args.val_per_class} images per class carved from each train split (seed 0). "
        f"Selected on mean validation top-1: **{best}**. Test column is for information only.\n\n"
        + markdown_table(headers, rows) + "\n"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "conse_join.md").write_text(text)
    write_json(RESULTS / "conse_join.json", {"datasets": datasets, "val": val_scores, "test": test_scores, "selected": best})
    print(text)


if __name__ == "__main__":
    main()
