"""The MoViT transformer: a small pre-norm ViT whose attention layers read an external memory.

    x_0 = [cls; stem(input)] + pos                    stem: patch conv (scratch) or a linear map of
                                                      frozen encoder tokens (head setting)
    x'  = x + Proj(MemAttn(LN(x)))                    MemAttn: memory.attend over [own; retrieved]
    x'' = x' + MLP(LN(x'))                            MLP: Linear-GELU-Linear, ratio `mlp_ratio`
    logits = W LN(x_L[cls])

With `memory=False` the same network runs plain attention (the memory-free baseline has the
identical architecture and parameter count minus the per-head memory offsets).
Memory writes happen inside MemoryAttention.forward under torch.no_grad, in training mode only,
after the layer's read (so the engine's `fit` needs no memory callback; see memory.py). b_h, a
learned per-head offset on the memory logits (init `mem.bias_init`), lets a head weigh memory
against its own tokens (interpretation: Memorizing Transformers' learned gate, folded into the one
softmax). Known limit: under torchrun each process writes the entries of its own shard, so the
memories of the processes are not synchronised (single-process training is exact).
Source: Dosovitskiy et al. 2021 (ViT); MoViT (arXiv 2303.15553) for the memory (interpretation
documented in memory.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from genba.errors import GenbaError
from genba.movit.memory import AttentionMemory, attend


@dataclass
class MemoryConfig:
    capacity: int = 2048
    """S, slots per layer (each slot holds one token's key/value in every head)."""
    topk: int = 16
    """k, memory entries retrieved per image and head."""
    alpha: float = 0.2
    """EMA rate of a slot update, m <- (1 - alpha) m + alpha new (1 = overwrite, the no-EMA ablation)."""
    prototypes: int = 64
    """P, k-means prototypes per layer and head used at inference."""
    kmeans_iters: int = 10
    """Lloyd iterations of the prototype k-means."""
    layers: str = "all"
    """Which layers have a memory: 'all', 'last', or comma-separated 0-based indices."""
    write: str = "image"
    """What a training image writes: 'image' (one snapshot per image and layer: the mean over its
    tokens of k and v, matching the mean-query retrieval; default, picked over 'all' during
    development on train images outside the fraction, never on test), or 'all' (cls + every
    patch token, as in Memorizing Transformers)."""
    count_weight: bool = False
    """True: prototypes enter the softmax with log(min(members, k)) (memory.py); default unweighted."""
    bias_init: float = 0.0
    """Initial value of the learned per-head offset b_h of the memory logits."""


@dataclass
class MoViTConfig:
    num_classes: int = 10
    stem: str = "patch"
    """'patch' (images, scratch setting) or 'tokens' (frozen encoder tokens, head setting)."""
    image_size: int = 28
    patch: int = 7
    channels: int = 1
    token_dim: int = 1280
    """Input token width (head setting)."""
    num_tokens: int = 16
    """Input tokens per image (head setting); the patch stem derives it from image_size / patch."""
    dim: int = 64
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    memory: bool = True
    mem: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self) -> None:
        if isinstance(self.mem, dict):
            self.mem = MemoryConfig(**self.mem)
        if self.stem not in ("patch", "tokens"):
            raise GenbaError(f"stem must be 'patch' or 'tokens', got {self.stem!r}")
        if self.stem == "patch" and self.image_size % self.patch:
            raise GenbaError(f"image_size {self.image_size} is not a multiple of the patch size {self.patch}")
        if self.mem.write not in ("all", "image"):
            raise GenbaError(f"mem.write must be 'all' or 'image', got {self.mem.write!r}")
        if self.dim % self.heads:
            raise GenbaError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @property
    def tokens(self) -> int:
        return (self.image_size // self.patch) ** 2 if self.stem == "patch" else self.num_tokens

    def memory_layers(self) -> list[int]:
        if not self.memory:
            return []
        spec = self.mem.layers
        if spec == "all":
            return list(range(self.depth))
        if spec == "last":
            return [self.depth - 1]
        try:
            layers = sorted({int(s) for s in spec.split(",")})
        except ValueError:
            raise GenbaError(f"mem.layers must be 'all', 'last' or indices like '0,2', got {spec!r}") from None
        if any(not 0 <= i < self.depth for i in layers):
            raise GenbaError(f"mem.layers {spec!r} names a layer outside 0..{self.depth - 1}")
        return layers

    def to_dict(self) -> dict:
        return asdict(self)


class MemoryAttention(nn.Module):
    """Multi-head self-attention that also attends to its memory's retrieved entries."""

    def __init__(self, dim: int, heads: int, memory: AttentionMemory | None, dropout: float,
                 write: str = "image", bias_init: float = 0.0):
        super().__init__()
        self.write = write
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.memory = memory
        self.mem_bias = nn.Parameter(torch.full((heads,), float(bias_init))) if memory is not None else None

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (B, H, T, d) each
        mem = self.memory
        if mem is None or (mem.filled == 0 and not mem.use_prototypes):
            out = attend(q, k, v)
        else:
            idx, ok = mem.retrieve(q, exclude=ids if self.training else None)
            mk, mv, weight = mem.gather(idx)
            out = attend(q, k, v, mk, mv, ok, self.mem_bias, weight)
        if mem is not None and self.training:
            if ids is None:
                raise GenbaError("training with a memory needs the image ids of the batch")
            if self.write == "image":
                mem.write(k.mean(2, keepdim=True), v.mean(2, keepdim=True), ids)
            else:
                mem.write(k, v, ids)
        return self.drop(self.proj(out.transpose(1, 2).reshape(B, T, D)))


class Block(nn.Module):
    def __init__(self, cfg: MoViTConfig, memory: AttentionMemory | None):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = MemoryAttention(cfg.dim, cfg.heads, memory, cfg.dropout, cfg.mem.write, cfg.mem.bias_init)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(hidden, cfg.dim), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ids)
        return x + self.mlp(self.norm2(x))


