"""What keeping a trained method's learned tensors in the store saves: rebuild time of a live memory.

    python bench/learned_state.py [--dataset textile] [--shots 16] [--methods dmn tip-adapter-f linear-probe]

Per method: a memory on the conse encoder's cached features of `--dataset`, `--shots` labelled
support images per class (seed 0) uploaded once. Then, in the same process, a LiveMemory is
built from the store `--repeats` times with its learned tensors in the store (restored) and as
many times with the learned_states row removed first (it trains, as every rebuild did before).
Reported: median rebuild seconds of each and their ratio, and the largest |difference| between
the two memories' predictions on the test split (0: restoring is exact). Writes
bench/results/learned_state.{md,json}.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, base_parser

from genba.adapt import prepare
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.encoders import load_encoder
from genba.experiment import ResultWriter
from genba.live import LiveMemory, create_memory
from genba.report import markdown_table
from genba.store import Store


def rebuild_seconds(store: Store, memory_id: str, *, drop: bool) -> tuple[float, LiveMemory]:
    if drop:
        store._conn().execute("DELETE FROM learned_states WHERE memory_id = ?", (memory_id,))
    start = time.perf_counter()
    live = LiveMemory(store, memory_id)
    return time.perf_counter() - start, live


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--dataset", default="textile")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=["dmn", "tip-adapter-f", "linear-probe"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    encoder, cache = load_encoder(args.encoder), TensorCache(args.cache_dir)
    ds = load_dataset(args.dataset)
    data = prepare(encoder, ds, cache=cache, progress=False)
    rng = np.random.default_rng(0)
    labels = data.train.labels.numpy()
    support = np.concatenate([rng.choice(np.flatnonzero(labels == c), args.shots, replace=False)
                              for c in range(ds.num_classes)])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            store = Store(Path(tmp) / f"{method}.sqlite")
            memory_id = create_memory(store, encoder, args.encoder, ds.classnames, ds.templates, method)
            LiveMemory(store, memory_id).add_support(data.train.image[support], labels[support].tolist(),
                                                     [f"s{i}" for i in support])
            restored = [rebuild_seconds(store, memory_id, drop=False) for _ in range(args.repeats)]
            trained = [rebuild_seconds(store, memory_id, drop=True) for _ in range(args.repeats)]
            q = data.test.image
            diff = (restored[-1][1].predict(q)[0] - trained[-1][1].predict(q)[0]).abs().max().item()
            r, t = statistics.median(s for s, _ in restored), statistics.median(s for s, _ in trained)
            rows.append({"method": method, "restored_s": r, "trained_s": t, "ratio": t / r, "max_abs_diff": diff})
            print(rows[-1], flush=True)
            store.close()
    table = markdown_table(["method", "rebuild, restored (s)", "rebuild, trains (s)", "trains / restored",
                            "max abs difference of p"],
                           [[x["method"], f"{x['restored_s']:.3f}", f"{x['trained_s']:.3f}", f"{x['ratio']:.1f}x",
                             f"{x['max_abs_diff']:.1e}"] for x in rows])
    writer = ResultWriter("learned_state", RESULTS)
    writer.json({"dataset": args.dataset, "shots": args.shots, "repeats": args.repeats, "rows": rows})
    writer.markdown("Learned method state kept in the store: rebuild time of a live memory",
                    f"{args.dataset}, {args.shots} shots per class (seed 0), encoder `{args.encoder}`, one torch "
                    f"thread, median of {args.repeats} rebuilds each, same process.\n\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
