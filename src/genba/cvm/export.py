"""`genba export DIR --onnx FILE`: the trained student + its concept bank as one ONNX graph.

Graph: input "pixels" (N, 3, S, S) float32 in [-1, 1] (genba.cvm.pixels.normalize) ->
outputs "logits" (N, C) and "probabilities" (N, C) = softmax(logits), over every class of the
bank (classes known only by name included). For the concept head the bank is a constant of the
graph: logits = s * normalize(P f(x)) T^T. Exported with torch's TorchScript-based ONNX exporter
(opset 17; no onnxscript needed). The file's metadata_props carry genba's format tag, the class
names, image size, normalisation and provenance, which `genba predict` checks; the bytes are
written atomically.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import torch
from torch import nn

from genba.cache import atomic_write_bytes
from genba.cvm.model_dir import load_model_dir
from genba.errors import GenbaError

ONNX_FORMAT = "genba-cvm-onnx-v1"
OPSET = 17


class InferenceGraph(nn.Module):
    """pixels -> (logits, probabilities) over the whole label space."""

    def __init__(self, objective):
        super().__init__()
        self.student, self.head = objective.student, objective.head

    def forward(self, pixels: torch.Tensor):
        logits = self.head(self.student(pixels))
        return logits, torch.softmax(logits, dim=-1)


def onnx_bytes(objective, bank, meta: dict) -> bytes:
    import onnx

    graph = InferenceGraph(objective).eval()
    size = objective.student.image_size
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (torch.zeros(1, 3, size, size),), buffer, dynamo=False, opset_version=OPSET,
                          input_names=["pixels"], output_names=["logits", "probabilities"],
                          dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}, "probabilities": {0: "n"}})
    model = onnx.load_from_string(buffer.getvalue())
    props = {"genba.format": ONNX_FORMAT, "genba.classes": json.dumps(bank.names), "genba.image_size": str(size),
             "genba.normalization": "x / 127.5 - 1 on RGB uint8, centre square crop, bilinear resize",
             "genba.student": json.dumps(objective.student.spec()), "genba.head": json.dumps(objective.head.spec()),
             "genba.text_provenance": bank.text_provenance, "genba.licence": bank.licence,
             "genba.known_classes": str(objective.known)}
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "genba"
    return model.SerializeToString()


def export_onnx(model_dir, onnx_path) -> Path:
    objective, bank, meta = load_model_dir(model_dir)
    path = Path(onnx_path)
    if path.is_dir():
        raise GenbaError(f"--onnx {path} is a directory: give a file name such as {path / 'cvm.onnx'}")
    atomic_write_bytes(path, onnx_bytes(objective, bank, meta))
    return path