class MoViT(nn.Module):
    """The transformer of both settings; `forward(x, ids)` -> (B, C) logits."""

    def __init__(self, cfg: MoViTConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.stem == "patch":
            self.stem = nn.Conv2d(cfg.channels, cfg.dim, cfg.patch, stride=cfg.patch)
        else:
            self.stem = nn.Sequential(nn.LayerNorm(cfg.token_dim), nn.Linear(cfg.token_dim, cfg.dim))
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos = nn.Parameter(torch.randn(1, cfg.tokens + 1, cfg.dim) * 0.02)
        with_memory = set(cfg.memory_layers())
        m = cfg.mem
        self.blocks = nn.ModuleList(
            Block(cfg, AttentionMemory(cfg.heads, cfg.dim // cfg.heads, m.capacity, m.topk, m.alpha, m.prototypes,
                                  m.count_weight)
                  if i in with_memory else None)
            for i in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    @property
    def memories(self) -> list[AttentionMemory]:
        return [b.attn.memory for b in self.blocks if b.attn.memory is not None]

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.stem == "patch":
            if x.dtype == torch.uint8:
                x = x.float().div(127.5).sub(1.0)  # [0, 255] -> [-1, 1]
            return self.stem(x).flatten(2).transpose(1, 2)  # (B, T, dim)
        return self.stem(x.float())  # (B, T, token_dim) -> (B, T, dim)

    def forward(self, x: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        t = self.tokens(x)
        if t.shape[1] != self.cfg.tokens:
            raise GenbaError(f"the model takes {self.cfg.tokens} tokens per image, got {t.shape[1]}: "
                             "use the image size / encoder it was trained with")
        h = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        for block in self.blocks:
            h = block(h, ids)
        return self.head(self.norm(h[:, 0]))

    def use_prototypes(self, on: bool) -> None:
        """Inference over the k-means prototypes (True) or the full memory (False)."""
        for m in self.memories:
            if on and not bool(m.proto_valid.any()):
                raise GenbaError("the memory has no prototypes: call summarise() after training")
            m.use_prototypes = on

    def summarise(self, seed: int = 0) -> None:
        """Build every layer's prototypes from its memory (k-means per layer and head)."""
        for i, m in enumerate(self.memories):
            m.summarise(self.cfg.mem.kmeans_iters, seed * 31 + i)

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        """Eval-mode logits (N, C) in batches; never writes the memory."""
        was = self.training
        self.eval()
        out = [self(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.cfg.num_classes)
