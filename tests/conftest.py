"""Shared fixtures: offline mode, a throwaway cache, small image folders made on the fly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No test may reach a hub, and none writes to the user's real cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("GENBA_CACHE_DIR", str(tmp_path / "genba-cache"))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: extra threads only add synchronisation, which under CPU contention costs ms per op."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_color_folder(root, per_class: int = 4, size: int = 20, seed: int = 0):
    """root/<color>/<i>.png: noisy solid-colour images, one class per colour."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLORS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-20, 20, size=(size, size, 3))
            pixels = np.clip(np.array(rgb) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def color_folder(tmp_path):
    return make_color_folder(tmp_path / "colors")
