"""Cost of DMN's dynamic memory at ImageNet scale, against the bandwidth limit and a per-class loop.

For C classes x L slots x D dims of synthetic unit features (plus one pinned text row per class,
as DMN reads it), measures in one run:
  * bytes held by the memory,
  * the time to stream those bytes once (torch sum over every tensor, best of several runs),
  * per-query read+write time, one query at a time and in batches of 64,
  * the same for a straightforward implementation of the same equations shaped like the
    reference code: a Python list of per-class float32 tensors, read class by class.
Absolute times depend on the machine and its load; the ratios are the result.

    python bench/memory_cost.py [--classes 1000 --capacity 50 --dim 512 --queries 200]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from genba.memory import DynamicMemory
from genba.memory.read import l2_normalize


class LoopMemory:
    """The reference shape: per-class Python lists, read and written class by class (float32)."""

    def __init__(self, num_classes: int, capacity: int, pinned: torch.Tensor) -> None:
        self.capacity = capacity
        self.feats = [[] for _ in range(num_classes)]  # C lists of (D,) tensors
        self.ents = [[] for _ in range(num_classes)]
        self.pinned = [pinned[c] for c in range(num_classes)]  # C x (E, D)

    def write(self, x: torch.Tensor, c: int, h: float) -> None:
        if len(self.feats[c]) < self.capacity:
            self.feats[c].append(x.clone())
            self.ents[c].append(h)
            return
        j = max(range(self.capacity), key=self.ents[c].__getitem__)
        if h < self.ents[c][j]:
            self.feats[c][j], self.ents[c][j] = x.clone(), h

    def read(self, q: torch.Tensor, beta: float = 5.5, scale: float = 100.0) -> torch.Tensor:
        out = torch.empty(q.shape[0], len(self.feats))
        for c in range(len(self.feats)):
            rows = torch.cat([torch.stack(self.feats[c]), self.pinned[c]]) if self.feats[c] else self.pinned[c]
            w = torch.exp(-beta * (1 - q @ rows.T))  # (B, S)
            proto = l2_normalize(w @ rows)  # (B, D)
            out[:, c] = scale * (proto * q).sum(-1)
        return out

    @property
    def nbytes(self) -> int:
        n = sum(x.numel() * x.element_size() for f in self.feats for x in f)
        return n + sum(p.numel() * p.element_size() for p in self.pinned) + 8 * sum(map(len, self.ents))

    def tensors(self) -> list[torch.Tensor]:
        return [x for f in self.feats for x in f] + self.pinned


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of `fn()` in seconds over `repeats` runs (after one warm-up)."""
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


def per_query(step, queries: torch.Tensor, classes: torch.Tensor, ents: torch.Tensor, batch: int) -> float:
    """Median seconds per query of `step(q, c, h)` over the queries, `batch` at a time."""
    ts = []
    for i in range(0, queries.shape[0] - batch + 1, batch):
        t0 = time.perf_counter()
        step(queries[i : i + batch], classes[i : i + batch], ents[i : i + batch])
        ts.append((time.perf_counter() - t0) / batch)
    return statistics.median(ts)


def measure(name: str, mem, stream_tensors, write_one, write_many, read, q, c, h, args) -> dict:
    stream = best_of(lambda: [t.sum() for t in stream_tensors], 30)

    def one(qb, cb, hb):
        write_one(qb[0], int(cb[0]), float(hb[0]))
        read(qb)

    def many(qb, cb, hb):
        write_many(qb, cb, hb)
        read(qb)

    t1 = per_query(one, q, c, h, 1)
    t64 = per_query(many, q.repeat(4, 1), c.repeat(4), h.repeat(4), 64)
    return {"name": name, "mb": mem.nbytes / 1e6, "stream": stream, "one": t1, "b64": t64}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--capacity", type=int, default=50)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory_cost.md"))
    args = ap.parse_args(argv)
    C, L, D = args.classes, args.capacity, args.dim
    g = torch.Generator().manual_seed(0)
    text = l2_normalize(torch.randn(C, 1, D, generator=g))  # (C, 1, D) pinned text rows
    fill = l2_normalize(torch.randn(C * L, D, generator=g))  # (C*L, D)
    fill_cls = torch.arange(C).repeat_interleave(L)
    fill_ent = torch.rand(C * L, generator=g) + 1.0
    q = l2_normalize(torch.randn(args.queries, D, generator=g))  # (Q, D)
    qc = torch.randint(0, C, (args.queries,), generator=g)
    qh = torch.rand(args.queries, generator=g) * 2.0  # about half the writes replace a slot

    rows = []
    for dtype in ("float16", "float32"):
        mem = DynamicMemory(C, L, D, dtype=dtype, pinned=text)
        t0 = time.perf_counter()
        mem.write_batch(fill, fill_cls, fill_ent)
        fill_s = time.perf_counter() - t0
        ts = [t for t in (mem.rows, mem.gram, mem.valid, mem.entropy) if t is not None]
        r = measure(f"genba DynamicMemory ({dtype})", mem, ts,
                    lambda x, c, h: mem.write(x, c, h), lambda x, c, h: mem.write_batch(x, c, h),
                    lambda x: mem.read(x), q, qc, qh, args)
        r["fill"] = fill_s / (C * L)
        rows.append(r)
        ref_logits = mem.read(q[:4])
    loop = LoopMemory(C, L, text[:, :, :].squeeze(1)[:, None, :].clone())
    t0 = time.perf_counter()
    for i in range(C * L):
        loop.write(fill[i], int(fill_cls[i]), float(fill_ent[i]))
    fill_s = time.perf_counter() - t0
    r = measure("per-class loop (reference shape, float32)", loop, loop.tensors(),
                loop.write, lambda x, c, h: [loop.write(x[i], int(c[i]), float(h[i])) for i in range(len(c))],
                loop.read, q, qc, qh, args)
    r["fill"] = fill_s / (C * L)
    rows.append(r)
    agree = (loop.read(q[:4]) - ref_logits).abs().max().item()

    cmd = "python bench/memory_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [f"`{cmd.strip()}`", "",
             f"C={C} classes, L={L} slots, D={D}, one pinned text row per class; torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads. Times are medians per query (best of 30 for the stream); "
             "ratios are to the same implementation's own stream time.", "",
             "| implementation | MB held | stream once (ms) | read+write, 1 query (ms) | x stream "
             "| read+write, batch 64 (ms/query) | x stream | write, fill (us) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['mb']:.1f} | {r['stream'] * 1e3:.2f} | {r['one'] * 1e3:.2f} | "
                     f"{r['one'] / r['stream']:.2f} | {r['b64'] * 1e3:.3f} | {r['b64'] / r['stream']:.2f} | "
                     f"{r['fill'] * 1e6:.0f} |")
    ref = rows[-1]
    lines += ["", f"Speed-up of genba float16 over the per-class loop: {ref['one'] / rows[0]['one']:.1f}x "
              f"(1 query), {ref['b64'] / rows[0]['b64']:.1f}x (batch 64); bytes {ref['mb'] / rows[0]['mb']:.2f}x "
              f"fewer. Max |logit difference| genba float32 vs loop: {agree:.2e}."]
    text_out = "\n".join(lines) + "\n"
    print(text_out)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text_out)
    if not math.isfinite(agree) or agree > 1e-2:
        raise SystemExit("genba and the per-class loop disagree")


if __name__ == "__main__":
    main()
