"""`genba predict --model FILE.onnx --images DIR`: onnxruntime only; this module never imports torch.

Each image: decode (genba.cvm.pixels.load_image), resize and normalise exactly as in training
(genba.cvm.pixels), run the exported graph, print "path<TAB>class<TAB>probability". The ONNX
file must carry genba's metadata (genba.cvm.export): any other ONNX file is refused with one clear
error. Its metadata is validated before use (genba.metaschema: a class list of printable names
matching the graph's outputs, an image size within MAX_IMAGE_SIZE matching its input). An image
that cannot be decoded or is over the pixel budget (genba.cvm.pixels.MAX_PIXELS, the server's) is
skipped and counted, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genba.cvm.pixels import image_files, load_image, normalize, resize_rgb
from genba.errors import GenbaError
from genba.metaschema import List, Str

ONNX_FORMAT = "genba-cvm-onnx-v1"  # the same tag as genba.cvm.export.ONNX_FORMAT (kept here: no torch import)
MAX_IMAGE_SIZE = 1024  # the largest student input (genba.cvm.model_dir.SCHEMA)
MAX_CLASSES_BYTES = 16 << 20
CLASSES = List(Str(max_len=200, min_len=1), min_len=1, max_len=100_000)


def _static(dim) -> int | None:
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


def check_metadata(path: Path, meta: dict, session) -> tuple[list[str], int]:
    """(classes, image size) from an exported model's metadata, each checked against the graph;
    GenbaError naming the file and the problem otherwise."""
    fix = "export the model again with `genba export DIR --onnx FILE`"
    raw = meta.get("genba.classes")
    classes = None
    if isinstance(raw, str) and len(raw) <= MAX_CLASSES_BYTES:
        try:
            classes = json.loads(raw)
        except (ValueError, RecursionError):
            classes = None
    problem = "no readable class list" if classes is None else CLASSES.problem(classes, "genba.classes")
    if problem:
        raise GenbaError(f"{path}: its metadata has {problem}; {fix}")
    size = meta.get("genba.image_size", "")
    if not (isinstance(size, str) and size.isdigit() and len(size) <= 5 and 8 <= int(size) <= MAX_IMAGE_SIZE):
        raise GenbaError(f"{path}: its metadata image size {str(size)[:20]!r} is not an integer in [8, {MAX_IMAGE_SIZE}]; {fix}")
    size = int(size)
    inputs, outputs = {i.name: i.shape for i in session.get_inputs()}, {o.name: o.shape for o in session.get_outputs()}
    if "pixels" not in inputs or not {"probabilities", "logits"} <= set(outputs):
        raise GenbaError(f"{path}: the graph lacks the input 'pixels' or the outputs 'probabilities' and 'logits'; {fix}")
    shape = list(inputs["pixels"] or [])
    if len(shape) != 4 or any(_static(d) not in (None, want) for d, want in zip(shape[1:], (3, size, size))):
        raise GenbaError(f"{path}: the graph's input shape {shape} does not take (N, 3, {size}, {size}) images; {fix}")
    for name in ("probabilities", "logits"):
        out = list(outputs[name] or [])
        if len(out) != 2 or _static(out[1]) not in (None, len(classes)):
            raise GenbaError(f"{path}: the graph's {name} {out} do not match its {len(classes)} classes; {fix}")
    return classes, size


@dataclass
class OnnxClassifier:
    session: object
    classes: list[str]
    image_size: int

    @classmethod
    def load(cls, path: str | Path, threads: int = 0) -> "OnnxClassifier":
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise GenbaError(f"no model file at {path}: export one with `genba export DIR --onnx {path}`")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types for unparsable files
            raise GenbaError(f"{path} is not a loadable ONNX model ({str(error).splitlines()[0][:160]}): "
                             "export one with `genba export DIR --onnx FILE`") from None
        meta = session.get_modelmeta().custom_metadata_map
        if meta.get("genba.format") != ONNX_FORMAT:
            raise GenbaError(f"{path} is an ONNX model but not one genba exported (no '{ONNX_FORMAT}' metadata): "
                             "export a CVM model with `genba export DIR --onnx FILE`")
        return cls(session, *check_metadata(path, meta, session))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, C) probabilities."""
        return self.session.run(["probabilities"], {"pixels": pixels})[0]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"pixels": pixels})[0]

    def prepare(self, image) -> np.ndarray:
        return normalize(resize_rgb(image, self.image_size))


def predict_folder(model: str | Path, images: str | Path, batch_size: int = 16,
                   skipped: list[str] | None = None) -> list[tuple[str, str, float]]:
    """(path, class, probability) per image file under `images`; an image that cannot be decoded or
    is over the pixel budget is left out and its one-line reason appended to `skipped`. No image
    usable at all -> GenbaError."""
    clf = OnnxClassifier.load(model)
    files = image_files(images)
    out, reasons = [], [] if skipped is None else skipped
    for start in range(0, len(files), batch_size):
        chunk, pixels = [], []
        for f in files[start:start + batch_size]:
            try:
                pixels.append(clf.prepare(load_image(f)))
                chunk.append(f)
            except GenbaError as error:
                reasons.append(str(error))
        if not chunk:
            continue
        probs = clf.probabilities(np.stack(pixels))
        best = probs.argmax(-1)
        out += [(str(f), clf.classes[int(b)], float(p[b])) for f, b, p in zip(chunk, best, probs)]
    if not out:
        raise GenbaError(f"none of the {len(files)} image file(s) under {images} could be used "
                         f"(first: {reasons[0] if reasons else 'none'})")
    return out


def report_skipped(skipped: list[str]) -> None:
    """One stderr line per skipped image, then the count."""
    import sys

    for reason in skipped:
        print(f"genba: warning: skipped: {reason}", file=sys.stderr)
    if skipped:
        print(f"genba: warning: {len(skipped)} image(s) skipped", file=sys.stderr)
