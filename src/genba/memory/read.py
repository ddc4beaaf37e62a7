"""The memory read every memory method in genba shares (DMN's read, Tip-Adapter's cache read).

Prototype read (DMN). For a unit query q and class c with unit rows r_{c,1..S} (memory slots,
the class text feature, few-shot features; empty slots masked out by m_{cs} = 0):

    s_cs = q . r_cs                                   cosine
    w_cs = m_cs * exp(-beta * (1 - s_cs))             read weight
    p_c  = sum_s w_cs * r_cs                          class prototype
    logit_c = scale * q . p_c / ||p_c||               (0 for a class with no rows)

It is evaluated in one of two orders that give the same numbers:
  * Gram order (used when keys == values and no output bias): q . p_c = sum_s w_cs s_cs and
    ||p_c||^2 = w_c^T G_c w_c with G_c = R_c R_c^T (C, S, S) kept up to date by the memory.
    One pass over the rows, no (B, C, D) prototype tensor: the read is bandwidth-bound.
  * Direct order: materialises p_c; needed when keys and values differ or carry learned
    biases (trained DMN) and for autograd.

Affinity read (Tip-Adapter, TDA): A = exp(-beta * (1 - q K^T)) @ V, V one-hot labels or masks.
"""

from __future__ import annotations

import threading

import torch

from genba.tensors import EPS, entropy, l2_normalize  # noqa: F401  (re-exported: memory.read.l2_normalize)
_CHUNK_ROWS = 512  # rows converted to fp32 at a time for batched half-precision reads
_SCRATCH = threading.local()  # per-thread float32 buffer for the half-precision Gram form


