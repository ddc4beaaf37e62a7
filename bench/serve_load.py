"""Load benchmark of `genba serve`: concurrent clients on loopback, then a durability audit.

    python bench/serve_load.py --encoders tiny conse --clients 8 --seconds 20 --accuracy

For each encoder: start `genba serve` on 127.0.0.1 (a free port, a fresh store), create a dmn-tf
memory for the textile classes with 4 support images per class, then run `--clients` threads for
`--seconds` (both bounded), each mixing predict with a test-time update (70%, 1-4 textile images),
support uploads (20%) and inspections (10%). Reported: requests and images per second, p50 / p99
latency per operation. After the server stops, every acknowledged write is checked in the store:
each acknowledged support source id is an entry, each acknowledged update is in the write log, each
entry id a response reported is present or logged as displaced, and `Store.check()` is clean.
`--accuracy` adds the top-1 cost of int8 vs float16 storage on the textile test stream.
Writes bench/results/serve.md with the command at the top.
"""

from __future__ import annotations

import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, base_parser, command_line  # noqa: E402

from genba.cache import atomic_write_bytes  # noqa: E402
from genba.report import markdown_table  # noqa: E402
from genba.store import Store  # noqa: E402

CLASSES = [("nominal", "nominal fabric"), ("local", "fabric with a local defect"), ("global", "fabric with a global defect")]
TEMPLATES = ["a photo of a {}.", "a close-up photo of a {}.", "an inspection photo of a {}."]


def textile_files() -> dict[str, list[Path]]:
    import conformal_clip_data

    root = Path(conformal_clip_data.textile_simulated_root())
    return {folder: sorted((root / folder).glob("*.jpg")) for folder, _ in CLASSES}


