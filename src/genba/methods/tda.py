"""TDA, Training-free Dynamic Adapter (Karmanov et al., CVPR 2024): two test-time caches.

For each test query, in stream order (pseudo-labels come from the text classifier alone):
  p = mean softmax of the kept views, y = argmax p, h = H(p) in nats,
  h_norm = h / log2(C)                      (the reference code's normalisation, kept as is)
  positive cache: write (q, y, h) into class y's queue of 3; when full, replace the entry
      of highest entropy if h is lower.
  negative cache: only if 0.2 < h_norm < 0.5, write (q, y, h, p) into class y's queue of 2.
  logits = scale * q W^T + a+ * sum_{k in pos} exp(-b+ (1 - q.k)) onehot(k)
                         - a- * sum_{k in neg} exp(-b- (1 - q.k)) [0.03 < p_k < 1]
The cache is updated before the query's own logits are computed, as in the reference code.
With V > 1 test-time views (`view_rule="reference"`, the default, as the reference code's
get_clip_logits): the kept views are the 10% of lowest softmax entropy; the written and read
feature is their un-normalised mean, the text logits their mean logits, the pseudo-label the
argmax of those mean logits and h the entropy of their mean softmax. `view_rule="genba"` keeps
genba's earlier rule (the mean feature renormalised, the pseudo-label from the mean softmax);
docs/faithfulness.md says what has been measured of the difference. With one view both rules
are the same.
Defaults: the reference ImageNet config.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from genba.errors import GenbaError
from genba.memory.dynamic import DynamicMemory
from genba.memory.guard import GuardOptions
from genba.memory.read import entropy, l2_normalize
from genba.methods.base import Method
from genba.methods.config import fraction, in_range, non_negative, positive
from genba.methods.registry import register_method
from genba.methods.views import confident_views


@dataclass
class TDAConfig(GuardOptions):
    pos_capacity: int = 3
    """Positive cache shot capacity per class."""
    pos_alpha: float = 2.0
    """alpha of the positive cache logits."""
    pos_beta: float = 5.0
    """beta of the positive cache affinities."""
    neg_capacity: int = 2
    """Negative cache shot capacity per class."""
    neg_alpha: float = 0.117
    """alpha of the negative cache logits."""
    neg_beta: float = 1.0
    """beta of the negative cache affinities."""
    neg_entropy_lower: float = 0.2
    """Lower bound of the normalised entropy admitted to the negative cache."""
    neg_entropy_upper: float = 0.5
    """Upper bound of the normalised entropy admitted to the negative cache."""
    mask_lower: float = 0.03
    """Negative pseudo-label mask: classes with p > mask_lower ..."""
    mask_upper: float = 1.0
    """... and p < mask_upper."""
    scale: float = 100.0
    """CLIP's logit scale."""
    view_keep: float = 0.1
    """Fraction of lowest-entropy test-time views kept for the pseudo-label."""
    view_rule: str = "reference"
    """How kept views are combined: 'reference' (un-normalised mean feature, argmax of the mean logits) or 'genba'."""

    def __post_init__(self) -> None:
        positive(self, "pos_capacity", "neg_capacity", "pos_beta", "neg_beta", "scale")
        non_negative(self, "pos_alpha", "neg_alpha")
        fraction(self, "view_keep")
        if self.view_rule not in ("reference", "genba"):
            raise GenbaError(f"TDAConfig.view_rule must be 'reference' or 'genba', got {self.view_rule!r}")
        in_range(self, "neg_entropy_lower", "neg_entropy_upper", "mask_lower", "mask_upper")
        self.make_guard()  # validates the guard fields


@register_method("tda")
class TDA(Method):
    """Positive and negative test-time caches over the text classifier."""

    config_cls = TDAConfig
    test_time = True
    selection_grid = {"pos_alpha": [0.5, 2.0, 8.0], "pos_beta": [1.0, 5.0, 20.0]}
    shown_hyperparameters = ("pos_alpha", "pos_beta")

    def _fit(self, sj, sc, y, val) -> None:
        self.reset()

    def reset(self) -> None:
        super().reset()
        cfg = self.config
        self.pos = self.neg = None  # built at the first stream, in the queries' cache space
        self.guard = cfg.make_guard()

    def _predict(self, qj: torch.Tensor, qc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        cfg, C = self.config, self.num_classes
        if self.pos is None:
            D = qc.shape[2]
            raw = cfg.view_rule == "reference"  # the reference caches the mean feature as it is
            self.pos = DynamicMemory(C, cfg.pos_capacity, D, dtype="float32", keep_gram=False, normalize=not raw)
            self.neg = DynamicMemory(C, cfg.neg_capacity, D, dtype="float32", payload_dim=C, keep_gram=False, normalize=not raw)
        out = torch.empty(qj.shape[0], C)
        for i in perm.tolist():
            logits_v = self.text_logits(qj[i])  # (V, C)
            p, idx = confident_views(logits_v.softmax(-1), cfg.view_keep)  # (C,), (k,)
            text = logits_v[idx].mean(0, keepdim=True)  # (1, C)
            reference = cfg.view_rule == "reference"
            x = qc[i, idx].mean(0, keepdim=True)  # (1, D) the reference keeps the mean as it is
            if not reference:
                x = l2_normalize(x)
            label, h, admit = self.guard.pseudo_labels(p[None])
            if reference and not self.guard.active:
                label = text.argmax(1)  # argmax of the mean logits (the guard, genba's addition, uses p)
            self.pos.write_batch(x, label, h, admit=admit, balance=self.guard.balance)
            h_raw = entropy(p[None])
            h_norm = float(h_raw) / math.log2(C) if C > 1 else 0.0
            if cfg.neg_entropy_lower < h_norm < cfg.neg_entropy_upper:
                self.neg.write_batch(x, text.argmax(1) if reference else p[None].argmax(1), h_raw, payload=p[None])
            logits = text + cfg.pos_alpha * self.pos.affinity(x, beta=cfg.pos_beta)
            logits = logits - cfg.neg_alpha * self.neg.affinity(x, beta=cfg.neg_beta, values=self._mask)
            out[i] = logits[0].softmax(-1)
        return out

    def _mask(self, prob_maps: torch.Tensor) -> torch.Tensor:
        """Negative pseudo-labels: 1 where mask_lower < p < mask_upper."""
        cfg = self.config
        return ((prob_maps > cfg.mask_lower) & (prob_maps < cfg.mask_upper)).float()
