"""Where should caches and memories live: the VLM's joint space or the encoder's visual features?

    python bench/space.py [--datasets ...] [--shots 4 16] [--seeds 0 1 2]

For each method with a cache or memory, both spaces run the same protocol (genba.adapt:
hyperparameters chosen on validation carved from train). The choice is made on the mean
VALIDATION top-1 (the best grid point's score); test top-1 is shown for information.
Writes bench/results/space.md.
"""

from __future__ import annotations

import statistics

import torch

from _common import RESULTS, base_parser, installed_datasets

from genba.adapt import AdaptSpec, prepare, run_adapt
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.experiment import ResultWriter
from genba.methods import get_method
from genba.report import markdown_table

METHODS = ["tip-adapter", "dmn-tf", "tda", "dmn-zs"]  # the memories whose space is in question


def shots_of(method: str, shots: list[int]) -> list[int]:
    return shots if get_method(method).needs_support else [0]


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--shots", nargs="*", type=int, default=[4, 16])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    scores: dict[tuple, dict[str, list]] = {}
    for name in installed_datasets(args.datasets):
        dataset = load_dataset(name)
        data = prepare(encoder, dataset, cache=cache)
        for method in METHODS:
            for shots in shots_of(method, args.shots):
                for space in ("joint", "visual"):
                    cell = scores.setdefault((method, shots, space), {"val": [], "test": []})
                    for seed in args.seeds:
                        r = run_adapt(encoder, dataset, AdaptSpec(method=method, shots=shots, seed=seed, space=space), data=data)
                        cell["val"].append(r["val_top1"])
                        cell["test"].append(r["top1"])
                    print(name, method, shots, space, round(statistics.mean(cell["val"][-len(args.seeds):]), 1), flush=True)
    rows, votes = [], {"joint": 0, "visual": 0}
    for (method, shots, space), cell in scores.items():
        rows.append([method, shots, space, statistics.mean(cell["val"]), statistics.mean(cell["test"])])
    for method in METHODS:
        for shots in shots_of(method, args.shots):
            best = max(("joint", "visual"), key=lambda sp: statistics.mean(scores[(method, shots, sp)]["val"]))
            votes[best] += 1
    text = (
        f"Mean over datasets and seeds {args.seeds}. Chosen on validation: visual wins {votes['visual']} of "
        f"{sum(votes.values())} method x shots cells, joint {votes['joint']}.\n\n"
        + markdown_table(["method", "shots", "space", "val top-1 (choice)", "test top-1 (info)"], rows)
    )
    ResultWriter("space", RESULTS).markdown(f"Cache space: joint vs visual, encoder `{args.encoder}`", text)
    print(text)


if __name__ == "__main__":
    main()
