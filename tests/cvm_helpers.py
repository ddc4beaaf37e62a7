"""Small builders shared by the tests of genba.cvm: colour-folder datasets, a tiny trained model dir."""

from __future__ import annotations

import numpy as np
from PIL import Image


def colour_folder(root, colours: dict[str, tuple[int, int, int]], per_class: int = 12, size: int = 20, seed: int = 0):
    """root/<name>/<i>.png: noisy solid-colour images (one class per colour)."""
    rng = np.random.default_rng(seed)
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-25, 25, size=(size, size, 3))
            Image.fromarray(np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


WARM = {"red": (220, 30, 30), "orange": (240, 140, 20), "yellow": (230, 220, 30)}
COOL = {"blue": (30, 40, 220), "green": (30, 200, 40), "purple": (140, 30, 200)}


def tiny_objective(bank, head: str = "concept", image_size: int = 16):
    import torch

    from genba.cvm.heads import ConceptHead, LinearHead
    from genba.cvm.objective import StreamObjective
    from genba.cvm.student import SmallCNN

    torch.manual_seed(0)
    student = SmallCNN(image_size=image_size, widths=(8, 16), strides=(2, 2))
    if head == "concept":
        return StreamObjective(student, ConceptHead(student.feature_dim, bank.embeddings), "contrastive")
    return StreamObjective(student, LinearHead(student.feature_dim, len(bank)), "ce")
