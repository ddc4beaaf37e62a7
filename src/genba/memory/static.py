"""DMN's static memory: the few-shot labeled features of each class, read like the dynamic one.

rows (C, E + K, D) hold, per class c, the class text feature (E = 1, when the memory lives in
the text classifier's space) followed by the K_c <= K few-shot features of c (padding masked).
The read is `genba.memory.read.memory_read`: w = exp(-beta (1 - cos(q, row))),
p_c = normalize(sum w row), logit_c = scale * cos(q, p_c). The same rows are what DMN pins into
its dynamic memory, and `feats` / `labels` are Tip-Adapter's cache keys and values.
"""

from __future__ import annotations

import torch

from genba.errors import GenbaError
from genba.memory.dynamic import check_features, check_labels, resolve_dtype
from genba.memory.read import gram_of, l2_normalize, memory_read


class StaticMemory:
    """Few-shot features grouped by class, validated once.

    Args:
        feats: (N, D) support features (normalised here).
        labels: (N,) class indices in [0, num_classes).
        num_classes: C.
        text: (C, D) class text features to include as each class's first row, or None.
        dtype: storage dtype of the rows.
    """

    def __init__(self, feats: torch.Tensor, labels, num_classes: int, *, text: torch.Tensor | None = None,
                 dtype: str | torch.dtype = "float32") -> None:
        if num_classes < 1:
            raise GenbaError(f"num_classes must be >= 1, got {num_classes}")
        if not isinstance(feats, torch.Tensor) or feats.dim() != 2 or feats.shape[0] == 0:
            raise GenbaError("support features must be a non-empty (N, D) tensor")
        D = feats.shape[1]
        feats = l2_normalize(check_features(feats, D, "support features"))  # (N, D)
        labels = check_labels(labels, feats.shape[0], num_classes, "support labels")  # (N,)
        if text is not None:
            text = l2_normalize(check_features(text, D, "text features"))  # (C, D)
            if text.shape[0] != num_classes:
                raise GenbaError(f"text features have {text.shape[0]} classes, support labels {num_classes}")
        self.num_classes, self.dim = num_classes, D
        self.feats, self.labels = feats, labels
        self.shots = torch.bincount(labels, minlength=num_classes)  # (C,)
        E, K = int(text is not None), int(self.shots.max())
        order = torch.argsort(labels, stable=True)  # support rows grouped by class, input order kept
        start = torch.cumsum(self.shots, 0) - self.shots  # (C,) first index of each class in `order`
        slot = torch.arange(feats.shape[0]) - start[labels[order]]  # (N,) position within its class
        rows = torch.zeros(num_classes, E + K, D)  # (C, E+K, D)
        valid = torch.zeros(num_classes, E + K, dtype=torch.bool)  # (C, E+K)
        rows[labels[order], E + slot] = feats[order]
        valid[labels[order], E + slot] = True
        if text is not None:
            rows[:, 0], valid[:, 0] = text, True
        self.dtype = resolve_dtype(dtype)
        self.rows, self.valid = rows.to(self.dtype), valid
        self.gram = gram_of(self.rows).to(self.dtype)  # (C, E+K, E+K)

    def values(self, c=slice(None), j=slice(None)) -> torch.Tensor:
        """Rows [c, j] as float32 values (the same accessor as DynamicMemory.values)."""
        return self.rows[c, j].float()

    def read(self, q: torch.Tensor, *, beta: float = 5.5, scale: float = 100.0) -> torch.Tensor:
        """Prototype read of unit queries (B, D) -> (B, C) logits."""
        q = check_features(q, self.dim, "static memory queries")
        return memory_read(q, self.rows, self.valid, beta=beta, scale=scale, gram=self.gram)

    def onehot(self) -> torch.Tensor:
        """(N, C) one-hot labels of the support features (Tip-Adapter's cache values)."""
        return torch.nn.functional.one_hot(self.labels, self.num_classes).float()

    @property
    def nbytes(self) -> int:
        """Bytes held by the rows, mask and Gram matrix (the flat `feats` copy excluded)."""
        return sum(t.numel() * t.element_size() for t in (self.rows, self.valid, self.gram))
