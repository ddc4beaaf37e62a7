"""The SAK student: Teacher-Agnostic Stem (a small ViT), Teacher-Specific Adapter Paths,
Mixture-of-Representations routers and light dense heads (Lu, Cao, Wang 2024, arXiv 2410.14633).

Stem: patch embedding (p x p conv) + learned positions, then L pre-norm ViT blocks; x^l = block_l(x^{l-1}).
TSAP of teacher t, block l (a chain fed the stem's block outputs):
    z_t^l = x^l + r_t^{l-1},   r_t^l = r_t^{l-1} + s_t^l * Up(GELU(Down(LN(z_t^l)))),   r_t^0 = 0
    path output P_t^l = x^l + r_t^l;  Down: D -> D/4, Up: D/4 -> D, s_t^l a learnable scale, init 0,
so every path starts as the identity/skip of the stem (P_t^l = x^l) and departs from it only as s grows.
MoR router of task k: g_k = softmax(W2 GELU(W1 mean_tokens(x^L))), over R = 1 + T representations
[x^L, P_1^L, ..., P_T^L]; W2 and its bias start at 0, so the gate starts at the uniform average.
Task input F_k = sum_r g_k,r * rep_r (an image-level gate); head_k: LN, Linear D->D, GELU,
Linear D -> p*p*C_k, pixel shuffle to full resolution.
Distillation heads: per teacher a dense head (token map pooled to the teacher's grid, then a
linear map, or a 2-layer MLP for the RADIO-style baseline) and a pooled head on the mean token.
Stem (StudentConfig.stem): 'vit' = the ViT above, trained from scratch with everything else;
a backbone name (e.g. 'efficientnet-lite2') = a FROZEN pretrained backbone whose activations at
several cut points feed a light trainable neck (genba.sak.frozen_stem); the paths then run over
its levels instead of ViT blocks and training reads cached activations, not images.
Variants (StudentConfig): tsap off -> every teacher is distilled from the stem (many-to-one,
RADIO-style: Ranzinger et al. 2024, AM-RADIO); router 'average' -> fixed uniform gate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from genba.errors import GenbaError

TASK_CHANNELS = {"semantic": None, "boundary": 1, "saliency": 1, "depth": 1}  # semantic: number of classes


@dataclass
class StudentConfig:
    image_size: int = 64
    patch: int = 8
    dim: int = 64
    depth: int = 4
    heads: int = 2
    mlp_ratio: float = 2.0
    teachers: dict = field(default_factory=dict)  # name -> [dim, grid_h, grid_w]
    tasks: dict = field(default_factory=dict)  # task -> output channels
    tsap: bool = True
    router: str = "learned"  # 'learned' | 'average'
    distill_head: str = "linear"  # 'linear' | 'mlp'
    stem: str = "vit"  # 'vit' (from scratch) | a genba.backbones name (frozen, pretrained)
    stem_input: int = 128  # the frozen backbone's input size (px)
    stem_levels: list = field(default_factory=list)  # its cut points (genba.sak.frozen_stem.cut_points)
    stem_channels: list = field(default_factory=list)
    stem_provenance: str = ""  # the backbone weights the student was trained on

    def __post_init__(self) -> None:
        if self.image_size % self.patch:
            raise GenbaError(f"image size {self.image_size} must be a multiple of the patch size {self.patch}")
        if self.dim % self.heads or self.dim % 4:
            raise GenbaError(f"student dim {self.dim} must be divisible by its {self.heads} heads and by 4")
        if self.router not in ("learned", "average"):
            raise GenbaError(f"router must be 'learned' or 'average', got {self.router!r}")
        if self.distill_head not in ("linear", "mlp"):
            raise GenbaError(f"distill_head must be 'linear' or 'mlp', got {self.distill_head!r}")
        if self.stem != "vit" and (not self.stem_levels or len(self.stem_levels) != len(self.stem_channels)):
            raise GenbaError(f"the frozen stem {self.stem!r} needs its cut points and their channels "
                             "(genba.sak.pipeline.build_student fills them)")
        unknown = sorted(set(self.tasks) - set(TASK_CHANNELS))
        if unknown:
            raise GenbaError(f"unknown task(s) {', '.join(unknown)}: choose from {', '.join(TASK_CHANNELS)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def levels(self) -> int:
        """How many stem outputs the adapter paths read: ViT blocks, or the frozen backbone's cut points."""
        return self.depth if self.stem == "vit" else len(self.stem_levels)


