"""The compiled memory read is the default ('auto'); without it, one warning and the torch path."""

from __future__ import annotations

import warnings

import torch

from genba.memory import DynamicMemory
from genba.memory import fused
from genba.methods import make_config


def memory(kernel):
    g = torch.Generator().manual_seed(0)
    C, L, D = 5, 4, 16
    m = DynamicMemory(C, L, D, pinned=torch.nn.functional.normalize(torch.randn(C, 1, D, generator=g), dim=-1), kernel=kernel)
    x = torch.nn.functional.normalize(torch.randn(12, D, generator=g), dim=1)
    m.write_batch(x, torch.arange(12) % C, torch.rand(12, generator=g))
    return m, torch.nn.functional.normalize(torch.randn(1, D, generator=g), dim=1)


def test_auto_is_the_default_and_falls_back_with_one_warning(monkeypatch):
    assert DynamicMemory(2, 2, 8).kernel == "auto" and make_config("dmn-tf").memory_kernel == "auto"
    torch_read = memory("torch")
    expected = torch_read[0].read(torch_read[1])
    import torch.utils.cpp_extension as ext

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(fused, "_prebuilt", lambda: None)
    monkeypatch.setattr(ext, "load", no_compiler)
    fused.load.cache_clear()
    try:
        m, q = memory("auto")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first, second = m.read(q), m.read(q)
        assert torch.equal(first, expected) and torch.equal(second, expected)
        assert len([w for w in caught if "compiled memory read unavailable" in str(w.message)]) == 1
    finally:
        fused.load.cache_clear()  # the real kernel (or its absence) again for later tests
