"""Dual Memory Networks (Zhang et al., CVPR 2024), zero-shot and training-free settings.

For each test query q, in stream order:
  1. text probabilities of every view; pseudo-label y and entropy h from the mean softmax of
     the kept lowest-entropy views (text classifier only; views ranked by -sum p log(p + 1e-6),
     both as in the reference code);
  2. write the un-augmented view's feature into class y's dynamic queue (L = 50 slots; when
     full, replace the highest-entropy entry if h is lower);
  3. read both memories with the shared kernel (`genba.memory.read.memory_read`):
     rows_c = [dynamic slots of c; text feature of c; few-shot features of c] for the dynamic
     memory and [text feature of c; few-shot features of c] for the static one,
     w = exp(-beta (1 - cos(q, row))), p_c = normalize(sum w row), logit_c = 100 cos(q, p_c);
  4. P = softmax(text) + b_dyn softmax(dynamic) + b_static softmax(static), divided by
     1 + b_dyn + b_static so rows sum to one (the argmax is the paper's).
When the memories live in a separate cache space (visual features) the text rows are left out.
Without any text classifier (a vision-only encoder, `fit(None, ..., num_classes=C)`), the static
memory's prediction takes the text classifier's place as the pseudo-labeller (`_step_without_text`).
The reference code grid-searches b_dyn and b_static on test labels; genba fixes both at 1.0
(the value those searches pick most often in the released logs) or selects them on validation.
`stream_batch` > 1 writes a batch of queries before reading them: faster, and an approximation
of the one-at-a-time stream (1, the default, is exact).
`write_label` chooses step 2's label: "reference" (above, the default, as the paper's code) or
"final": steps 3-4 run first on the memory as it is, and the query is then written under the
served prediction argmax P (its entropy ranks the queue). The write labels of the last stream
are kept in `write_labels` (N,) for the service's prediction log.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genba.errors import GenbaError
from genba.memory.dynamic import KERNELS, DynamicMemory, resolve_dtype
from genba.memory.guard import GuardOptions
from genba.memory.static import StaticMemory
from genba.methods.base import Method
from genba.methods.config import fraction, non_negative, positive
from genba.methods.registry import register_method
from genba.methods.views import confident_views


WRITE_LABELS = ("reference", "final")
VIEW_ENTROPY_EPS = 1e-6
"""The reference code ranks test-time views by -sum p log(p + 1e-6) (genba.methods.views)."""


@dataclass
class DMNZSConfig(GuardOptions):
    beta: float = 5.5
    """beta, sharpness of the read weights exp(-beta (1 - cos))."""
    scale: float = 100.0
    """CLIP's logit scale for text and memory logits."""
    capacity: int = 50
    """L, slots per class in the dynamic memory."""
    b_dyn: float = 1.0
    """Fusion weight of the dynamic memory's softmax."""
    view_keep: float = 0.1
    """Fraction of lowest-entropy test-time views kept for the pseudo-label (10% of 32)."""
    memory_dtype: str = "float16"
    """Storage dtype of the dynamic memory (float16: 51 MB at C=1000, L=50, D=512)."""
    memory_kernel: str = "auto"
    """'auto': the compiled one-pass read (genba.memory.fused) where it applies, else torch; 'torch' never."""
    stream_batch: int = 1
    """Queries written then read together; 1 is the exact stream."""
    write_label: str = "reference"
    """Label the dynamic memory is written under: 'reference' (the zero-shot pseudo-label of the
    kept views, written before the read, as DMN's code does) or 'final' (read first, then write
    the query under the served, fused prediction; its entropy ranks the queue)."""

    def __post_init__(self) -> None:
        positive(self, "beta", "scale", "capacity", "stream_batch")
        non_negative(self, "b_dyn", *(["b_static"] if hasattr(self, "b_static") else []))
        fraction(self, "view_keep")
        resolve_dtype(self.memory_dtype)
        if self.write_label not in WRITE_LABELS:
            raise GenbaError(f"write_label must be one of {', '.join(WRITE_LABELS)}, got {self.write_label!r}")
        if self.memory_kernel not in KERNELS:
            raise GenbaError(f"memory_kernel must be one of {', '.join(KERNELS)}, got {self.memory_kernel!r}")
        self.make_guard()  # validates the guard fields


@dataclass
class DMNTFConfig(DMNZSConfig):
    b_static: float = 1.0
    """Fusion weight of the static (few-shot) memory's softmax."""


