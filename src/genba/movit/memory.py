"""MoViT's external attention memory: retrieval, moving-average writes, bounded replacement,
prototype summarisation.

Source: Shen et al., "Memorizing Vision Transformers for medical image analysis" (MoViT, MLMI
2023, arXiv 2303.15553). The paper has no public code; rules marked (interpretation) are
genba's reading of it, filled in from Memorizing Transformers (Wu et al., ICLR 2022), whose
kNN memory MoViT builds on.

One `AttentionMemory` per attention layer. Per head h it holds S slots (key m^k_{h,s}, value
m^v_{h,s}) in R^{d_h}; per slot it records the source (training image id n, token index t) and
the step it was last written (shared by the heads: one token writes one slot in every head).

Read (retrieval), for image x and head h, with queries q_1..q_T of its tokens:
    qbar = mean_t q_t                    the image's query (interpretation: one retrieval per
                                        input, as the issue states it; per-token kNN as in
                                        Memorizing Transformers costs T times more top-k work)
    c_s  = cos(qbar, m^k_{h,s})          valid slots only; in training, slots written by the same
                                        image are excluded (an image never retrieves itself, as at
                                        inference) (interpretation)
    R(x) = the top-k slots by c_s        (k-nearest by cosine of query and stored key; at most
                                        the number of valid slots; ties -> torch.topk's order)
The attention itself (MemoryAttention in vit.py) is, for every token of x, one softmax over the
concatenation [own tokens; R(x)], see `attend`.

Write (training only; in the layer's forward under torch.no_grad, after the batch's own read, so
a batch never reads the keys it writes). Token t of image n gives (k, v) (which tokens are
written is the model's `mem.write`: one snapshot per image, the mean of its tokens' k and v, with
t = 0; or every token):
    if (n, t) owns slot s:  m_s <- (1 - alpha) m_s + alpha (k, v)    exponential moving average;
                                                                  alpha = 1 is plain overwrite
    else it takes a new slot: an empty one if any, else the least recently written one
         (smallest last-write step, ties -> lower slot index): bounded size S, LRU replacement.
    If a batch brings more new sources than free + replaceable slots, the first ones in batch
    order are written.

Prototypes (inference): per head, spherical k-means (k-means++ seeding with a seeded generator,
then Lloyd iterations with cosine assignment) over the valid slot keys into P clusters;
prototype key / value = mean of its members' keys / values. The slot -> prototype assignment is
kept, so the training images each prototype summarises are known (`prototype_sources`). With
prototypes active, retrieval runs the same rule over the P prototypes instead of the S slots.
Option `count_weight`: a prototype of n_p members enters the softmax with the log-weight
log(min(n_p, k)), the mass up to k retrieved near-identical members would have had in the full
memory; off by default (it over-weights loose clusters: worse on a development split of train
images outside the fraction, fashion-mnist 3% and animal-mnist 10%).

Shared with genba's memory kernel (`genba.memory.read`): `l2_normalize` and `dots` (the
similarity of queries with a bank of rows, float32 or float16) compute the retrieval cosines.
Its class-prototype read `memory_read` does not fit: it returns class logits, this memory
returns keys and values to attend to.
"""

from __future__ import annotations

import torch
from torch import nn

from genba.errors import GenbaError
from genba.memory.read import dots, l2_normalize

NEG = float("-inf")


