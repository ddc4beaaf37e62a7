"""`genba predict --model FILE.onnx --images DIR`: onnxruntime only; this module never imports torch.

Each image: decode (genba.cvm.pixels.load_image), resize and normalise exactly as in training
(genba.cvm.pixels), run the exported graph, print "path<TAB>class<TAB>probability". The ONNX
file must carry genba's metadata (genba.cvm.export): any other ONNX file is refused with one clear
error, as is an undecodable image (nothing is printed for a batch that failed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genba.cvm.pixels import image_files, load_image, normalize, resize_rgb
from genba.errors import GenbaError

ONNX_FORMAT = "genba-cvm-onnx-v1"  # the same tag as genba.cvm.export.ONNX_FORMAT (kept here: no torch import)


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
        return cls(session, json.loads(meta["genba.classes"]), int(meta["genba.image_size"]))

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) float32 -> (N, C) probabilities."""
        return self.session.run(["probabilities"], {"pixels": pixels})[0]

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        return self.session.run(["logits"], {"pixels": pixels})[0]

    def prepare(self, image) -> np.ndarray:
        return normalize(resize_rgb(image, self.image_size))


def predict_folder(model: str | Path, images: str | Path, batch_size: int = 16) -> list[tuple[str, str, float]]:
    """(path, class, probability) per image file under `images`."""
    clf = OnnxClassifier.load(model)
    files = image_files(images)
    out = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        pixels = np.stack([clf.prepare(load_image(f)) for f in chunk])
        probs = clf.probabilities(pixels)
        best = probs.argmax(-1)
        out += [(str(f), clf.classes[int(b)], float(p[b])) for f, b, p in zip(chunk, best, probs)]
    return out