@register_method("dmn-zs")
class DMNZeroShot(Method):
    """DMN with its dynamic memory only (no labels)."""

    config_cls = DMNZSConfig
    test_time = True
    selection_grid = {"b_dyn": [0.3, 1.0, 3.0], "beta": [1.0, 5.5, 20.0]}
    shown_hyperparameters = ("b_dyn", "beta")
    uses_support = False

    def _fit(self, sj, sc, y, val) -> None:
        self.static = None
        if self.uses_support:
            text = self.text if self.joint_cache else None
            self.static = StaticMemory(sc[:, 0], y, self.num_classes, text=text)  # vanilla view
        self.reset()

    def reset(self) -> None:
        super().reset()
        cfg = self.config
        self.dynamic: DynamicMemory | None = None  # built at the first stream if the space is open
        self.guard = cfg.make_guard()
        if self.space is not None:
            self._build(self.space[1])

    def _build(self, dim: int) -> None:
        cfg, pinned, mask = self.config, None, None
        if self.static is not None:
            pinned, mask = self.static.rows.float(), self.static.valid  # (C, E+K, D)
        elif self.joint_cache:
            pinned = self.text[:, None]  # (C, 1, D)
        self.dynamic = DynamicMemory(self.num_classes, cfg.capacity, dim, dtype=cfg.memory_dtype,
                                     pinned=pinned, pinned_mask=mask, kernel=cfg.memory_kernel)

    def _predict(self, qj: torch.Tensor, qc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        if self.dynamic is None:
            self._build(qc.shape[2])
        out = torch.empty(qj.shape[0], self.num_classes)
        self.write_labels = torch.full((qj.shape[0],), -1, dtype=torch.long)  # per query, for the prediction log
        for i in range(0, len(perm), self.config.stream_batch):
            idx = perm[i : i + self.config.stream_batch]
            out[idx] = self._step(qj[idx], qc[idx])
            self.write_labels[idx] = self._labels
        return out

    def _write(self, x: torch.Tensor, p: torch.Tensor) -> None:
        """Write unit features x (b, Dc) into the dynamic memory under the guard's labels of p (b, C)."""
        labels, h, admit = self.guard.pseudo_labels(p)
        self.dynamic.write_batch(x, labels, h, admit=admit, balance=self.guard.balance)
        self._labels = labels

    def _step(self, qj: torch.Tensor, qc: torch.Tensor) -> torch.Tensor:
        """One stream step for b queries: (b, V, Dt), (b, V, Dc) -> (b, C) fused probabilities."""
        cfg = self.config
        if self.text is None:
            return self._step_without_text(qc)
        text_v = self.text_logits_of(qj)  # (b, V, C)
        x = qc[:, 0]  # (b, Dc) un-augmented view
        if cfg.write_label == "final":
            probs = self._fuse(text_v, x)
            self._write(x, probs)
            return probs
        p, _ = confident_views(text_v.softmax(-1), cfg.view_keep, eps=VIEW_ENTROPY_EPS)  # (b, C)
        self._write(x, p)
        return self._fuse(text_v, x)

    def _fuse(self, text_v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(softmax(text) + b_dyn softmax(dynamic) + b_static softmax(static)) / (1 + b_dyn + b_static)."""
        cfg = self.config
        probs = text_v[:, 0].softmax(-1) + cfg.b_dyn * self.read(self.dynamic, x).softmax(-1)  # (b, C)
        b_static = getattr(cfg, "b_static", 0.0) if self.static is not None else 0.0
        if b_static:
            probs = probs + b_static * self.read(self.static, x).softmax(-1)
        return probs / (1.0 + cfg.b_dyn + b_static)

    def _step_without_text(self, qc: torch.Tensor) -> torch.Tensor:
        """A vision-only encoder (no text logits): the static memory's softmax of the kept views
        gives the pseudo-label that writes the dynamic memory, and the prediction is
        (b_dyn softmax(dynamic) + b_static softmax(static)) / (b_dyn + b_static) (static alone if both are 0)."""
        cfg = self.config
        b, V, D = qc.shape
        static_v = self.read(self.static, qc.reshape(b * V, D)).view(b, V, -1).softmax(-1)  # (b, V, C)
        x = qc[:, 0]
        weights = cfg.b_dyn + cfg.b_static

        def fused():
            if weights <= 0:
                return static_v[:, 0]
            return (cfg.b_dyn * self.read(self.dynamic, x).softmax(-1) + cfg.b_static * static_v[:, 0]) / weights

        if cfg.write_label == "final":
            probs = fused()
            self._write(x, probs)
            return probs
        p, _ = confident_views(static_v, cfg.view_keep, eps=VIEW_ENTROPY_EPS)
        self._write(x, p)
        return fused()

    # hooks the trained variant overrides with its learned biases
    def text_logits_of(self, qj: torch.Tensor) -> torch.Tensor:
        """(..., Dt) -> (..., C) text logits."""
        return self.text_logits(qj)

    def read(self, memory, x: torch.Tensor) -> torch.Tensor:
        """(b, Dc) unit queries -> (b, C) logits of a dynamic or static memory."""
        return memory.read(x, beta=self.config.beta, scale=self.config.scale)


@register_method("dmn-tf")
class DMNTrainingFree(DMNZeroShot):
    """DMN with the static few-shot memory and the dynamic memory, no training."""

    config_cls = DMNTFConfig
    needs_support = True
    selection_grid = {"b_dyn": [0.0, 1.0, 3.0], "b_static": [1.0, 3.0, 10.0, 30.0], "beta": [5.5, 20.0]}
    shown_hyperparameters = ("b_dyn", "b_static", "beta")
    uses_support = True
    text_optional = True  # vision-only encoders: static memory + dynamic memory, text logits absent
