"""DMN with light training: zero-initialised bias terms learned on the few-shot set.

The reference code's default ('bias' mapping at 'all' positions) adds learnable terms, all
zero at start so the untrained model is exactly dmn-tf:
    query   q~ = normalize(q + b_q)              (weights only; the final cosine uses q)
    keys    k_cs = normalize(r_cs + b_k[c]),  values v_cs = normalize(r_cs + b_v[c])
    output  p_c = normalize(normalize(sum_s w_cs v_cs) + b_o[c])
    text    t_c = normalize(t_c + b_t[c])
Loss: cross-entropy of the static-memory logits + cross-entropy of the text logits on the
support set, AdamW (lr 1e-4, weight decay 1e-4, eps 1e-8), cosine schedule to 1e-7, 20 epochs,
batches of min(128, N), one view per support image per step, through genba's one training
engine (`--set train.lr=...`). The same biases then apply to the dynamic memory's reads at
test time. The last epoch is kept (no selection on test).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from genba.memory.read import l2_normalize, memory_read
from genba.methods.dmn import DMNTFConfig, DMNTrainingFree
from genba.methods.registry import register_method
from genba.methods.training import SupportData, check_train
from genba.device import CPU
from genba.train import Objective, TrainConfig, fit


def _reference_training() -> TrainConfig:
    return TrainConfig(lr=1e-4, epochs=20, batch_size=128, weight_decay=1e-4, eps=1e-8, min_lr=1e-7)


@dataclass
class DMNConfig(DMNTFConfig):
    train: TrainConfig = field(default_factory=_reference_training)
    """Training settings (reference: AdamW lr 1e-4, weight decay 1e-4, 20 epochs, batch min(128, N),
    cosine to 1e-7)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_train(self)


class DMNBiases(nn.Module):
    """The learnable terms, zero-initialised: b_q (Dc,), b_k, b_v, b_o (C, Dc), b_t (C, Dt)."""

    def __init__(self, num_classes: int, cache_dim: int, joint_dim: int) -> None:
        super().__init__()
        self.q = nn.Parameter(torch.zeros(cache_dim))
        self.k = nn.Parameter(torch.zeros(num_classes, cache_dim))
        self.v = nn.Parameter(torch.zeros(num_classes, cache_dim))
        self.o = nn.Parameter(torch.zeros(num_classes, cache_dim))
        self.t = nn.Parameter(torch.zeros(num_classes, joint_dim))


class BiasObjective(Objective):
    """CE(static-memory logits) + CE(text logits) of one random view per support image."""

    def __init__(self, method: "DMNTrained", support: SupportData) -> None:
        super().__init__()
        self.method, self.support = method, support
        self.biases = method.biases  # trained in place

    def forward(self, batch) -> torch.Tensor:
        sj, sc, y = self.support.one_view(batch["i"])
        loss = nn.functional.cross_entropy(self.method.read(self.method.static, sc), y)
        return loss + nn.functional.cross_entropy(self.method.text_logits_of(sj), y)


@register_method("dmn")
class DMNTrained(DMNTrainingFree):
    """dmn-tf plus zero-initialised biases trained with cross-entropy on the support set."""

    config_cls = DMNConfig
    selection_grid = {"b_dyn": [0.0, 1.0], "b_static": [3.0, 30.0]}  # each point trains: a smaller grid

    def _fit(self, sj, sc, y, val) -> None:
        self.biases, self._static_kv, self._dynamic_kv = None, None, None
        super()._fit(sj, sc, y, val)
        self.biases = DMNBiases(self.num_classes, sc.shape[2], sj.shape[2])  # zeros: dmn-tf exactly

    def _train(self, sj, sc, y, val) -> None:
        objective = BiasObjective(self, SupportData(sj, sc, y))
        # few-shot support rows: trained on the CPU whatever --device says (the method's tensors live there)
        fit(objective, objective.support.rows(), self.config.train, progress=False, desc="dmn", hardware=CPU)
        self.biases.requires_grad_(False)
        self._static_kv = self._biased_rows(self.static)  # the static memory never changes again

    def state_dict(self) -> dict[str, torch.Tensor]:
        biases = getattr(self, "biases", None)
        return {} if biases is None else {f"biases.{k}": v for k, v in biases.state_dict().items()}

    def _load_state(self, state) -> None:
        self.biases.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items()})
        self.biases.requires_grad_(False)
        self._static_kv, self._dynamic_kv = self._biased_rows(self.static), None

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
        rows, m = memory.values(pick), memory.valid[pick][..., None].float()  # (C', S, D) dequantized, (C', S, 1)
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
