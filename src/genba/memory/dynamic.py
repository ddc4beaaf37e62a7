"""DMN's dynamic memory: one fixed-length queue of test features per class, kept by entropy.

Storage is preallocated once: rows (C, L + E, D) where slots [0, L) are the queue and slots
[L, L + E) are E pinned rows per class that never change (DMN reads the class text feature and
the few-shot features together with the queue). Write rule for a feature x predicted as class c
with prediction entropy h:
    queue of c not full  -> append x
    queue full           -> j = argmax_s h_cs; replace slot j with x only if h < h_cj
                            (ties: the most recently written of the tied slots, as TDA's
                            reference does: it keeps each class list sorted by entropy with a
                            stable sort and replaces the last entry. DMN's reference
                            (dmn_main.py update_memory_bank) differs: it replaces indice[-1] of
                            torch.sort(entropies), the HIGHEST SLOT among the tied worst, not the
                            newest. genba keeps one rule for both, the newest: ties need exactly
                            equal float entropies (e.g. saturated predictions), and the store
                            rebuilds this rule from its write order; pinned by
                            tests/test_faithfulness.py::test_dmn_reference_evicts_the_highest_tied_slot)
Only features are stored, never images. The per-class Gram matrix G_c = R_c R_c^T is updated
with each write (one row and column, O((L + E) D)) so that a read is one pass over the rows
(`genba.memory.read.memory_read`, Gram order). Every write validates its inputs first: a bad
write raises GenbaError and leaves the memory exactly as it was.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from genba.errors import GenbaError
from genba.memory.read import affinity_read, dots, gram_of, memory_read

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int8": torch.int8}
KERNELS = ("auto", "fused", "torch")
"""Memory read kernels: 'auto' (default) and 'fused' use genba.memory.fused wherever it applies
(float16 rows, one query) and torch elsewhere; 'torch' never uses it."""


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float16' | 'float32' | 'bfloat16' | 'int8' or a torch dtype -> torch dtype (GenbaError otherwise)."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if dtype in _DTYPES:
        return _DTYPES[dtype]
    raise GenbaError(f"memory dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)}")


def check_features(x: torch.Tensor, dim: int, what: str) -> torch.Tensor:
    """Validate a (N, dim) block of features: right shape, finite, non-zero rows; returns float32."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise GenbaError(f"{what} must have shape (N, {dim}), got {shape}; pass features of the memory's space")
    if not torch.isfinite(x).all():
        raise GenbaError(f"{what} contain NaN or inf values; drop or re-extract those features")
    if (x.norm(dim=1) == 0).any():
        raise GenbaError(f"{what} contain an all-zero feature vector, which has no direction")
    return x.float()


def check_labels(y, n: int, num_classes: int, what: str) -> torch.Tensor:
    """Validate n integer labels in [0, num_classes); returns int64."""
    if y is None:
        raise GenbaError(f"{what} are missing: pass {n} integer class indices")
    try:
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as e:
        raise GenbaError(f"{what} must be {n} integer class indices: {e}") from None
    if y.dim() != 1 or y.shape[0] != n or y.dtype.is_floating_point or y.dtype == torch.bool:
        raise GenbaError(f"{what} must be {n} integer class indices, got shape {tuple(y.shape)} of {y.dtype}")
    if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise GenbaError(f"{what} must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]")
    return y.long()


