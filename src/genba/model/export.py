"""`genba export --model M --onnx F [--int8]`: a model as one static ONNX graph, parity-checked.

Graph: input "pixels" (N, 3, H, W), the encoder's own preprocessing of each image (recorded in
the file's metadata as the encoder spec) -> outputs "probabilities" (N, C). Adapt methods without
test-time memory: encoder + text classifier + static cache / trained head in one graph; the
continual learner with one shared adapter: encoder + adapter + class texts; CVM: its own graph
(genba.cvm.export, pixels normalised as in training). Methods that adapt per query (TDA, DMN) and
routed learners (task-adapters, moe-adapters: a per-image branch) are not static graphs and are
refused. After writing, the ONNX graph (onnxruntime) and the PyTorch model are run on the same
images and the largest |delta p| is reported; above 1e-4 the export fails.
`--int8`: onnxruntime's dynamic int8 quantization of the MatMul / Gemm weights (F.int8.onnx), with the top-1 of
both files on the model's own labelled test split when that data is at hand (else their agreement
on the parity images).
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genba.errors import GenbaError

ONNX_FORMAT = "genba-model-onnx-v1"
OPSET = 17
PARITY = 1e-4
INT8_OPS = ["MatMul", "Gemm"]  # dynamic int8 of the matrix products; convolutions stay fp32 (ConvInteger lost
# 55 points of top-1 on a conse model in our first measurement: see bench/results/export.md)


class ProbabilityGraph(nn.Module):
    """pixels -> probabilities through a predictor's `graph_probabilities` (a pure tensor function)."""

    def __init__(self, fn, parts: list):
        super().__init__()
        self.fn = fn
        modules: list[nn.Module] = []
        for part in parts:  # an encoder that is no nn.Module: the networks it holds become the graph's parameters
            for m in _modules_in(part):
                if all(m is not k for k in modules):
                    modules.append(m)
        self.parts = nn.ModuleList(modules).requires_grad_(False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.fn(pixels)


def _modules_in(obj, depth: int = 3) -> list[nn.Module]:
    """nn.Modules reachable through plain attributes of `obj` (itself if it is one), `depth` levels deep."""
    if isinstance(obj, nn.Module):
        return [obj]
    if depth == 0 or not hasattr(obj, "__dict__"):
        return []
    return [m for value in vars(obj).values() for m in _modules_in(value, depth - 1)]


def _onnx_bytes(graph: nn.Module, example: torch.Tensor, props: dict[str, str]) -> bytes:
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph.eval(), (example,), buffer, dynamo=False, opset_version=OPSET, input_names=["pixels"],
                          output_names=["probabilities"], dynamic_axes={"pixels": {0: "n"}, "probabilities": {0: "n"}})
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "genba"
    return proto.SerializeToString()


def _sample_images(model, images: list[str] | None, limit: int = 256):
    """(images, labels or None, where): the parity / int8 images: `images`, else the test splits of
    the model's own data sources that are at hand (at most `limit` images)."""
    from genba.model.images import decode_images, image_paths

    if images:
        skipped: list = []
        return [im for _, im in decode_images(image_paths(images)[:limit], skipped)], None, "the given images"
    from genba.data import load_dataset

    found, labels, names = [], [], []
    for source in model.meta.get("data", {}).get("sources", []):
        name = source.get("dataset") or source.get("task")
        try:
            ds = load_dataset(name) if name else None
        except GenbaError:
            ds = None
        if ds is None:
            continue
        for i in ds.splits["test"][: max(0, limit - len(found))]:
            found.append(ds.image(int(i)))
            labels.append(ds.classnames[int(ds.labels[i])])
        names.append(name)
    if not found:
        raise GenbaError("no images to check the export on: the model's data is not at hand; pass --images DIR")
    return found, labels, f"the test split of {', '.join(names)}"


