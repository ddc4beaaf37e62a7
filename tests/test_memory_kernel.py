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


def test_int8_memory_reads_like_float32_in_a_quarter_of_the_bytes():
    g = torch.Generator().manual_seed(1)
    C, L, D = 6, 5, 32
    pinned = torch.nn.functional.normalize(torch.randn(C, 1, D, generator=g), dim=-1)
    x = torch.nn.functional.normalize(torch.randn(40, D, generator=g), dim=1)
    cls, ent = torch.arange(40) % C, torch.rand(40, generator=g)
    q = torch.nn.functional.normalize(torch.randn(7, D, generator=g), dim=1)
    m32 = DynamicMemory(C, L, D, dtype="float32", pinned=pinned)
    m8 = DynamicMemory(C, L, D, dtype="int8", pinned=pinned)
    for m in (m32, m8):
        m.write_batch(x, cls, ent)
    assert torch.equal(m8.entropy, m32.entropy) and torch.equal(m8.count, m32.count)  # same writes kept
    bound = 100 * D**0.5 / 254  # scale x |q|_1 x the largest code error (max|x| / 254 <= 1 / 254)
    for queries in (q, q[:1]):
        diff = (m8.read(queries) - m32.read(queries)).abs().max()
        assert 0 < diff < bound and torch.equal(m8.read(queries).argmax(1), m32.read(queries).argmax(1))
    assert m8.rows.element_size() == 1 and m8.nbytes < 0.45 * m32.nbytes


def test_int8_dmn_memory_survives_a_store_reload(tmp_path):
    from genba.live import LiveMemory
    from genba.store import Store
    from genba.store.spec import MemorySpec

    g = torch.Generator().manual_seed(2)
    C, D = 3, 16
    text = torch.nn.functional.normalize(torch.randn(C, D, generator=g), dim=1)
    spec = MemorySpec(classnames=["a", "b", "c"], templates=["{}"], encoder="synthetic", encoder_provenance="synthetic-v1",
                      dim=D, method="dmn-zs", hyperparameters={"capacity": 3, "memory_dtype": "int8"})
    store = Store(tmp_path / "m.sqlite")
    memory_id = store.create_memory(spec, text.numpy())
    live = LiveMemory(store, memory_id)
    xq = torch.nn.functional.normalize(text[torch.arange(20) % C] + 0.4 * torch.randn(20, D, generator=g), dim=1)
    live.predict(xq[:15], update=True, source_ids=[f"s{i}" for i in range(15)])
    assert live.method.dynamic.rows.dtype == torch.int8
    before = live.predict(xq[15:])[0]
    after = LiveMemory(Store(tmp_path / "m.sqlite"), memory_id).predict(xq[15:])[0]
    assert torch.equal(before, after)


def test_trained_dmn_reads_an_int8_memory_through_its_dequantized_values():
    from genba.methods import Feats, create_method

    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(6, 8, generator=g), dim=1)
    text, y = torch.nn.functional.normalize(torch.randn(3, 8, generator=g), dim=1), torch.arange(6) % 3
    q = torch.nn.functional.normalize(torch.randn(40, 8, generator=g), dim=1)
    probs = {}
    for dtype in ("float32", "int8"):
        m = create_method("dmn", memory_dtype=dtype, **{"train.epochs": 2})
        m.fit(text, Feats(x), y)
        probs[dtype] = m.predict_stream(Feats(q))  # the stream writes and reads the dynamic memory
    assert m.dynamic.quantized
    assert (probs["int8"] - probs["float32"]).abs().max() < 2e-2  # int8 codes: about 1% per coordinate
    assert torch.equal(probs["int8"].argmax(1), probs["float32"].argmax(1))
