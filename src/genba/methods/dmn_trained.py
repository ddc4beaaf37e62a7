"""DMN with light training: zero-initialised bias terms learned on the few-shot set.

The reference code's default ('bias' mapping at 'all' positions) adds learnable terms, all
zero at start so the untrained model is exactly dmn-tf:
    query   q~ = normalize(q + b_q)              (weights only; the final cosine uses q)
    keys    k_cs = normalize(r_cs + b_k[c]),  values v_cs = normalize(r_cs + b_v[c])
    output  p_c = normalize(normalize(sum_s w_cs v_cs) + b_o[c])
    text    t_c = normalize(t_c + b_t[c])
Loss: cross-entropy of the static-memory logits + cross-entropy of the text logits on the
support set, AdamW (lr 1e-4, weight decay 1e-4, eps 1e-8), cosine schedule to 1e-7, 20 epochs,
batches of min(128, N), one view per support image per epoch. The same biases then apply to
the dynamic memory's reads at test time. The last epoch is kept (no selection on test).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genba.memory.read import l2_normalize, memory_read
from genba.methods.config import positive
from genba.methods.dmn import DMNTFConfig, DMNTrainingFree
from genba.methods.registry import register_method


@dataclass
class DMNConfig(DMNTFConfig):
    lr: float = 1e-4
    """Learning rate of AdamW (reference default 1e-4)."""
    epochs: int = 20
    """Training epochs (reference default 20)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    batch_size: int = 128
    """Mini-batch size (min(128, N) in the reference code)."""
    seed: int = 0
    """Seed of the shuffling and view sampling."""

    def __post_init__(self) -> None:
        super().__post_init__()
        positive(self, "lr", "epochs", "batch_size")


class DMNBiases(nn.Module):
    """The learnable terms, zero-initialised: b_q (Dc,), b_k, b_v, b_o (C, Dc), b_t (C, Dt)."""

    def __init__(self, num_classes: int, cache_dim: int, joint_dim: int) -> None:
        super().__init__()
        self.q = nn.Parameter(torch.zeros(cache_dim))
        self.k = nn.Parameter(torch.zeros(num_classes, cache_dim))
        self.v = nn.Parameter(torch.zeros(num_classes, cache_dim))
        self.o = nn.Parameter(torch.zeros(num_classes, cache_dim))
        self.t = nn.Parameter(torch.zeros(num_classes, joint_dim))


@register_method("dmn")
class DMNTrained(DMNTrainingFree):
    """dmn-tf plus zero-initialised biases trained with cross-entropy on the support set."""

    config_cls = DMNConfig

    def _fit(self, sj, sc, y, val) -> None:
        self.biases, self._static_kv, self._dynamic_kv = None, None, None
        super()._fit(sj, sc, y, val)
        cfg = self.config
        self.biases = DMNBiases(self.num_classes, sc.shape[2], sj.shape[2])
        opt = torch.optim.AdamW(self.biases.parameters(), lr=cfg.lr, eps=1e-8, weight_decay=cfg.weight_decay)
        bs = min(cfg.batch_size, len(y))
        steps = cfg.epochs * -(-len(y) // bs)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=1e-7)
        g = torch.Generator().manual_seed(cfg.seed)
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(y), generator=g)
            view = torch.randint(0, sj.shape[1], (len(y),), generator=g)  # one view per image
            for i in range(0, len(y), bs):
                b = perm[i : i + bs]
                loss = nn.functional.cross_entropy(self.read(self.static, sc[b, view[b]]), y[b])
                loss = loss + nn.functional.cross_entropy(self.text_logits_of(sj[b, view[b]]), y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        self.biases.requires_grad_(False)
        self._static_kv = self._biased_rows(self.static)  # the static memory never changes again

    def _dynamic_rows(self, memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Biased keys/values of a dynamic memory, recomputed only for classes written since the last read."""
        cache = self._dynamic_kv
        if cache is None or cache[0] is not memory:
            keys, values = self._biased_rows(memory)
            self._dynamic_kv = (memory, keys, values, memory.changes.clone())
            return keys, values
        _, keys, values, seen = cache
        changed = (memory.changes != seen).nonzero().flatten()  # classes written since
        if len(changed):
            keys[changed], values[changed] = self._biased_rows(memory, changed)
            seen.copy_(memory.changes)
        return keys, values

    def _biased_rows(self, memory, classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys normalize(r + b_k[c]) and values normalize(r + b_v[c]), (C', S, D) each, for `classes`
        (default all); empty slots zero."""
        pick = slice(None) if classes is None else classes
        b = self.biases
        rows, m = memory.rows[pick].float(), memory.valid[pick][..., None].float()  # (C', S, D), (C', S, 1)
        return l2_normalize(rows + b.k[pick][:, None]) * m, l2_normalize(rows + b.v[pick][:, None]) * m

    def text_logits_of(self, qj: torch.Tensor) -> torch.Tensor:
        if getattr(self, "biases", None) is None:
            return super().text_logits_of(qj)
        return self.text_logits(qj, l2_normalize(self.text + self.biases.t))  # (..., C)

    def read(self, memory, x: torch.Tensor) -> torch.Tensor:
        if getattr(self, "biases", None) is None:
            return super().read(memory, x)
        b, cfg = self.biases, self.config
        if memory is self.static and self._static_kv is not None:
            keys, values = self._static_kv
        elif hasattr(memory, "changes"):
            keys, values = self._dynamic_rows(memory)
        else:
            keys, values = self._biased_rows(memory)  # (C, S, D) each
        return memory_read(x, values, memory.valid, keys=keys, query_for_weights=l2_normalize(x + b.q),
                           out_bias=b.o, beta=cfg.beta, scale=cfg.scale)