def _session(data: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _run(session, pixels: torch.Tensor, batch: int = 32) -> np.ndarray:
    name = session.get_inputs()[0].name
    out = [session.run(["probabilities"], {name: pixels[i:i + batch].numpy()})[0] for i in range(0, len(pixels), batch)]
    return np.concatenate(out)


def export_model(path, onnx_path, *, int8: bool = False, images: list[str] | None = None, progress: bool = False) -> dict:
    """Write the ONNX graph of model `path` (and its int8 twin); returns the report (lines, figures)."""
    from genba.cache import atomic_write_bytes
    from genba.model import load
    from genba.model.base import MODEL_KINDS, open_predictor

    model = load(path)
    kind = MODEL_KINDS.get(model.kind)
    kind.require("export")
    onnx_path = Path(onnx_path)
    if onnx_path.is_dir():
        raise GenbaError(f"--onnx {onnx_path} is a directory: give a file name such as {onnx_path / 'model.onnx'}")
    predictor = open_predictor(model)
    sample, labels, where = _sample_images(model, images)
    props = {"genba.format": ONNX_FORMAT, "genba.kind": model.kind, "genba.classes": json.dumps(model.classes),
             "genba.encoder": json.dumps(model.meta.get("encoder")), "genba.model_version": str(model.meta.get("version", 1)),
             "genba.state": json.dumps(model.meta.get("state"))}
    with torch.no_grad():  # first: lazy parts of an encoder (class texts, heads) are built outside the trace
        reference = torch.cat([predictor.probabilities(sample[i:i + 32]) for i in range(0, len(sample), 32)]).numpy()
    graph, prepare = kind.onnx_graph(model, predictor)  # after the warm-up: every network the encoder loads lazily exists
    pixels = torch.stack([prepare(im) for im in sample])
    try:
        data = kind.onnx_bytes(model, predictor, props) if hasattr(kind, "onnx_bytes") else \
            _onnx_bytes(graph, pixels[: min(len(pixels), 16)], props)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as error:
        encoder = (model.meta.get("encoder") or {}).get("spec")
        raise GenbaError(f"this model (kind {model.kind}, encoder {encoder}) cannot be traced into one ONNX graph "
                         f"({str(error).splitlines()[0][:160]}); the encoder has no static-graph form yet") from None
    fp32 = _run(_session(data), pixels)
    delta = float(np.abs(fp32 - reference).max())
    if delta > PARITY:
        raise GenbaError(f"the ONNX graph differs from the PyTorch model by max |delta p| = {delta:.2e} (> {PARITY:g}) "
                         f"on {where}: nothing written; please report this")
    atomic_write_bytes(onnx_path, data)
    report = {"onnx": str(onnx_path), "bytes": len(data), "parity_max_abs_dp": delta, "parity_images": len(sample),
              "lines": [f"wrote {onnx_path} ({len(data) / 1e6:.2f} MB, kind {model.kind}); parity with PyTorch on "
                        f"{len(sample)} images of {where}: max |delta p| = {delta:.1e}"]}
    if int8:
        extra = _int8(data, onnx_path, pixels, fp32, labels, model.classes, where)
        report["lines"].append(extra.pop("line"))
        report.update(extra)
    return report


def _int8(data: bytes, onnx_path: Path, pixels, fp32: np.ndarray, labels, classes, where: str) -> dict:
    import tempfile

    from onnxruntime.quantization import QuantType, quantize_dynamic

    from genba.cache import atomic_write_bytes

    target = onnx_path.with_suffix(".int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(data)
        import logging

        root = logging.getLogger()
        level, root.level = root.level, logging.ERROR  # onnxruntime's advice to pre-process goes to the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=INT8_OPS)
        finally:
            root.setLevel(level)
        quantized = dst.read_bytes()
    q = _run(_session(quantized), pixels)
    atomic_write_bytes(target, quantized)
    agree = 100.0 * float((q.argmax(1) == fp32.argmax(1)).mean())
    out = {"int8": str(target), "int8_bytes": len(quantized), "int8_agreement": agree,
           "int8_max_abs_dp": float(np.abs(q - fp32).max())}
    line = f"wrote {target} ({len(quantized) / 1e6:.2f} MB, dynamic int8): same class as fp32 on {agree:.1f}% of {where}"
    if labels is not None:
        y = np.asarray([classes.index(c) if c in classes else -1 for c in labels])
        top_fp32, top_int8 = 100.0 * float((fp32.argmax(1) == y).mean()), 100.0 * float((q.argmax(1) == y).mean())
        out.update(fp32_top1=top_fp32, int8_top1=top_int8, int8_top1_change=top_int8 - top_fp32)
        line += f"; top-1 fp32 {top_fp32:.1f}% -> int8 {top_int8:.1f}% ({top_int8 - top_fp32:+.1f} points)"
    out["line"] = line
    return out


class OnnxPredictor:
    """An exported model run by onnxruntime: `.classes`, `.probabilities(images)` (the encoder's
    preprocessing, named in the file, prepares each image)."""

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types
            raise GenbaError(f"{path} is not a loadable ONNX model ({str(error).splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        from genba.cvm.predict import ONNX_FORMAT as CVM_ONNX

        self.classes = json.loads(meta.get("genba.classes", "[]"))
        if meta.get("genba.format") == CVM_ONNX:  # a CVM graph: its own pixel preparation (genba.cvm.pixels)
            from genba.cvm.pixels import normalize, resize_rgb

            size = int(meta["genba.image_size"])
            self.prepare = lambda im: torch.from_numpy(normalize(resize_rgb(im, size)))
            return
        if meta.get("genba.format") != ONNX_FORMAT:
            raise GenbaError(f"{path} is not an ONNX model genba exported (`genba export --model M --onnx F`)")
        from genba.model import kinds  # noqa: F401
        from genba.model.base import MODEL_KINDS

        kind = MODEL_KINDS.get(meta["genba.kind"])
        self.prepare = kind.onnx_prepare(json.loads(meta["genba.encoder"]), json.loads(meta.get("genba.state", "{}")))

    def probabilities(self, images) -> torch.Tensor:
        return torch.from_numpy(_run(self.session, torch.stack([self.prepare(im) for im in images])))