def start_server(store: Path, encoder: str, token: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GENBA_ADMIN_TOKEN": token}
    proc = subprocess.Popen([sys.executable, "-m", "genba.cli", "serve", "--store", str(store), "--host", "127.0.0.1",
                             "--port", str(port), "--encoders", encoder, "--quiet"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"genba serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("genba serve did not answer within 180 s")


def upload(paths: list[Path]) -> list[tuple]:
    return [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths]


def client_loop(k: int, base: str, auth: dict, pool: list[tuple[Path, str]], deadline: float, max_requests: int, out: dict) -> None:
    rng = random.Random(k)
    log, acked_support, acked_updates, entry_ids = [], [], [], []
    with httpx.Client(base_url=base, headers=auth, timeout=120) as c:
        for i in range(max_requests):
            if time.time() >= deadline:
                break
            r0, t0 = rng.random(), time.perf_counter()
            if r0 < 0.7:
                picks = rng.sample(pool, rng.randint(1, 4))
                sources = [f"c{k}-q{i}-{j}" for j in range(len(picks))]
                r = c.post(f"{out['path']}/predict", files=upload([p for p, _ in picks]),
                           data={"update": "true", "source_ids": sources})
                op, n = "predict+update", len(picks)
                if r.status_code == 200:
                    acked_updates += sources
                    entry_ids += [w["entry_id"] for p in r.json()["predictions"] for w in p["writes"] if "entry_id" in w]
            elif r0 < 0.9:
                path, label = rng.choice(pool)
                source = f"c{k}-s{i}"
                r = c.post(f"{out['path']}/support", files=upload([path]), data={"labels": [label], "source_ids": [source]})
                op, n = "support", 1
                if r.status_code == 200:
                    acked_support.append(source)
            else:
                r = c.get(out["path"])
                op, n = "inspect", 0
            log.append((op, r.status_code, time.perf_counter() - t0, n))
    with out["lock"]:
        out["log"] += log
        out["support"] += acked_support
        out["updates"] += acked_updates
        out["entries"] += entry_ids


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else values[0] * 1000


def run_load(encoder: str, clients: int, seconds: float, max_requests: int, workdir: Path) -> dict:
    token, store_path = "bench-admin-token-0001", workdir / f"serve-{encoder}.sqlite"
    files = textile_files()
    proc, base = start_server(store_path, encoder, token)
    try:
        admin = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{base}/memories", headers=admin, timeout=300, json={
            "classnames": [n for _, n in CLASSES], "templates": TEMPLATES, "encoder": encoder, "method": "dmn-tf", "name": "bench"})
        r.raise_for_status()
        memory_id, auth = r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}
        support = [(files[f][i], name) for f, name in CLASSES for i in range(4)]
        httpx.post(f"{base}/memories/{memory_id}/support", headers=auth, timeout=300, files=upload([p for p, _ in support]),
                   data={"labels": [n for _, n in support]}).raise_for_status()
        pool = [(p, name) for f, name in CLASSES for p in files[f][4:]]
        out = {"lock": threading.Lock(), "log": [], "support": [], "updates": [], "entries": [], "path": f"/memories/{memory_id}"}
        start = time.time()
        threads = [threading.Thread(target=client_loop, args=(k, base, auth, pool, start + seconds, max_requests, out))
                   for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.time() - start
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    store = Store(store_path, create=False)
    entries = store.entries(memory_id)
    logged = {w["source_id"] for w in store.writes(memory_id, 10**7)}
    removed = {w["old_id"] for w in store.writes(memory_id, 10**7) if w["old_id"] is not None}
    present = set(entries.ids.tolist())
    audit = {
        "support_missing": sorted(set(out["support"]) - {s for b, s in zip(entries.banks, entries.sources) if b == "static"}),
        "updates_missing": sorted(set(out["updates"]) - logged),
        "entries_missing": sorted(set(out["entries"]) - present - removed),
        "check": store.check(),
    }
    store.close()
    log = out["log"]
    ok = [x for x in log if x[1] == 200]
    per_op = {op: [x[2] for x in ok if x[0] == op] for op in ("predict+update", "support", "inspect")}
    return {"encoder": encoder, "clients": clients, "seconds": elapsed, "requests": len(log), "ok": len(ok),
            "errors": {s: sum(1 for x in log if x[1] == s) for s in sorted({x[1] for x in log} - {200})},
            "images": sum(x[3] for x in ok), "all": [x[2] for x in ok], "per_op": per_op, "acked_support": len(out["support"]),
            "acked_updates": len(out["updates"]), "acked_entries": len(out["entries"]), "audit": audit}


def int8_cost(encoder_spec: str, cache_dir: str, shots: int, workdir: Path) -> list[list]:
    """Top-1 on the textile test stream with the memory stored as float16 vs int8."""
    import torch

    from genba.cache import TensorCache
    from genba.data import load_dataset
    from genba.data.splits import sample_few_shot
    from genba.encoders import load_encoder
    from genba.features import extract_features
    from genba.live import LiveMemory, create_memory

    encoder, dataset = load_encoder(encoder_spec), load_dataset("textile")
    cache = TensorCache(cache_dir)
    train, test = (extract_features(encoder, dataset, s, cache=cache, progress=False) for s in ("train", "test"))
    pick = sample_few_shot(dataset, dataset.splits["train"], shots, seed=0)
    rows = torch.as_tensor([int((train.indices == i).nonzero()) for i in pick])
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))
    rows_out = []
    for method in ("tip-adapter", "dmn-tf"):
        accs = {}
        for fmt in ("float16", "int8"):
            store = Store(workdir / f"acc-{encoder_spec}-{method}-{fmt}.sqlite")
            memory_id = create_memory(store, encoder, encoder_spec, dataset.classnames, dataset.templates, method, feature_format=fmt)
            live = LiveMemory(store, memory_id)
            live.add_support(train.image[rows], train.labels[rows], [f"s{i}" for i in pick])
            probs, _ = live.predict(test.image[order], update=True, source_ids=[f"q{int(i)}" for i in order])
            accs[fmt] = 100.0 * (probs.argmax(1) == test.labels[order]).float().mean().item()
            store.close()
        D = encoder.embed_dim
        rows_out.append([encoder_spec, "textile", method, shots, len(test), f"{accs['float16']:.2f}", f"{accs['int8']:.2f}",
                         f"{accs['int8'] - accs['float16']:+.2f}", f"{2 * D} / {D + 8}"])
    return rows_out


