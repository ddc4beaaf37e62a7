"""ONNX export of models: size fp32 / int8, images/s PyTorch vs onnxruntime, int8 accuracy change.

    python bench/export.py [--encoder conse] [--datasets textile] [--methods tip-adapter,linear-probe,zeroshot]

For each method: `genba adapt --shots all --out` on the dataset (validation from train), then
genba.model.export.export_model (fp32 parity with PyTorch on the first 256 test images, int8 =
onnxruntime dynamic quantization of MatMul/Gemm), then throughput end to end from decoded PIL
images (preprocessing included on both sides), batch 1 (32 images one by one) and batch 32
(3 batches), best of 3 runs, one process, the threads torch and onnxruntime choose. Writes
bench/results/export.md and export.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import RESULTS, base_parser, command_line, installed_datasets

from genba.report import markdown_table, write_json


def images_per_second(fn, images, batch: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            fn(images[i:i + batch])
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--methods", default="tip-adapter,linear-probe,zeroshot")
    args = parser.parse_args()
    from genba.cli import main as genba
    from genba.data import load_dataset
    from genba.model import load
    from genba.model.base import MODEL_KINDS
    from genba.model.export import OnnxPredictor, export_model

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in installed_datasets(args.datasets or ["textile"]):
            data = load_dataset(name)
            sample = [data.image(int(i)) for i in data.splits["test"][:96]]
            for method in args.methods.split(","):
                model_path = Path(tmp) / f"{name}-{method}.genba"
                code = genba(["adapt", "--dataset", name, "--method", method, "--encoder", args.encoder, "--shots", "all",
                              "--out", str(model_path), "--cache-dir", str(args.cache_dir), "--quiet"])
                assert code == 0, f"adapt {method} on {name} failed"
                onnx = Path(tmp) / f"{name}-{method}.onnx"
                report = export_model(model_path, onnx, int8=True)
                model = load(model_path)
                torch_pred = MODEL_KINDS.get(model.kind).predictor(model)
                fp32, int8 = OnnxPredictor(onnx), OnnxPredictor(onnx.with_suffix(".int8.onnx"))
                speed = {f"{who}_b{b}": images_per_second(p.probabilities, sample[:32] if b == 1 else sample, b)
                         for who, p in (("torch", torch_pred), ("onnx", fp32), ("int8", int8)) for b in (1, 32)}
                result = {"dataset": name, "kind": model.kind, "encoder": model.meta["encoder"], **report, **speed,
                          "model_top1_test": model.meta["metrics"]["top1"]}
                result.pop("lines", None)
                results.append(result)
                rows.append([name, model.kind, f"{report['bytes'] / 1e6:.1f}", f"{report['int8_bytes'] / 1e6:.1f}",
                             f"{report['parity_max_abs_dp']:.1e}", f"{speed['torch_b1']:.1f}", f"{speed['onnx_b1']:.1f}",
                             f"{speed['int8_b1']:.1f}", f"{speed['torch_b32']:.1f}", f"{speed['onnx_b32']:.1f}",
                             f"{speed['int8_b32']:.1f}", f"{report['fp32_top1']:.1f}", f"{report['int8_top1']:.1f}",
                             f"{report['int8_top1_change']:+.1f}"])
                print(rows[-1], flush=True)
    table = markdown_table(["dataset", "kind", "fp32 MB", "int8 MB", "max abs dp (fp32 vs torch)", "torch img/s b1",
                            "onnx img/s b1", "int8 img/s b1", "torch img/s b32", "onnx img/s b32", "int8 img/s b32",
                            "top-1 fp32 (%)", "top-1 int8 (%)", "int8 change (points)"], rows)
    text = (f"# ONNX export: size, speed, int8\n\nCommand: `{command_line()}`\n\n{table}\n\n"
            "Top-1 of fp32 and int8 on the first 256 test images (the parity images); images/s end to end from "
            "decoded images (the encoder's preprocessing included on both sides), best of 3, on this machine "
            f"({torch.get_num_threads()} torch threads; CPU shared with other jobs, so speeds are indicative). "
            "int8 quantizes the MatMul / Gemm weights only (genba.model.export.INT8_OPS).\n")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "export.md").write_text(text)
    write_json(RESULTS / "export.json", {"command": command_line(), "results": results})
    print(text)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