def dots(q: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Dot products of float queries with stored rows of any float dtype, in float32.

    Args:
        q: (B, D) queries.
        rows: (N, D) rows, float32 / float16 / bfloat16 / int8 codes (scale them afterwards).

    Returns:
        (B, N) float32.
    """
    if rows.dtype == torch.float32:
        return q.float() @ rows.T  # (B, N)
    if rows.device.type != "cpu":  # accelerators multiply half precision at full speed; int8 as float
        kind = torch.float32 if rows.dtype == torch.int8 else rows.dtype
        return (q.to(kind) @ rows.to(kind).T).float()  # (B, N)
    if q.shape[0] < 8 and rows.dtype != torch.int8:
        # For a few queries, a half-precision (B, D) @ (D, N) runs near memory bandwidth on CPU
        # (about 1.2x a plain sum over the bytes for B=1, and reads the rows once for all B);
        # for larger batches it is far slower, so they go through cache-sized float32 blocks.
        return (q.to(rows.dtype) @ rows.T).float()  # (B, N)
    out = torch.empty(q.shape[0], rows.shape[0], dtype=torch.float32, device=rows.device)  # (B, N)
    buf = torch.empty(_CHUNK_ROWS, rows.shape[1], dtype=torch.float32, device=rows.device)  # (R, D) cache-sized
    qf = q.float()
    for i in range(0, rows.shape[0], _CHUNK_ROWS):
        chunk = buf[: min(_CHUNK_ROWS, rows.shape[0] - i)]
        chunk.copy_(rows[i : i + _CHUNK_ROWS])
        torch.mm(qf, chunk.T, out=out[:, i : i + chunk.shape[0]])
    return out


def _quad_form(w: torch.Tensor, gram: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """w_bc^T G_c w_bc for every query b and class c: (B, C, S), (C, S, S) -> (B, C).

    Half-precision G is converted to float32 `chunk` classes at a time (CPU half bmm is slow;
    a full fp32 copy of G would be as large as a float32 G kept in memory).
    """
    if gram.dtype == torch.float32 or gram.device.type != "cpu":  # accelerators: one einsum in fp32
        return torch.einsum("bcs,cst,bct->bc", w, gram.float(), w)  # (B, C)
    S = gram.shape[1]
    scratch = getattr(_SCRATCH, "gram", None)
    if scratch is None or scratch.shape[1:] != (S, S):
        scratch = _SCRATCH.gram = torch.empty(chunk, S, S)  # reused: no fresh pages per read
    out = torch.empty(w.shape[0], gram.shape[0])  # (B, C)
    for c0 in range(0, gram.shape[0], chunk):
        n = min(chunk, gram.shape[0] - c0)
        g = scratch[:n]
        g.copy_(gram[c0 : c0 + n])  # (n, S, S) float32
        wc = w[:, c0 : c0 + n].transpose(0, 1)  # (n, B, S)
        out[:, c0 : c0 + n] = (torch.bmm(wc, g) * wc).sum(-1).T  # (B, n)
    return out


def memory_read(
    q: torch.Tensor,
    rows: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    beta: float = 5.5,
    scale: float = 100.0,
    gram: torch.Tensor | None = None,
    keys: torch.Tensor | None = None,
    query_for_weights: torch.Tensor | None = None,
    out_bias: torch.Tensor | None = None,
    row_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Prototype read of a per-class memory (equations in the module docstring).

    Args:
        q: (B, D) unit queries; the final cosine is taken with these.
        rows: (C, S, D) unit value rows (the prototypes are built from these).
        mask: (C, S) bool, False for empty slots; None means all valid.
        beta: sharpness of the read weights.
        scale: logit scale (CLIP's 100).
        gram: (C, S, S) row Gram matrix; enables the one-pass order when `keys`,
            `query_for_weights` and `out_bias` are None.
        keys: (C, S, D) rows the weights are computed from, if not `rows` (trained DMN).
        query_for_weights: (B, D) query used for the weights, if not `q` (trained DMN).
        out_bias: (C, D) added to the normalised prototype, which is renormalised (trained DMN).
        row_scale: (C, S) per-row scales when `rows` holds int8 codes (value = scale * code);
            the Gram matrix is then that of the values.

    Returns:
        (B, C) float32 logits.
    """
    C, S, D = rows.shape
    B = q.shape[0]
    qw = q if query_for_weights is None else query_for_weights
    k = rows if keys is None else keys
    sim = dots(qw, k.reshape(C * S, D)).view(B, C, S)  # (B, C, S)
    if row_scale is not None:
        if keys is not None:
            raise ValueError("row_scale applies to the rows, not to separate keys")
        sim = sim * row_scale  # (B, C, S) cosines of the dequantized rows
        if gram is None:
            rows = rows.float() * row_scale[..., None]
    if gram is not None and keys is None and query_for_weights is None and out_bias is None:
        w = sim.mul(beta).sub_(beta).exp_()  # (B, C, S) = exp(-beta (1 - sim)), in place: no autograd here
        if mask is not None:
            w.mul_(mask)  # (B, C, S), zero weight on empty slots
        num = torch.linalg.vecdot(w, sim)  # (B, C): q . p_c
        den = _quad_form(w, gram).clamp_min_(0).sqrt_()  # (B, C): ||p_c||
        return num.div_(den.clamp_min_(EPS)).mul_(scale)
    w = torch.exp(sim * beta - beta)  # (B, C, S) = exp(-beta (1 - sim))
    if mask is not None:
        w = w * mask  # (B, C, S), zero weight on empty slots
    vals = rows.float() if rows.dtype != torch.float32 else rows
    logits = []
    step = max(1, (1 << 22) // max(1, C * D))  # bound the (b, C, D) prototype tensor to ~16 MB
    for b0 in range(0, B, step):
        proto = l2_normalize(torch.einsum("bcs,csd->bcd", w[b0 : b0 + step], vals))  # (b, C, D)
        if out_bias is not None:
            proto = l2_normalize(proto + out_bias)  # (b, C, D)
        logits.append(scale * torch.einsum("bd,bcd->bc", q[b0 : b0 + step].to(proto.dtype), proto))
    return torch.cat(logits, dim=0)  # (B, C)


def gram_of(rows: torch.Tensor) -> torch.Tensor:
    """Per-class Gram matrix G_c = R_c R_c^T: (C, S, D) -> (C, S, S) float32."""
    r = rows.float()
    return torch.einsum("csd,ctd->cst", r, r)


def affinity_read(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Tip-Adapter cache read A = exp(-beta * (1 - q K^T)) @ V.

    Args:
        q: (B, D) unit queries.
        keys: (N, D) cache keys (unit rows for the training-free cache).
        values: (N, C) one-hot labels (Tip-Adapter, TDA positive) or masks (TDA negative).
        beta: sharpness.

    Returns:
        (B, C) float32 affinities (un-scaled; the caller multiplies by alpha).
    """
    aff = torch.exp(-beta * (1.0 - dots(q, keys)))  # (B, N)
    return aff @ values.to(aff.dtype)  # (B, C)
