"""Test-time augmented views: accuracy and cost, views 1 vs V, for the test-time methods.

    python bench/views.py [--dataset textile] [--views 8] [--seeds 0 1 2] [--max-test N]

Extraction cost is measured here (cold cache for the augmented views: each view is one more
pass of the encoder over the test split); stream cost is the methods' own time. Fixed paper
hyperparameters except the b weights/alpha chosen on validation as in bench/adapt.py.
`--max-test` streams a seeded subset of the test split (only those images get augmented views).
Writes bench/results/views_<dataset>.md.
"""

from __future__ import annotations

import statistics
import time

import torch

from _common import RESULTS, base_parser

from genba.adapt import AdaptSpec, augmented_test_feats, prepare, run_adapt
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.experiment import ResultWriter, cap_split, format_mean_std
from genba.report import markdown_table


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--dataset", default="textile")
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--max-test", type=int, default=0, help="seeded test subset (0: the whole test split)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder, cache, dataset = load_encoder(args.encoder), TensorCache(args.cache_dir), load_dataset(args.dataset)
    data = prepare(encoder, dataset, cache=cache)
    data.test = cap_split(data.test, args.max_test, seed=0)
    start = time.perf_counter()
    augmented_test_feats(encoder, dataset, data.test, args.views, cache=cache, centre=data.centre, space="visual")
    extraction = time.perf_counter() - start
    rows = []
    for method, shots in (("tda", 0), ("dmn-zs", 0), ("dmn-tf", args.shots)):
        for views in (1, args.views):
            runs = [run_adapt(encoder, dataset, AdaptSpec(method=method, shots=shots, seed=s, views=views), data=data, cache=cache, progress=False)
                    for s in args.seeds]
            accs = [r["top1"] for r in runs]
            per_query_ms = 1000 * statistics.mean(r["stream_seconds"] for r in runs) / runs[0]["n"]
            rows.append([method, shots, views, format_mean_std(accs), f"{per_query_ms:.2f}"])
            print(rows[-1], flush=True)
    text = (
        f"Extracting {args.views - 1} augmented views of {len(data.test)} test images took {extraction:.0f} s "
        f"({1000 * extraction / max(1, (args.views - 1) * len(data.test)):.1f} ms per image-view; one encoder pass per view; zero when cached). Seeds {args.seeds}; hyperparameters chosen on validation.\n\n"
        + markdown_table(["method", "shots", "views", "top-1 (%)", "stream ms / query"], rows)
    )
    ResultWriter(f"views_{args.dataset}", RESULTS).markdown(f"Test-time views on `{args.dataset}`", text)
    print(text)


if __name__ == "__main__":
    main()