class Block(nn.Module):
    """Pre-norm ViT block: x + Attn(LN x), then x + MLP(LN x)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))
        return x + self.mlp(self.norm2(x))


class Stem(nn.Module):
    """The Teacher-Agnostic Stem; forward -> the list of every block's output (B, N, D)."""

    def __init__(self, cfg: StudentConfig):
        super().__init__()
        self.embed = nn.Conv2d(3, cfg.dim, cfg.patch, cfg.patch)
        self.pos = nn.Parameter(torch.randn(1, cfg.grid * cfg.grid, cfg.dim) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed(pixels).flatten(2).transpose(1, 2) + self.pos
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        outs[-1] = self.norm(outs[-1])
        return outs


class Adapter(nn.Module):
    """s * Up(GELU(Down(LN z))), D -> D/4 -> D, s init 0."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down, self.up = nn.Linear(dim, dim // 4), nn.Linear(dim // 4, dim)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.scale * self.up(F.gelu(self.down(self.norm(z))))


class AdapterPath(nn.Module):
    """One teacher's chain of adapters over the stem's block outputs (see module docstring)."""

    def __init__(self, dim: int, depth: int):
        super().__init__()
        self.adapters = nn.ModuleList(Adapter(dim) for _ in range(depth))

    def forward(self, stem_outputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if len(stem_outputs) != len(self.adapters):
            raise ValueError(f"adapter path has {len(self.adapters)} adapters, got {len(stem_outputs)} block outputs")
        residual = torch.zeros_like(stem_outputs[0])
        outs = []
        for x, adapter in zip(stem_outputs, self.adapters):
            residual = residual + adapter(x + residual)
            outs.append(x + residual)
        return outs


class Router(nn.Module):
    """Image-level softmax gate over R representations from the pooled stem tokens."""

    def __init__(self, dim: int, representations: int, learned: bool = True):
        super().__init__()
        self.learned = learned
        self.representations = representations
        self.mlp = nn.Sequential(nn.Linear(dim, dim // 2), nn.GELU(), nn.Linear(dim // 2, representations))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, stem_tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, R) gate weights summing to 1."""
        if not self.learned:
            return stem_tokens.new_full((stem_tokens.shape[0], self.representations), 1.0 / self.representations)
        return self.mlp(stem_tokens.mean(dim=1)).softmax(dim=-1)


class DenseHead(nn.Module):
    """Tokens (B, N, D) on a g x g grid -> (B, C, g*p, g*p) by a per-token MLP and pixel shuffle."""

    def __init__(self, dim: int, channels: int, patch: int):
        super().__init__()
        self.patch, self.channels = patch, channels
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, patch * patch * channels))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        g = int(round(n ** 0.5))
        out = self.mlp(tokens).transpose(1, 2).reshape(b, self.channels * self.patch * self.patch, g, g)
        return F.pixel_shuffle(out, self.patch)


def _projection(dim: int, out: int, kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, out))
    return nn.Linear(dim, out)


class DistillHead(nn.Module):
    """Student tokens -> a teacher's dense map (B, Dt, h, w) and pooled vector (B, Dt)."""

    def __init__(self, dim: int, teacher_dim: int, grid: tuple[int, int], kind: str):
        super().__init__()
        self.grid = tuple(grid)
        self.dense, self.pooled = _projection(dim, teacher_dim, kind), _projection(dim, teacher_dim, kind)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, n, d = tokens.shape
        g = int(round(n ** 0.5))
        grid = tokens.transpose(1, 2).reshape(b, d, g, g)
        if self.grid != (g, g):
            grid = F.adaptive_avg_pool2d(grid, self.grid) if self.grid[0] <= g else \
                F.interpolate(grid, size=self.grid, mode="bilinear", align_corners=False)
        dense = self.dense(grid.flatten(2).transpose(1, 2))  # (B, h*w, Dt)
        return dense.transpose(1, 2).reshape(b, -1, *self.grid), self.pooled(tokens.mean(dim=1))


