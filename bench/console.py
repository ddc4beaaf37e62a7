"""Latency of the console's data endpoint with a long prediction log, against an empty memory.

    python bench/console.py --rows 100000 --calls 20

Builds genba's app (tiny encoder) on a fresh store, creates two dmn-tf memories with log_size =
--rows and the same support, serves one real predict request to each (so the live memory is
built), then fills one memory's log with --rows rows through the logging code itself
(`predlog.log_rows` + `predlog.insert`, requests of 8 images, one request per second of simulated
time, random probabilities over 10 classes, a tenth labelled). It then times GET
/memories/{id}/console.json through the ASGI test client, --calls times per memory after one
warm-up call, and reports the median, p90 and max in ms and the ratio of medians. Goal: median
under 200 ms at 100,000 rows. Writes bench/results/console.json, then console.md.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, command_line  # noqa: E402

from genba.cache import atomic_write_bytes  # noqa: E402
from genba.report import markdown_table  # noqa: E402

ADMIN = "bench-console-admin-token-0123"
CLASSES = [f"class {c}" for c in range(10)]


def png(rgb) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 24), rgb).save(out, "PNG")
    return out.getvalue()


def fill_log(store, memory_id: str, rows: int, seed: int = 0) -> float:
    """Append `rows` log rows in requests of 8 through predlog; returns the seconds it took."""
    from genba.store import predlog

    rng = np.random.default_rng(seed)
    spec, start, t0 = store.spec(memory_id), time.time() - rows / 8, time.perf_counter()
    D, C = spec.dim, len(CLASSES)
    blob = np.zeros(D, np.float16).tobytes()
    for r in range(0, rows, 8 * 500):
        with store.transaction() as conn:
            for k in range(r, min(rows, r + 8 * 500), 8):
                n = min(8, rows - k)
                probs = rng.dirichlet(np.full(C, 0.3), size=n)
                labels = rng.integers(0, C, size=n)
                items = predlog.log_rows(probs, labels, [f"src-{k + i}" for i in range(n)], float(rng.gamma(4, 10)), 1,
                                         [blob] * n, [None] * n, None, start + k / 8)
                ids = predlog.insert(conn, memory_id, items, spec.log_size)
                if k % 80 == 0:
                    predlog.set_label(conn, memory_id, ids[0], int(labels[0]), None, start + k / 8)
    return time.perf_counter() - t0


def time_calls(client, memory_id: str, calls: int) -> list[float]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    assert client.get(f"/memories/{memory_id}/console.json", headers=headers).status_code == 200  # warm-up
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        r = client.get(f"/memories/{memory_id}/console.json", headers=headers)
        out.append((time.perf_counter() - t0) * 1000.0)
        assert r.status_code == 200, r.text
    return out


def main() -> None:
    import argparse

    from fastapi.testclient import TestClient

    from genba.serve import create_app
    from genba.store import predlog

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="genba-bench-console-"))
    app = create_app(folder / "s.sqlite", ADMIN, encoders=("tiny",))
    headers = {"Authorization": f"Bearer {ADMIN}"}
    result = {"command": command_line(), "rows": args.rows, "calls": args.calls, "memories": {}}
    with TestClient(app) as client:
        ids = {}
        for name in ("empty", "full"):
            r = client.post("/memories", headers=headers, json={"classnames": CLASSES, "encoder": "tiny", "name": name,
                                                                "log_size": max(args.rows, 1)})
            memory_id = ids[name] = r.json()["id"]
            colours = [(25 * c, 200 - 15 * c, 90) for c in range(len(CLASSES))]
            client.post(f"/memories/{memory_id}/support", headers=headers,
                        files=[("files", (f"s{c}.png", png(rgb), "image/png")) for c, rgb in enumerate(colours)],
                        data={"labels": CLASSES}).raise_for_status()
        store = app.state.service.store
        client.post(f"/memories/{ids['full']}/predict", headers=headers,
                    files=[("files", ("q.png", png((10, 20, 30)), "image/png"))]).raise_for_status()
        fill_seconds = fill_log(store, ids["full"], args.rows - 1)
        for name, memory_id in ids.items():
            times = time_calls(client, memory_id, args.calls)
            result["memories"][name] = {"logged": predlog.count(store._conn(), memory_id),
                                        "median_ms": statistics.median(times), "p90_ms": float(np.percentile(times, 90)),
                                        "max_ms": max(times), "times_ms": times}
        result["fill_seconds"] = fill_seconds
    full, empty = result["memories"]["full"], result["memories"]["empty"]
    result["ratio"] = full["median_ms"] / empty["median_ms"]
    result["goal_met"] = full["median_ms"] < 200.0
    RESULTS.mkdir(exist_ok=True)
    atomic_write_bytes(RESULTS / "console.json", json.dumps(result, indent=1).encode())
    rows = [[name, m["logged"], f"{m['median_ms']:.1f}", f"{m['p90_ms']:.1f}", f"{m['max_ms']:.1f}"]
            for name, m in result["memories"].items()]
    md = [f"# Console data endpoint latency\n\n`{result['command']}`\n",
          f"GET /memories/{{id}}/console.json through the ASGI test client, {args.calls} calls per memory after one "
          "warm-up; the log was filled through predlog.log_rows + insert (requests of 8, one per simulated second, "
          f"a tenth labelled) in {fill_seconds:.1f} s.\n",
          markdown_table(["memory", "logged predictions", "median ms", "p90 ms", "max ms"], rows), "",
          f"Ratio of medians (full / empty): {result['ratio']:.1f}x. Goal: median under 200 ms at {args.rows:,} rows: "
          f"{'met' if result['goal_met'] else 'NOT met'} ({full['median_ms']:.1f} ms).",
          f"Machine: {__import__('os').cpu_count()} CPUs, measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."]
    (RESULTS / "console.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
