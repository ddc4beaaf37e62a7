"""Files of a part's own format carried inside a model as uint8 tensors, and unpacked to read them.

CVM and MoViT keep their own checked files (genba.cvm.model_dir, genba.movit.artefact); a model
of those kinds embeds those files byte for byte (`bundle/<name>`), so their own loaders (and their
own checks) rebuild the network. The model file's checksum covers the embedded bytes.
"""

from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from genba.model.base import prefixed


def pack(files: dict[str, Path]) -> dict[str, torch.Tensor]:
    return {f"bundle/{name}": torch.from_numpy(np.frombuffer(Path(p).read_bytes(), dtype=np.uint8).copy())
            for name, p in files.items()}


@contextmanager
def unpacked(tensors: dict[str, torch.Tensor]):
    """A private temporary folder holding the embedded files (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="genba-model-") as tmp:
        for name, data in prefixed(tensors, "bundle").items():
            (Path(tmp) / name).write_bytes(data.numpy().tobytes())
        yield Path(tmp)