class SAKStudent(nn.Module):
    """forward(images uint8 or float) -> {'tasks': {task: (B, C, H, W)}, 'teachers': {t: (dense, pooled)},
    'gates': {task: (B, R)}}."""

    def __init__(self, cfg: StudentConfig, backbone=None):
        super().__init__()
        self.cfg = cfg
        self.teacher_names = list(cfg.teachers)
        self.stem = Stem(cfg) if cfg.stem == "vit" else _frozen_stem(cfg, backbone)
        self.paths = nn.ModuleDict({_key(t): AdapterPath(cfg.dim, cfg.levels) for t in self.teacher_names} if cfg.tsap else {})
        self.distill = nn.ModuleDict({_key(t): DistillHead(cfg.dim, int(v[0]), (int(v[1]), int(v[2])), cfg.distill_head)
                                      for t, v in cfg.teachers.items()})
        representations = 1 + len(self.paths)
        self.routers = nn.ModuleDict({task: Router(cfg.dim, representations, cfg.router == "learned") for task in cfg.tasks})
        self.heads = nn.ModuleDict({task: DenseHead(cfg.dim, int(c), cfg.patch) for task, c in cfg.tasks.items()})

    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - 0.45) / 0.25

    @property
    def input_keys(self) -> list[str] | None:
        """The batch keys of the cached frozen-stem activations the model trains on (None: it reads images)."""
        if self.cfg.stem == "vit":
            return None
        from genba.sak.frozen_stem import level_keys

        return level_keys(self.cfg.levels)

    def representations(self, images) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(stem's final tokens, [stem final, path_1 final, ...]); `images` may be the cached level maps
        (a list) of a frozen stem."""
        stem = self.stem(self.normalize(images) if self.cfg.stem == "vit" else images)
        reps = [stem[-1]] + [self.paths[_key(t)](stem)[-1] for t in self.teacher_names if _key(t) in self.paths]
        return stem[-1], reps

    def forward(self, images, with_teachers: bool = True, tasks: list[str] | None = None) -> dict:
        """`images`: uint8 (B, 3, H, W), or for a frozen stem the list of its cached level maps.
        `tasks`: the task heads to run (default all of cfg.tasks; [] for none)."""
        stem_final, reps = self.representations(images)
        out: dict = {"tasks": {}, "gates": {}, "teachers": {}}
        if with_teachers:
            for i, t in enumerate(self.teacher_names):
                out["teachers"][t] = self.distill[_key(t)](reps[1 + i] if self.paths else stem_final)
        tasks = list(self.cfg.tasks) if tasks is None else tasks
        if tasks:
            stacked = torch.stack(reps, dim=1)  # (B, R, N, D)
            for task in tasks:
                gate = self.routers[task](stem_final)
                out["gates"][task] = gate
                out["tasks"][task] = self.heads[task](torch.einsum("br,brnd->bnd", gate, stacked))
        return out

    def deployed_parameters(self) -> int:
        """Parameters used at inference for the tasks (stem incl. a frozen backbone, paths, routers, heads;
        not the distillation heads)."""
        frozen = self.stem.backbone_parameters() if self.cfg.stem != "vit" else 0
        return frozen + self.trainable_parameters()

    def trainable_parameters(self) -> int:
        """The deployed parameters the student learns (a frozen backbone excluded)."""
        return sum(p.numel() for name, p in self.named_parameters() if not name.startswith("distill."))


def _frozen_stem(cfg: StudentConfig, backbone=None):
    from genba.sak.frozen_stem import FrozenStem

    return FrozenStem(cfg.stem, cfg.stem_levels, cfg.stem_channels, cfg.stem_input, cfg.grid, cfg.dim,
                      backbone=backbone, provenance=cfg.stem_provenance)


def _key(teacher: str) -> str:
    """A ModuleDict-safe key for a teacher name ('hf:/x/y' has '.' and '/')."""
    return "".join(ch if ch.isalnum() else "_" for ch in teacher)


class LinearDenseHead(nn.Module):
    """A linear dense probe: tokens (B, N, D) on a g x g grid -> Linear D -> p*p*C per token, pixel shuffle."""

    def __init__(self, dim: int, channels: int, patch: int):
        super().__init__()
        self.patch, self.channels = patch, channels
        self.linear = nn.Linear(dim, patch * patch * channels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        g = int(round(n ** 0.5))
        out = self.linear(tokens).transpose(1, 2).reshape(b, self.channels * self.patch * self.patch, g, g)
        return F.pixel_shuffle(out, self.patch)


class TeacherHeadModel(nn.Module):
    """Dense heads on one frozen teacher's cached map, one independent head per task.

    The map (B, Dt, h, w) is resized (bilinear) to the student's g x g grid. probe 'mlp' (the
    teachers' oracle): Linear Dt -> D, then the student's DenseHead; probe 'linear' (the teacher-bias
    table): one linear map per cell Dt -> p*p*C_k, pixel-shuffled (a linear dense probe).
    """

    def __init__(self, teacher_dim: int, cfg: StudentConfig, probe: str = "mlp"):
        super().__init__()
        if probe not in ("mlp", "linear"):
            raise GenbaError(f"probe must be 'mlp' or 'linear', got {probe!r}")
        self.cfg = cfg
        self.heads = nn.ModuleDict({task: LinearDenseHead(teacher_dim, int(c), cfg.patch) if probe == "linear" else
                                    nn.Sequential(nn.Linear(teacher_dim, cfg.dim), DenseHead(cfg.dim, int(c), cfg.patch))
                                    for task, c in cfg.tasks.items()})

    def forward(self, teacher_map: torch.Tensor) -> dict:
        g = self.cfg.grid
        x = F.interpolate(teacher_map.float(), size=(g, g), mode="bilinear", align_corners=False).flatten(2).transpose(1, 2)
        return {"tasks": {task: head(x) for task, head in self.heads.items()}, "gates": {}, "teachers": {}}