class DynamicMemory:
    """Per-class feature queues with entropy-based replacement (DMN's dynamic memory, TDA's caches).

    Args:
        num_classes: C.
        capacity: L, slots per class queue (DMN 50; TDA 3 positive / 2 negative).
        dim: D, feature dimension.
        dtype: storage dtype of rows; float16 halves the bytes (C=1000, L=50, D=512: 51 MB); int8
            keeps each row as codes with a per-row scale (the store's codec: s = max|x| / 127,
            code = round(x / s)), a quarter of float32, with the Gram matrix in float16.
        pinned: (C, E, D) rows read with every class queue (text feature, few-shot features).
        pinned_mask: (C, E) bool, False where a pinned row is padding.
        payload_dim: P > 0 keeps a (C, L, P) float32 payload per slot (TDA's probability maps).
        keep_gram: maintain G (C, L+E, L+E) for one-pass reads (dtype follows `dtype`).
        normalize: store written features as unit rows (DMN); False keeps them as given (TDA's
            reference caches the un-normalised mean of the kept views).
    """

    def __init__(self, num_classes: int, capacity: int, dim: int, *, dtype: str | torch.dtype = "float16",
                 pinned: torch.Tensor | None = None, pinned_mask: torch.Tensor | None = None,
                 payload_dim: int = 0, keep_gram: bool = True, kernel: str = "auto", normalize: bool = True,
                 device: torch.device | str = "cpu") -> None:
        if num_classes < 1 or capacity < 1 or dim < 1:
            raise GenbaError(f"memory needs num_classes, capacity, dim >= 1, got {num_classes}, {capacity}, {dim}")
        C, L, D = num_classes, capacity, dim
        E = 0 if pinned is None else pinned.shape[1]
        if pinned is not None:
            if pinned.dim() != 3 or pinned.shape[0] != C or pinned.shape[2] != D:
                raise GenbaError(f"pinned rows must have shape ({C}, E, {D}), got {tuple(pinned.shape)}")
            if pinned_mask is not None and tuple(pinned_mask.shape) != (C, E):
                raise GenbaError(f"pinned_mask must have shape ({C}, {E}), got {tuple(pinned_mask.shape)}")
            check_features(pinned.reshape(-1, D)[pinned_mask.reshape(-1).bool()] if pinned_mask is not None
                           else pinned.reshape(-1, D), D, "pinned rows")
        if kernel not in KERNELS:
            raise GenbaError(f"unknown memory kernel '{kernel}': use 'auto' (compiled where it applies), 'fused' or 'torch'")
        self.kernel, self.normalize = kernel, normalize
        self.num_classes, self.capacity, self.dim, self.num_pinned = C, L, D, E
        self.dtype = resolve_dtype(dtype)
        self.quantized = self.dtype == torch.int8
        self.gram_dtype = torch.float16 if self.quantized else self.dtype
        self.rows = torch.zeros(C, L + E, D, dtype=self.dtype)  # (C, L+E, D), int8 codes when quantized
        self.row_scale = torch.zeros(C, L + E) if self.quantized else None  # (C, L+E) per-row scale of the codes
        self.valid = torch.zeros(C, L + E, dtype=torch.bool)  # (C, L+E)
        self.entropy = torch.full((C, L), math.inf)  # (C, L) entropy of each queued feature
        self.count = torch.zeros(C, dtype=torch.long)  # (C,) filled queue slots
        self.payload = torch.zeros(C, L, payload_dim) if payload_dim else None  # (C, L, P)
        self.changes = torch.zeros(C, dtype=torch.long)  # (C,) bumped whenever a class's rows change
        self.written = torch.zeros(C, L, dtype=torch.long)  # (C, L) write stamp of each slot (0: never), breaks eviction ties
        self._clock = 0
        if E:
            pm = torch.ones(C, E, dtype=torch.bool) if pinned_mask is None else pinned_mask.bool()
            unit = torch.nn.functional.normalize(pinned.float(), dim=-1) * pm[..., None]  # (C, E, D)
            codes, scales = self.encode(unit.reshape(C * E, D))
            self.rows[:, L:] = codes.view(C, E, D)
            if self.quantized:
                self.row_scale[:, L:] = scales.view(C, E)
            self.valid[:, L:] = pm
        self.gram = None
        if keep_gram:
            self.gram = torch.zeros(C, L + E, L + E, dtype=self.gram_dtype)  # (C, L+E, L+E)
            if E:
                self.gram[:, L:, L:] = gram_of(self.values(slice(None), slice(L, None))).to(self.gram_dtype)  # (C, E, E)
        self.to(device)

    def to(self, device: torch.device | str) -> "DynamicMemory":
        """Move every tensor of the memory to `device` (reads and writes follow them); returns self."""
        for name in ("rows", "row_scale", "valid", "entropy", "count", "payload", "changes", "written", "gram"):
            tensor = getattr(self, name, None)
            if tensor is not None:
                setattr(self, name, tensor.to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.rows.device

    # ----------------------------------------------------------------------------- codes
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, D) float rows -> (stored rows in the memory's dtype, (N,) scales or None)."""
        if not self.quantized:
            return x.to(self.dtype), None
        x = x.float()
        scale = x.abs().amax(1) / 127.0  # (N,) as genba.store.codec
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.round(x / scale[:, None]).clamp_(-127, 127).to(torch.int8), scale

    def values(self, c=slice(None), j=slice(None)) -> torch.Tensor:
        """Rows [c, j] as float32 values (dequantized when the memory keeps int8 codes)."""
        if not self.quantized:
            return self.rows[c, j].float()
        return self.rows[c, j].float() * self.row_scale[c, j][..., None]

    def set_row(self, c: int, j: int, x: torch.Tensor) -> None:
        """Store (D,) float `x` in slot (c, j) as the memory keeps it, updating the Gram row and column."""
        codes, scale = self.encode(x.reshape(1, -1))
        self.rows[c, j] = codes[0]
        if self.quantized:
            self.row_scale[c, j] = scale[0]
        self.changes[c] += 1
        if self.gram is not None:
            g = (self.values(c) @ self.values(c, j)).to(self.gram_dtype)  # (L+E,), zero at empty slots
            self.gram[c, j, :] = g
            self.gram[c, :, j] = g

    # ----------------------------------------------------------------------------- write
    def _check_write(self, x: torch.Tensor, cls, ent, payload, admit) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = check_features(x, self.dim, "memory write features")  # (B, D)
        B = x.shape[0]
        cls = check_labels(cls, B, self.num_classes, "memory write classes")
        try:
            ent = torch.as_tensor(ent, dtype=torch.float32).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as e:
            raise GenbaError(f"memory write entropies must be {B} numbers: {e}") from None
        if ent.shape[0] != B or not torch.isfinite(ent).all() or (ent < 0).any():
            raise GenbaError(f"memory write entropies must be {B} finite values >= 0, got {ent.tolist()[:4]}")
        if admit is not None and tuple(torch.as_tensor(admit).shape) != (B,):
            raise GenbaError(f"the write gate must hold {B} booleans")
        if self.payload is not None:
            if payload is None or payload.shape != (B, self.payload.shape[2]) or not torch.isfinite(payload).all():
                raise GenbaError(f"this memory needs a finite payload of shape ({B}, {self.payload.shape[2]}) per write")
        elif payload is not None:
            raise GenbaError("this memory keeps no payload; pass payload=None")
        return (torch.nn.functional.normalize(x, dim=1) if self.normalize else x), cls, ent

    def write(self, x: torch.Tensor, cls: int, ent: float, payload: torch.Tensor | None = None) -> bool:
        """Write one feature (D,) for class `cls` with entropy `ent`; True if it was stored."""
        x = x.reshape(1, -1) if isinstance(x, torch.Tensor) and x.dim() == 1 else x
        p = payload.reshape(1, -1) if payload is not None else None
        return bool(self.write_batch(x, [cls], [ent], p)[0])

    def write_batch(self, x: torch.Tensor, cls, ent, payload: torch.Tensor | None = None, *,
                    admit: torch.Tensor | None = None, balance: float = 0.0) -> torch.Tensor:
        """Write B features in order; the result equals B single writes. Returns (B,) bool stored.

        Args:
            x: (B, D) features (normalised here).
            cls: (B,) class indices.
            ent: (B,) prediction entropies.
            payload: (B, P) when the memory keeps a payload.
            admit: (B,) bool write gate; False skips that write (collapse guard, e.g. confidence).
            balance: > 0 turns on class-balanced admission (collapse guard): a class may append
                only while count_c < balance * mean_c'(count_c') + 1; otherwise its queue counts
                as full and the entropy replacement rule applies.
        """
        x, cls, ent = self._check_write(x, cls, ent, payload, admit)  # nothing mutated before this line
        x = x.to(self.device)
        L = self.capacity
        stored = torch.zeros(x.shape[0], dtype=torch.bool)
        xs, xs_scale = self.encode(x)  # (B, D) as stored, (B,) scales when quantized
        for i in range(x.shape[0]):
            if admit is not None and not bool(admit[i]):
                continue
            c, h = int(cls[i]), float(ent[i])
            n = int(self.count[c])
            room = n < L and (balance <= 0 or n < balance * float(self.count.float().mean()) + 1.0)
            if room:
                j = n
                self.count[c] += 1
            else:
                ent_c = self.entropy[c, :n]
                tied = ent_c == ent_c.max()
                j = int(torch.argmax(torch.where(tied, self.written[c, :n], -1)))  # latest written of the worst
                if not h < float(self.entropy[c, j]):
                    continue
            self.rows[c, j] = xs[i]
            if self.quantized:
                self.row_scale[c, j] = xs_scale[i]
            self.valid[c, j] = True
            self.entropy[c, j] = h
            self.changes[c] += 1
            self._clock += 1
            self.written[c, j] = self._clock
            if self.payload is not None:
                self.payload[c, j] = payload[i].float()
            if self.gram is not None:
                g = (self.values(c) @ self.values(c, j)).to(self.gram_dtype)  # (L+E,), zero at empty slots
                self.gram[c, j, :] = g
                self.gram[c, :, j] = g
            stored[i] = True
        return stored

    # ------------------------------------------------------------------------------ read
    def read(self, q: torch.Tensor, *, beta: float = 5.5, scale: float = 100.0) -> torch.Tensor:
        """Prototype read (C classes) of unit queries q (B, D) -> (B, C) logits; see memory_read."""
        q = check_features(q, self.dim, "memory read queries").to(self.device)
        if self.kernel != "torch":  # 'auto' and 'fused': the compiled read wherever it applies
            from genba.memory.fused import fused_read

            logits = fused_read(self.rows, self.gram, self.valid, q, beta=beta, scale=scale)
            if logits is not None:
                return logits
        if self.quantized:
            return memory_read(q, self.rows, self.valid, beta=beta, scale=scale, gram=self.gram, row_scale=self.row_scale)
        return memory_read(q, self.rows, self.valid, beta=beta, scale=scale, gram=self.gram)

    def affinity(self, q: torch.Tensor, *, beta: float, values: Callable | None = None) -> torch.Tensor:
        """Tip-style read of the queue slots: (B, D) -> (B, C).

        values None: A_c = sum_s m_cs exp(-beta(1 - q.r_cs)), one-hot values (TDA positive cache);
        values f: A = exp(-beta(1 - q R^T)) @ f(payload), e.g. masks of stored probabilities
        (TDA negative cache).
        """
        q = check_features(q, self.dim, "memory read queries").to(self.device)
        C, L, D = self.num_classes, self.capacity, self.dim
        slots = self.values(slice(None), slice(0, L)).reshape(C * L, D) if self.quantized else self.rows[:, :L].reshape(C * L, D)
        m = self.valid[:, :L].reshape(C * L).float()  # (C*L,)
        if values is None:
            aff = torch.exp(-beta * (1.0 - dots(q, slots))) * m  # (B, C*L)
            return aff.view(-1, C, L).sum(-1)  # (B, C)
        vals = values(self.payload.reshape(C * L, -1)) * m[:, None]  # (C*L, P)
        return affinity_read(q, slots, vals, beta=beta)

    # ------------------------------------------------------------------------- bookkeeping
    @property
    def nbytes(self) -> int:
        """Bytes held by the memory's tensors."""
        ts = [self.rows, self.valid, self.entropy, self.count, self.payload, self.gram, self.row_scale]
        return sum(t.numel() * t.element_size() for t in ts if t is not None)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that define the memory (copies)."""
        d = {"rows": self.rows, "valid": self.valid, "entropy": self.entropy, "count": self.count, "written": self.written}
        d.update({k: v for k, v in (("payload", self.payload), ("gram", self.gram), ("row_scale", self.row_scale))
                  if v is not None})
        return {k: v.clone() for k, v in d.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore a `state_dict` of a memory with the same shapes (checked before anything changes)."""
        mine = {"rows": self.rows, "valid": self.valid, "entropy": self.entropy, "count": self.count,
                "written": self.written, "payload": self.payload, "gram": self.gram, "row_scale": self.row_scale}
        mine = {k: v for k, v in mine.items() if v is not None}
        if set(state) != set(mine) or any(state[k].shape != v.shape or state[k].dtype != v.dtype
                                          for k, v in mine.items()):
            raise GenbaError("memory state does not match this memory's classes, capacity, dim or dtype")
        for k, v in mine.items():
            v.copy_(state[k])
        self._clock = int(self.written.max())
        self.changes += 1