class AttentionMemory(nn.Module):
    """Memory of one attention layer: (H, S, d) keys/values, slot sources, prototypes (buffers).

    Everything is a buffer, so the engine's checkpoints, best-state restore and the saved
    artefact carry the memory with the weights.
    """

    def __init__(self, heads: int, head_dim: int, capacity: int, topk: int, alpha: float, prototypes: int,
                 count_weight: bool = False):
        super().__init__()
        self.count_weight = count_weight
        if capacity < 1 or topk < 1 or prototypes < 1:
            raise GenbaError(f"memory capacity, top-k and prototypes must be >= 1, got {capacity}, {topk}, {prototypes}")
        if not 0.0 < alpha <= 1.0:
            raise GenbaError(f"memory EMA rate alpha must be in (0, 1], got {alpha} (1 = overwrite)")
        self.heads, self.head_dim, self.capacity = heads, head_dim, capacity
        self.topk, self.alpha, self.num_prototypes = topk, float(alpha), prototypes
        self.use_prototypes = False
        self.register_buffer("keys", torch.zeros(heads, capacity, head_dim))
        self.register_buffer("values", torch.zeros(heads, capacity, head_dim))
        self.register_buffer("source", torch.full((capacity,), -1, dtype=torch.long))  # image id, -1 empty
        self.register_buffer("token", torch.full((capacity,), -1, dtype=torch.long))
        self.register_buffer("written", torch.full((capacity,), -1, dtype=torch.long))  # last write step
        self.register_buffer("clock", torch.zeros(1, dtype=torch.long))  # 1-d: safetensors digests need it
        self.register_buffer("proto_keys", torch.zeros(heads, prototypes, head_dim))
        self.register_buffer("proto_values", torch.zeros(heads, prototypes, head_dim))
        self.register_buffer("proto_valid", torch.zeros(heads, prototypes, dtype=torch.bool))
        self.register_buffer("proto_count", torch.zeros(heads, prototypes, dtype=torch.long))
        self.register_buffer("assign", torch.full((heads, capacity), -1, dtype=torch.long))  # slot -> prototype

    # ------------------------------------------------------------------------------ read
    @property
    def filled(self) -> int:
        return int((self.source >= 0).sum())

    def bank(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(keys (H, M, d), values (H, M, d), valid (H, M)) retrieval runs over: slots or prototypes."""
        if self.use_prototypes:
            return self.proto_keys, self.proto_values, self.proto_valid
        valid = (self.source >= 0)[None].expand(self.heads, -1)
        return self.keys, self.values, valid

    @torch.no_grad()
    def retrieve(self, q: torch.Tensor, exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k entries per image and head by cosine(mean query of the image, key).

        Args:
            q: (B, H, T, d) queries of the image's tokens.
            exclude: (B,) image ids whose own slots may not be retrieved (training), or None.

        Returns:
            (idx (B, H, k) long, ok (B, H, k) bool): entry indices into `bank()` and whether each
            is a real entry (False when fewer than k entries are valid / allowed).
        """
        keys, _, valid = self.bank()
        B, H, T, d = q.shape
        M = keys.shape[1]
        k = min(self.topk, M)
        qbar = l2_normalize(q.float().mean(2))  # (B, H, d): the image's query per head
        kn = l2_normalize(keys.float())
        sim = torch.stack([dots(qbar[:, h], kn[h]) for h in range(H)], 1)  # (B, H, M) cosines
        allowed = valid[None].expand(B, H, M)
        if exclude is not None and not self.use_prototypes:
            own = self.source[None, :] == exclude[:, None]  # (B, M)
            allowed = allowed & ~own[:, None, :]
        top, idx = sim.masked_fill(~allowed, NEG).topk(k, dim=-1, sorted=True)  # (B, H, k)
        return idx, torch.isfinite(top)

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Keys and values (B, H, k, d) of the retrieved entries (no gradient: buffers), and their
        softmax log-weights (B, H, k): log(min(n_p, k)) for prototypes, None for slots."""
        keys, values, _ = self.bank()
        heads = torch.arange(self.heads, device=idx.device)[None, :, None]
        weight = None
        if self.use_prototypes and self.count_weight:
            weight = self.proto_count.clamp(1, self.topk).float().log()[heads, idx]
        return keys[heads, idx], values[heads, idx], weight

    # ----------------------------------------------------------------------------- write
    @torch.no_grad()
    def write(self, k: torch.Tensor, v: torch.Tensor, ids: torch.Tensor) -> None:
        """Write a batch's keys/values (B, H, T, d) for images `ids` (B,) (rules in the module doc)."""
        B, H, T, d = k.shape
        ids = torch.as_tensor(ids, dtype=torch.long)
        codes = (ids[:, None] * T + torch.arange(T)[None, :]).reshape(-1)  # (B*T,) source codes
        new_k = k.detach().float().permute(1, 0, 2, 3).reshape(H, B * T, d)
        new_v = v.detach().float().permute(1, 0, 2, 3).reshape(H, B * T, d)
        stored = torch.where(self.source >= 0, self.source * T + self.token, torch.full_like(self.source, -1))
        order = stored.argsort(stable=True)
        ordered = stored[order]
        pos = torch.searchsorted(ordered, codes).clamp_max(self.capacity - 1)
        hit = ordered[pos] == codes  # (B*T,) source already has a slot
        slots_hit = order[pos[hit]]
        a = self.alpha
        self.keys[:, slots_hit] = (1 - a) * self.keys[:, slots_hit] + a * new_k[:, hit]
        self.values[:, slots_hit] = (1 - a) * self.values[:, slots_hit] + a * new_v[:, hit]
        self.written[slots_hit] = self.clock
        rows_new = torch.nonzero(~hit).flatten()
        priority = self.written.clone()
        priority[slots_hit] = torch.iinfo(torch.long).max  # just updated: never replaced by this batch
        n_new = min(len(rows_new), self.capacity - len(slots_hit))
        if n_new > 0:
            slots_new = priority.argsort(stable=True)[:n_new]  # empty (-1) first, then least recently written
            rows_new = rows_new[:n_new]
            self.keys[:, slots_new] = new_k[:, rows_new]
            self.values[:, slots_new] = new_v[:, rows_new]
            self.source[slots_new] = codes[rows_new] // T
            self.token[slots_new] = codes[rows_new] % T
            self.written[slots_new] = self.clock
            self.assign[:, slots_new] = -1
        self.clock += 1

    def clear(self) -> None:
        """Empty every slot and prototype."""
        for name in ("keys", "values", "proto_keys", "proto_values"):
            getattr(self, name).zero_()
        for name in ("source", "token", "written", "assign"):
            getattr(self, name).fill_(-1)
        self.proto_valid.zero_()
        self.proto_count.zero_()
        self.clock.zero_()

    # ------------------------------------------------------------------------ prototypes
    @torch.no_grad()
    def summarise(self, iters: int = 10, seed: int = 0) -> None:
        """Per head: spherical k-means of the valid slot keys into P prototypes (module doc)."""
        valid = torch.nonzero(self.source >= 0).flatten()
        if len(valid) == 0:
            raise GenbaError("the memory is empty: train with the memory on before summarising it")
        P = self.num_prototypes
        self.proto_keys.zero_()
        self.proto_values.zero_()
        self.proto_valid.zero_()
        self.proto_count.zero_()
        self.assign.fill_(-1)
        for h in range(self.heads):
            keys, values = self.keys[h, valid], self.values[h, valid]
            centres = _kmeans_pp(l2_normalize(keys), min(P, len(valid)), seed * 1009 + h)
            member = kmeans_assign(keys, centres, iters)
            for p in range(centres.shape[0]):
                rows = member == p
                if rows.any():
                    self.proto_keys[h, p] = keys[rows].mean(0)
                    self.proto_values[h, p] = values[rows].mean(0)
                    self.proto_valid[h, p] = True
                    self.proto_count[h, p] = int(rows.sum())
            self.assign[h, valid] = member

    def prototype_sources(self, head: int, prototype: int) -> list[int]:
        """Sorted ids of the training images whose slots prototype `prototype` of `head` summarises."""
        rows = self.assign[head] == prototype
        return sorted(set(int(s) for s in self.source[rows].tolist()))

    def nbytes(self, prototypes: bool) -> int:
        """Bytes of what retrieval reads: the slots' or the prototypes' keys and values."""
        n = self.num_prototypes if prototypes else self.capacity
        return 2 * self.heads * n * self.head_dim * self.keys.element_size()


def _kmeans_pp(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k-means++ seeding on unit rows x (N, d) with cosine distance 1 - cos; returns (k, d) unit centres."""
    g = torch.Generator().manual_seed(seed)
    first = int(torch.randint(len(x), (1,), generator=g))
    centres = [x[first]]
    dist = (1 - x @ x[first]).clamp_min(0)
    for _ in range(1, k):
        if float(dist.sum()) <= 0:  # every row already sits on a centre (duplicates)
            pick = int(torch.randint(len(x), (1,), generator=g))
        else:
            pick = int(torch.multinomial(dist, 1, generator=g))
        centres.append(x[pick])
        dist = torch.minimum(dist, (1 - x @ x[pick]).clamp_min(0))
    return torch.stack(centres)


def kmeans_assign(keys: torch.Tensor, centres: torch.Tensor, iters: int) -> torch.Tensor:
    """Lloyd iterations with cosine assignment: member_i = argmax_p cos(key_i, c_p);
    c_p <- normalize(mean of its members' unit keys) (an empty cluster keeps its centre).
    Returns the final (N,) assignment."""
    x = l2_normalize(keys.float())
    c = l2_normalize(centres.float()).clone()
    member = (x @ c.T).argmax(1)
    for _ in range(iters):
        sums = torch.zeros_like(c).index_add_(0, member, x)
        counts = torch.bincount(member, minlength=len(c))
        c = torch.where(counts[:, None] > 0, l2_normalize(sums), c)
        new = (x @ c.T).argmax(1)
        if torch.equal(new, member):
            break
        member = new
    return member


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mem_k: torch.Tensor | None = None,
           mem_v: torch.Tensor | None = None, mem_ok: torch.Tensor | None = None,
           mem_bias: torch.Tensor | None = None, mem_weight: torch.Tensor | None = None) -> torch.Tensor:
    """One softmax over [own tokens; the image's retrieved memory entries], per head.

        a_t = softmax([q_t k_j / sqrt(d)]_{j=1..T} ++ [q_t m^k_s / sqrt(d) + b_h + w_s]_{s in R(x)})
        out_t = sum_j a_tj v_j + sum_s a_ts m^v_s

    Args:
        q, k, v: (B, H, T, d).
        mem_k, mem_v: (B, H, K, d) entries retrieved for each image, or None (plain attention).
        mem_ok: (B, H, K) bool, False for padding entries.
        mem_bias: (H,) learned offset b_h of the memory logits, or None.
        mem_weight: (B, H, K) log-weights w_s of the entries (prototype sizes), or None (w = 0).

    Returns:
        (B, H, T, d).
    """
    scale = q.shape[-1] ** -0.5
    own = torch.einsum("bhtd,bhsd->bhts", q, k) * scale  # (B, H, T, T)
    if mem_k is None:
        return own.softmax(-1) @ v
    mem = torch.einsum("bhtd,bhkd->bhtk", q, mem_k) * scale  # (B, H, T, K)
    if mem_bias is not None:
        mem = mem + mem_bias[None, :, None, None]
    if mem_weight is not None:
        mem = mem + mem_weight[:, :, None, :]
    if mem_ok is not None:
        mem = mem.masked_fill(~mem_ok[:, :, None, :], NEG)
    a = torch.cat([own, mem], -1).softmax(-1)  # (B, H, T, T + K)
    T = k.shape[2]
    return a[..., :T] @ v + a[..., T:] @ mem_v
