"""What the console charts and warns about, computed from a memory's prediction log in SQL.

`series` cuts the log's time span into B equal buckets and gives per bucket: predictions per
class, mean confidence p_max, mean normalised entropy H(p) / log C, the share of predictions
whose dynamic-memory write label differs from the served class, requests per second, p50 / p99
request latency, and accuracy on operator-confirmed labels (share of labelled rows whose label
equals the served class; None in a bucket without labels). Each bucket is one range scan of a
covering index (predlog's predictions_series: no row is read, nothing of the whole log is
sorted); latencies are read once per request (rows of one request share
their time), so the cost grows with requests, not with images.

`warnings` applies three documented rules:
  - never written: a class served at least `MIN_SERVED` times while the dynamic bank holds no
    entry of it (only for methods that write a dynamic memory);
  - collapse: among the last `COLLAPSE_WINDOW` write labels (at least `COLLAPSE_MIN`), one class
    takes more than max(0.6, min(0.9, 3 / C)) of them;
  - confidence drift: over the last `DRIFT_WINDOW` predictions, the newest quarter's mean
    confidence is lower than the older three quarters' by more than `DRIFT_DROP` and by more
    than two standard errors of the difference.
"""

from __future__ import annotations

import sqlite3

import numpy as np

MIN_SERVED = 5
COLLAPSE_WINDOW, COLLAPSE_MIN = 500, 50
DRIFT_WINDOW, DRIFT_DROP = 2000, 0.05


def series(conn: sqlite3.Connection, memory_id: str, num_classes: int, buckets: int = 48) -> dict:
    """Bucketed time series of a memory's log (see the module docstring); empty lists without rows."""
    lo, hi, n = conn.execute("SELECT min(time), max(time), count(*) FROM predictions WHERE memory_id = ?",
                             (memory_id,)).fetchone()
    out = {"start": lo, "width_s": None, "total": int(n), "buckets": []}
    if not n:
        return out
    width = max((hi - lo) / buckets, 1.0)
    B = min(buckets, int((hi - lo) // width) + 1)
    per_class = np.zeros((B, num_classes), dtype=np.int64)
    sums = np.zeros((B, 7))  # count, sum confidence, sum entropy, write differs, written, labelled, right
    lats = []
    for b in range(B):  # one index range scan per bucket: no sort of the whole log
        span = (memory_id, lo + b * width, hi + 1.0 if b == B - 1 else lo + (b + 1) * width)
        for c, *rest in conn.execute(
                "SELECT class, count(*), sum(confidence), sum(entropy), sum(write_label IS NOT NULL AND write_label != class), "
                "sum(write_label IS NOT NULL), sum(label IS NOT NULL), sum(label = class) FROM predictions "
                "WHERE memory_id = ? AND time >= ? AND time < ? GROUP BY class", span):
            if 0 <= c < num_classes:
                per_class[b, c] = rest[0]
            sums[b] += [v or 0 for v in rest]
        lats.append(np.array([r[0] for r in conn.execute(
            "SELECT max(latency_ms) FROM predictions WHERE memory_id = ? AND time >= ? AND time < ? GROUP BY time", span)]))
    out["width_s"] = width
    for b in range(B):
        count, conf, ent, differ, written, labelled, right = sums[b]
        lat = lats[b]
        out["buckets"].append({
            "t": lo + b * width, "count": int(count), "per_class": per_class[b].tolist(),
            "confidence": conf / count if count else None, "entropy": ent / count if count else None,
            "write_differs": (differ / written) if written else None,
            "requests_per_s": len(lat) / width,
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "labelled": int(labelled), "accuracy": (right / labelled) if labelled else None})
    return out


def warnings(conn: sqlite3.Connection, memory_id: str, classnames: list[str], fill: dict[str, list[int]],
             served: list[int] | None = None) -> list[dict]:
    """Actionable warnings from the log and the bank fill (rules in the module docstring).
    `served`: predictions per class over the whole log, if known (the sum of `series` per_class)."""
    C, out = len(classnames), []
    writes_dynamic = conn.execute("SELECT 1 FROM predictions WHERE memory_id = ? AND write_label IS NOT NULL LIMIT 1",
                                  (memory_id,)).fetchone() is not None
    if writes_dynamic:
        dynamic = fill.get("dynamic", [0] * C)
        if served is None:
            served = [0] * C
            for c, k in conn.execute("SELECT class, count(*) FROM predictions WHERE memory_id = ? GROUP BY class", (memory_id,)):
                if 0 <= c < C:
                    served[c] = k
        for c, k in enumerate(served):
            if k >= MIN_SERVED and dynamic[c] == 0:
                out.append({"kind": "never-written", "class": classnames[c],
                            "message": f"class {classnames[c]!r} was served {k} times but its dynamic memory holds no "
                                       "entry: the write label (the zero-shot rule by default) never named it; "
                                       "consider the 'final' write label or more support of this class"})
        labels = [r[0] for r in conn.execute("SELECT write_label FROM predictions WHERE memory_id = ? AND write_label IS NOT NULL "
                                             "ORDER BY id DESC LIMIT ?", (memory_id, COLLAPSE_WINDOW))]
        if len(labels) >= COLLAPSE_MIN:
            counts = np.bincount(np.asarray(labels), minlength=C)
            top = int(counts.argmax())
            share, limit = counts[top] / len(labels), max(0.6, min(0.9, 3.0 / C))
            if share > limit:
                out.append({"kind": "collapse", "class": classnames[top],
                            "message": f"class {classnames[top]!r} took {share:.0%} of the last {len(labels)} dynamic-memory "
                                       f"writes (limit {limit:.0%}): the memory may be collapsing onto it"})
    conf = np.array([r[0] for r in conn.execute("SELECT confidence FROM predictions WHERE memory_id = ? ORDER BY id DESC "
                                                "LIMIT ?", (memory_id, DRIFT_WINDOW))], dtype=np.float64)[::-1]
    if len(conf) >= 200:
        cut = len(conf) * 3 // 4
        old, new = conf[:cut], conf[cut:]
        drop = old.mean() - new.mean()
        se = float(np.sqrt(old.var(ddof=1) / len(old) + new.var(ddof=1) / len(new)))
        if drop > DRIFT_DROP and drop > 2 * se:
            out.append({"kind": "confidence-drift", "class": None,
                        "message": f"mean confidence fell from {old.mean():.3f} to {new.mean():.3f} over the last "
                                   f"{len(conf)} predictions (more than 2 standard errors, {se:.3f})"})
    return out
