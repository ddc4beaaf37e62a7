"""Extraction speed and accuracy of conse's image tower per runtime (issue 20), one script, one run.

    python bench/extract.py [--datasets textile digits] [--whole 400] [--shots 16]

For each runtime (torch fp32 eager, onnx fp32, onnx int8 static; genba.encoders.onnx_tower):
  * encoder alone: images/s of the tower (pixels already preprocessed: seeded crops of real
    photographs) at batch 1 and 32, best of 3 timed passes after a warm-up;
  * whole extraction, cold: extract_features of the first --whole images of textile's test split
    into an empty cache (decode + resize in DataLoader workers + encode), images/s, and the largest
    difference of its joint features from torch's;
  * top-1 of zeroshot, tip-adapter and dmn-tf at --shots shots (seed 0, hyperparameters chosen on
    the validation split carved from train, as `genba adapt`) on each dataset; torch reads the
    shared feature cache, the ONNX runtimes have their own keys (runtime in the key).
Machine load changes absolute times; the runtimes are timed back to back in the same run.
Writes bench/results/extract.json and extract.md.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, base_parser, command_line

from genba.adapt import AdaptSpec, prepare, run_adapt
from genba.cache import TensorCache
from genba.data import load_dataset
from genba.data.table import Dataset
from genba.device import Hardware, use
from genba.encoders import load_encoder
from genba.encoders.onnx_tower import _photo_crops
from genba.features import extract_features
from genba.report import markdown_table, write_json

RUNTIMES = ("torch", "onnx", "onnx-int8")
METHODS = ("zeroshot", "tip-adapter", "dmn-tf")


def hardware(runtime: str) -> Hardware:
    return Hardware(torch.device("cpu"), "fp32", runtime)


def tower_speed(encoder, runtime: str, pixels: torch.Tensor, batch: int) -> float:
    """Images/s of the tower alone at `batch` (best of 3 passes over `pixels`)."""
    with use(hardware(runtime)):
        encoder.visual_and_logits(pixels[:batch])  # warm-up (and graph load)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for i in range(0, len(pixels), batch):
                encoder.visual_and_logits(pixels[i:i + batch])
            best = min(best, time.perf_counter() - start)
    return len(pixels) / best


def first_images(dataset: Dataset, split: str, count: int) -> Dataset:
    """`dataset` with `split` cut to its first `count` images (a fingerprint of its own)."""
    from dataclasses import replace

    splits = dict(dataset.splits)
    splits[split] = splits[split][:count]
    return replace(dataset, name=f"{dataset.name}[:{count}]", splits=splits, fingerprint=f"{dataset.fingerprint}:{split}:{count}")


def main() -> None:
    parser = base_parser(__doc__.split("\n")[0])
    parser.add_argument("--whole", type=int, default=400, help="images of the cold whole-extraction run")
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--runtimes", nargs="*", default=list(RUNTIMES), choices=RUNTIMES)
    parser.set_defaults(datasets=["textile", "digits"])  # the ONNX runtimes extract every image anew: the small two
    args = parser.parse_args()
    out = {"command": command_line(), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
           "load_before": os.getloadavg(), "runtimes": {}}
    encoder = load_encoder("conse")
    pixels = torch.stack([encoder.preprocess(image) for image in _photo_crops(64)])
    for runtime in args.runtimes:
        entry = out["runtimes"].setdefault(runtime, {})
        entry["tower_images_per_s"] = {f"b{b}": round(tower_speed(encoder, runtime, pixels[: 32 if b == 1 else 64], b), 1)
                                       for b in (1, 32)}
        if runtime != "torch":
            entry["graph"] = {k: v for k, v in encoder.onnx_tower(runtime).meta.items() if k != "key"}
        print(runtime, entry["tower_images_per_s"], flush=True)
    # whole extraction, cold cache: decode + resize (workers) + encode
    subset = first_images(load_dataset("textile"), "test", args.whole)
    reference = None
    for runtime in args.runtimes:
        with tempfile.TemporaryDirectory() as cold, use(hardware(runtime)):
            fresh = load_encoder("conse")
            if runtime != "torch":  # loading the model is not extraction
                fresh.onnx_tower(runtime)
            fresh.visual_and_logits(pixels[:1])  # first-call set-up of either runtime is not extraction
            start = time.perf_counter()
            features = extract_features(fresh, subset, "test", cache=TensorCache(cold), progress=False)
            seconds = time.perf_counter() - start
        entry = out["runtimes"][runtime]
        entry["whole_images_per_s"] = round(len(features) / seconds, 1)
        if reference is None and runtime == "torch":
            reference = features
        if reference is not None:
            entry["max_abs_diff_vs_torch"] = float((features.image - reference.image).abs().max())
            entry["min_cosine_visual_vs_torch"] = float(torch.nn.functional.cosine_similarity(
                features.visual, reference.visual).min())
        print(runtime, "whole", entry["whole_images_per_s"], entry.get("max_abs_diff_vs_torch"), flush=True)
    write_json(RESULTS / "extract.json", out)
    # accuracy per runtime
    cache = TensorCache(args.cache_dir)
    for name in args.datasets:
        dataset = load_dataset(name)
        for runtime in args.runtimes:
            with use(hardware(runtime)):
                start = time.perf_counter()
                data = prepare(encoder, dataset, cache=cache, progress=False)
                prepare_s = time.perf_counter() - start
                scores = {}
                for method in METHODS:
                    result = run_adapt(encoder, dataset, AdaptSpec(method=method, shots=args.shots, seed=0), data=data,
                                       cache=cache, progress=False)
                    scores[method] = result["top1"]
            out["runtimes"][runtime].setdefault("top1", {})[name] = scores
            out["runtimes"][runtime].setdefault("prepare_seconds", {})[name] = round(prepare_s, 1)
            print(name, runtime, scores, flush=True)
            write_json(RESULTS / "extract.json", out)
    out["load_after"] = os.getloadavg()
    write_json(RESULTS / "extract.json", out)
    (RESULTS / "extract.md").write_text(report(out, args))


def report(out: dict, args) -> str:
    rt = out["runtimes"]
    torch_rates = rt.get("torch", {})
    lines = ["# Extraction per runtime: conse's image tower (EfficientNet-Lite0) in torch, ONNX Runtime fp32 and int8", "",
             f"Command: `{out['command']}`; {out['cpu_count']} CPU cores, torch threads {out['threads']}, load average "
             f"{out['load_before'][0]:.1f} before and {out['load_after'][0]:.1f} after (the box is shared: absolute "
             "rates move with the load; the runtimes ran back to back).", "",
             "## Speed (images/s)", ""]
    rows = []
    for name, entry in rt.items():
        speed = entry["tower_images_per_s"]
        rows.append([name, speed["b1"], speed["b32"],
                     entry.get("whole_images_per_s", "-"),
                     f"{entry['whole_images_per_s'] / torch_rates['whole_images_per_s']:.1f}x" if torch_rates.get("whole_images_per_s") else "-",
                     f"{entry.get('max_abs_diff_vs_torch', float('nan')):.2e}",
                     f"{entry.get('min_cosine_visual_vs_torch', float('nan')):.6f}"])
    lines.append(markdown_table(["runtime", "tower b=1", "tower b=32", f"whole extraction (cold, {args.whole} textile "
                                 "images, decode+resize+encode)", "whole vs torch", "max |joint - torch joint|",
                                 "min cos(visual, torch)"], rows))
    lines += ["", "## Top-1 (%) at {} shots, seed 0".format(args.shots), ""]
    rows = []
    for dataset in args.datasets:
        for name, entry in rt.items():
            top = entry.get("top1", {}).get(dataset)
            if top is None:
                continue
            base = rt.get("torch", {}).get("top1", {}).get(dataset, {})
            rows.append([dataset, name] + [f"{top[m]:.1f}" + (f" ({top[m] - base[m]:+.1f})" if name != "torch" and m in base else "")
                                           for m in METHODS])
    lines.append(markdown_table(["dataset", "runtime"] + list(METHODS), rows))
    graph = {k: v.get("graph") for k, v in rt.items() if v.get("graph")}
    lines += ["", "Graphs (cached under <cache>/onnx with this metadata): ", "", "```", json.dumps(graph, indent=1), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