def report(results: list[dict], accuracy: list[list]) -> str:
    lines = [f"# genba serve under load\n\nCommand: `{command_line()}`\n",
             f"Machine: {os.cpu_count()} CPU cores shared with other jobs; clients and server on loopback 127.0.0.1; "
             "store in WAL mode with synchronous=FULL (one fsync per acknowledged write); method dmn-tf on the "
             "textile classes, 4 support images per class at start. Mix: 70% predict with a test-time update "
             "(1-4 images), 20% support upload (1 image), 10% inspect.\n"]
    rows = [[r["encoder"], r["clients"], f"{r['seconds']:.1f}", r["requests"], sum(r["errors"].values()),
             f"{r['ok'] / r['seconds']:.1f}", f"{r['images'] / r['seconds']:.1f}", f"{pct(r['all'], 50):.0f}", f"{pct(r['all'], 99):.0f}"]
            for r in results]
    lines.append(markdown_table(["encoder", "clients", "seconds", "requests", "errors", "req/s", "images/s", "p50 ms", "p99 ms"], rows))
    lines.append("\nLatency per operation (successful requests):\n")
    op_rows = [[r["encoder"], op, len(v), f"{pct(v, 50):.0f}", f"{pct(v, 99):.0f}"] for r in results for op, v in r["per_op"].items() if v]
    lines.append(markdown_table(["encoder", "operation", "n", "p50 ms", "p99 ms"], op_rows))
    lines.append("\nDurability audit after the server stopped (every acknowledged write must be in the store):\n")
    audit_rows = [[r["encoder"], r["acked_support"], len(r["audit"]["support_missing"]), r["acked_updates"],
                   len(r["audit"]["updates_missing"]), r["acked_entries"], len(r["audit"]["entries_missing"]),
                   "ok" if not r["audit"]["check"] else "; ".join(r["audit"]["check"][:3]),
                   ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "none"] for r in results]
    lines.append(markdown_table(["encoder", "acked support", "missing", "acked updates", "not logged", "acked entries",
                                 "lost", "Store.check()", "HTTP errors"], audit_rows))
    if accuracy:
        lines.append("\n## Storage format: int8 vs float16\n\nTop-1 (%) on the textile test split streamed once in a seeded "
                     "order, support drawn from train (seed 0), memories stored and read back through the store "
                     "(the method's RAM holds exactly what the store decodes). Bytes per stored feature row: "
                     "float16 2D, int8 D + an 8-byte scale.\n")
        lines.append(markdown_table(["encoder", "dataset", "method", "shots", "n test", "float16", "int8", "int8 - float16",
                                     "bytes/row fp16 / int8"], accuracy))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--encoders", nargs="+", default=["tiny"], help="encoders to load-test (default tiny)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients, at most 32")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration per encoder, at most 120")
    parser.add_argument("--max-requests", type=int, default=2000, help="requests per client, at most 10000")
    parser.add_argument("--accuracy", action="store_true", help="also measure int8 vs float16 top-1")
    parser.add_argument("--shots", type=int, default=4)
    args = parser.parse_args()
    clients, seconds, max_requests = min(max(1, args.clients), 32), min(max(1.0, args.seconds), 120.0), min(args.max_requests, 10_000)
    with tempfile.TemporaryDirectory(prefix="genba-serve-bench-") as tmp:
        results = []
        for encoder in args.encoders:
            results.append(run_load(encoder, clients, seconds, max_requests, Path(tmp)))
            r = results[-1]
            print(f"{encoder}: {r['ok']}/{r['requests']} ok in {r['seconds']:.1f}s, p50 {pct(r['all'], 50):.0f} ms, "
                  f"p99 {pct(r['all'], 99):.0f} ms, audit {r['audit']}", flush=True)
        accuracy = [row for e in args.encoders for row in int8_cost(e, args.cache_dir, args.shots, Path(tmp))] if args.accuracy else []
    text = report(results, accuracy)
    atomic_write_bytes(RESULTS / "serve.md", text.encode())
    print(text)


if __name__ == "__main__":
    main()
