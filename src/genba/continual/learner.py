"""The continual learner on cached features: the VLM's joint space stays the prediction space.

    e(x)    = normalize( z(x) + delta( normalize(v(x) - c) ) )          (image embedding)
    logit_k = scale * cos(e(x), t_k)                                     (t_k frozen class text)

z is the encoder's joint image embedding (conse: 384-d, unit), v its visual feature (conse:
1280-d), c a fixed centre (the mean visual feature of reference images from outside the
stream), t_k the template-averaged text embedding of class k (genba.zeroshot). `delta` is a
residual adapter whose output layer starts at zero, so the untrained learner IS the zero-shot
model (logits equal to the last bit: e is computed as z + normalize(z + delta) - normalize(z),
which is z exactly when delta = 0 and normalize(z + delta) up to float rounding otherwise). This is the CLIP-Adapter / Tip-Adapter-F family's residual
form (Gao et al. 2021) applied before the cosine, as in ZSCL's image-side fine-tuning.

Adapters (the `delta` module):
  * `ResidualAdapter` - one shared adapter (linear, or a bottleneck with `hidden` > 0);
  * `TaskAdapters`    - one adapter per task, earlier ones frozen; which one reads an image is
                        the task id when known (MTIL) or the `TaskRouter` (X-TAIL), and no
                        adapter (the zero-shot path) when the router says "unseen domain";
  * `MixtureAdapters` - a pool of experts mixed by a learned per-task gate (MoE-Adapters).
A training-free cache (`TipCache`, Tip-Adapter) may add `alpha * exp(-beta (1 - v.K)) L` to
the logits. Batches: "x" visual (B, Dv), "z" joint (B, D), "y" global class (B,), "task" (B,)
the task index or -1 when unknown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genba.device import module_device, to_device
from genba.errors import GenbaError
from genba.continual.objective import ContinualObjective

SCALE = 100.0  # CLIP's logit scale (genba.zeroshot.LOGIT_SCALE)


class ResidualAdapter(nn.Module):
    """v (B, Dv) -> (B, D); linear, or Linear-ReLU-Linear when hidden > 0; output layer zero.

    The bottleneck reads sqrt(Dv) * v (unit-variance entries for a unit v), so that its hidden
    units are O(1) and it learns at the pace of the linear adapter under AdamW."""

    def __init__(self, dim_in: int, dim_out: int, hidden: int = 0) -> None:
        super().__init__()
        self.gain = float(dim_in) ** 0.5 if hidden > 0 else 1.0
        self.body = nn.Sequential(nn.Linear(dim_in, hidden), nn.ReLU()) if hidden > 0 else nn.Identity()
        self.out = nn.Linear(hidden if hidden > 0 else dim_in, dim_out)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, v: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.body(v * self.gain))


class TaskRouter(nn.Module):
    """Which seen task an image comes from, or none (DIKI / RAIL's rule for unseen domains).

    Per seen class k (of task t_k): the centroid m_k of its unit visual training features and a
    threshold tau_k = the `quantile` of cos(v_i, m_k) over its own training rows. A query v goes
    to task t_k* with k* = argmax_k (cos(v, m_k) - tau_k), or to the zero-shot path (-1) when
    that margin is negative: images unlike every seen task keep the frozen model's prediction.
    An image routed to task t is classified among t's classes only (`allowed`; RAIL's
    domain-wise fusion: a seen domain is answered by its own adapter in its own label space).
    Fixed in advance: quantile = 0.05 (nothing tuned on test or future tasks).
    """

    def __init__(self, dim: int, quantile: float = 0.05) -> None:
        super().__init__()
        self.quantile = quantile
        self.register_buffer("centroids", torch.zeros(0, dim))
        self.register_buffer("thresholds", torch.zeros(0))
        self.register_buffer("owner", torch.zeros(0, dtype=torch.long))
        self.register_buffer("classes", torch.zeros(0, dtype=torch.long))

    def add_task(self, v: torch.Tensor, y: torch.Tensor, task: int) -> None:
        """Add the classes of task `task` from its unit visual training rows v (N, Dv), global labels y."""
        cents, thr = [], []
        labels = torch.unique(y)
        for k in labels.tolist():
            rows = v[y == k]
            m = F.normalize(rows.mean(0), dim=0)
            cents.append(m)
            thr.append(torch.quantile(rows @ m, self.quantile))
        self.centroids = torch.cat([self.centroids, torch.stack(cents)])
        self.thresholds = torch.cat([self.thresholds, torch.stack(thr)])
        self.owner = torch.cat([self.owner, torch.full((len(cents),), task, dtype=torch.long)])
        self.classes = torch.cat([self.classes, labels])

    def allowed(self, routed: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(B, K) mask: a row routed to task t may predict only t's classes (RAIL's domain-wise
        label space); rows on the zero-shot path (-1) keep every class."""
        owner = torch.full((int(classes.max()) + 1,), -2, dtype=torch.long)
        owner[self.classes[self.classes <= classes.max()]] = self.owner[self.classes <= classes.max()]
        mask = owner[classes][None, :] == routed[:, None]  # (B, K)
        return mask | (routed[:, None] < 0) | ~mask.any(dim=1, keepdim=True)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        """(B, Dv) unit -> (B,) task index, -1 for the zero-shot path."""
        if self.centroids.shape[0] == 0:
            return torch.full((v.shape[0],), -1, dtype=torch.long, device=v.device)
        margin = v @ self.centroids.T - self.thresholds  # (B, K)
        best, k = margin.max(dim=1)
        return torch.where(best >= 0, self.owner[k], torch.full_like(k, -1))


class TaskAdapters(nn.Module):
    """One ResidualAdapter per task; rows with task -1 (or a task without adapter) get zero."""

    def __init__(self, dim_in: int, dim_out: int, hidden: int = 0, quantile: float = 0.05) -> None:
        super().__init__()
        self.dims = (dim_in, dim_out, hidden)
        self.adapters = nn.ModuleList()
        self.router = TaskRouter(dim_in, quantile)

    def add_task(self) -> None:
        for a in self.adapters:
            a.requires_grad_(False)
        self.adapters.append(ResidualAdapter(*self.dims))

    def forward(self, v: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        task = torch.where(task < 0, self.router(v), task)
        out = v.new_zeros(v.shape[0], self.dims[1])
        for t, adapter in enumerate(self.adapters):
            rows = task == t
            if rows.any():
                out = out.index_put((rows.nonzero()[:, 0],), adapter(v[rows]))
        return out


class MixtureAdapters(nn.Module):
    """MoE-Adapters (Yu et al., CVPR 2024) on features: experts E_e (bottleneck adapters, output
    zero-initialised) shared by all tasks, one learned gate per task g_t(v) = softmax over the
    top-k of W_t v; delta(v) = sum_e g_t(v)_e E_e(v). After each task the `freeze` experts its
    gate used most are frozen (the paper's activate-freeze); a new gate's bias starts at -1 on
    frozen experts so that each task first trains experts of its own. Task choice: id when known,
    else the TaskRouter (unseen domain -> zero-shot path, their DDAS rule)."""

    def __init__(self, dim_in: int, dim_out: int, experts: int = 4, hidden: int = 64, top_k: int = 2,
                 quantile: float = 0.05) -> None:
        super().__init__()
        self.dim_out, self.top_k = dim_out, top_k
        self.experts = nn.ModuleList(ResidualAdapter(dim_in, dim_out, hidden) for _ in range(experts))
        self.gates = nn.ModuleList()
        self.router = TaskRouter(dim_in, quantile)

    def add_task(self) -> None:
        for g in self.gates:
            g.requires_grad_(False)
        gate = nn.Linear(self.router.centroids.shape[1], len(self.experts))
        nn.init.zeros_(gate.weight)
        with torch.no_grad():  # a new gate starts on the experts still trainable (frozen ones: -1)
            gate.bias.copy_(torch.tensor([0.0 if any(p.requires_grad for p in e.parameters()) else -1.0
                                          for e in self.experts]))
            gate.bias.add_(torch.arange(len(self.experts)) * -1e-3)  # break ties in expert order
        self.gates.append(gate)

    def weights(self, v: torch.Tensor, t: int) -> torch.Tensor:
        scores = self.gates[t](v)  # (B, E)
        top = scores.topk(min(self.top_k, scores.shape[1]), dim=1)
        return torch.zeros_like(scores).scatter(1, top.indices, top.values.softmax(dim=1))

    def usage(self, v: torch.Tensor, t: int) -> torch.Tensor:
        with torch.no_grad():
            return self.weights(v, t).sum(0)

    def forward(self, v: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        task = torch.where(task < 0, self.router(v), task)
        out = v.new_zeros(v.shape[0], self.dim_out)
        for t in range(len(self.gates)):
            rows = (task == t).nonzero()[:, 0]
            if len(rows):
                vt = v[rows]
                w = self.weights(vt, t)  # (b, E)
                mixed = sum(w[:, e:e + 1] * expert(vt) for e, expert in enumerate(self.experts))
                out = out.index_put((rows,), mixed)
        return out


class TipCache(nn.Module):
    """Tip-Adapter's cache grown task by task: logits += alpha * exp(-beta (1 - v K^T)) L.

    K (N, Dv) unit visual features of K shots per class of every trained task, L (N, C_all)
    their one-hot global labels (Zhang et al., ECCV 2022, Eq. 6; training-free)."""

    def __init__(self, num_classes: int, alpha: float, beta: float) -> None:
        super().__init__()
        self.num_classes, self.alpha, self.beta = num_classes, alpha, beta
        self.register_buffer("keys", torch.zeros(0, 0))
        self.register_buffer("labels", torch.zeros(0, dtype=torch.long))

    def add(self, v: torch.Tensor, y: torch.Tensor) -> None:
        self.keys = v.clone() if self.keys.numel() == 0 else torch.cat([self.keys, v])
        self.labels = torch.cat([self.labels, y])

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        if self.keys.numel() == 0:
            return v.new_zeros(v.shape[0], self.num_classes)
        affinity = torch.exp(-self.beta * (1.0 - v @ self.keys.T))  # (B, N)
        return self.alpha * affinity @ F.one_hot(self.labels, self.num_classes).float()

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.labels.numel() * 8


class ClassTextObjective(ContinualObjective):
    """What the class-text learners share: logits = scores over the known classes (subclasses give
    `scores(batch, classes)`), the cross-entropy task loss, validation accuracy on `val_batch`,
    the known-class count and the ZSCL reference batch. Attributes: text (C_all, D), known,
    val_batch, reference."""

    def scores(self, batch: dict, classes: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def logits(self, batch: dict) -> torch.Tensor:
        """(B, known) logits over the classes known so far (the contract's `logits`)."""
        if self.known < 1:
            raise GenbaError("the learner knows no classes yet: call set_known first")
        return self.scores(batch, torch.arange(self.known, device=self.text.device))

    def forward(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch), batch["y"])

    def validate(self) -> float | None:
        if self.val_batch is None:
            return None
        val = to_device(self.val_batch, module_device(self))  # the engine may have moved the model
        return (self.logits(val).argmax(1) == val["y"]).float().mean().item()

    def set_known(self, known: int) -> None:
        if not 0 < known <= self.text.shape[0]:
            raise GenbaError(f"known classes must be in [1, {self.text.shape[0]}], got {known}")
        self.known = known

    def reference_batch(self, rows: torch.Tensor | None = None) -> dict:
        if self.reference is None:
            raise GenbaError("no reference images: ZSCL needs reference inputs (set learner.reference)")
        return self.reference if rows is None else {k: v[rows] for k, v in self.reference.items()}

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


class Learner(ClassTextObjective):
    """The ContinualObjective of genba.continual on cached (visual, joint) features.

    Args:
        text: (C_all, D) unit class text embeddings of every class of the stream, global order.
        centre: (Dv,) centre subtracted from visual features before normalising.
        hidden: 0 for a linear adapter, else a bottleneck of this width.
    """

    provides = frozenset({"logits", "visual", "delta", "cache", "fusion", "task-adapters", "reference"})
    slots = ("delta", "cache", "fusion")

    def __init__(self, text: torch.Tensor, centre: torch.Tensor, hidden: int = 0, scale: float = SCALE) -> None:
        super().__init__()
        if text.dim() != 2 or centre.dim() != 1:
            raise GenbaError("the learner needs (C, D) class texts and a (Dv,) visual centre")
        if not torch.allclose(text.float().norm(dim=1), torch.ones(text.shape[0]), atol=1e-4):
            raise GenbaError("class text embeddings must be unit rows (genba.zeroshot.text_classifier)")
        self.register_buffer("text", text.float())
        self.register_buffer("centre", centre.float())
        self.scale = scale
        self.dim_visual, self.dim = centre.shape[0], text.shape[1]
        self.delta: nn.Module = ResidualAdapter(self.dim_visual, self.dim, hidden)
        self.cache: TipCache | None = None
        self.fusion: nn.Module | None = None  # rewrites the scores: fusion(v, z, scores, classes) (RAIL's fusion)
        self.known = 0  # classes known so far: global indices [0, known)
        self.val_batch: dict | None = None
        self.reference: dict | None = None  # reference batch for ZSCL (outside the stream)
        self.reference_vocab: torch.Tensor | None = None  # (V, D) unit texts of a large vocabulary

    # ------------------------------------------------------------------ features
    def visual(self, batch: dict) -> torch.Tensor:
        return F.normalize(batch["x"].float() - self.centre, dim=-1)

    def embed(self, batch: dict) -> torch.Tensor:
        """(B, D) unit image embeddings e(x)."""
        v = self.visual(batch)
        task = batch.get("task")
        if task is None:
            task = torch.full((v.shape[0],), -1, dtype=torch.long, device=v.device)
        z = batch["z"].float()
        # normalize(z + delta), written so that delta == 0 gives z bit for bit (z is unit already):
        return z + (F.normalize(z + self.delta(v, task), dim=-1) - F.normalize(z, dim=-1))

    def scores(self, batch: dict, classes: torch.Tensor) -> torch.Tensor:
        """(B, len(classes)) logits over the given global classes."""
        out = self.scale * self.embed(batch) @ self.text[classes].T
        if self.cache is not None:
            out = out + self.cache(self.visual(batch))[:, classes]
        router = getattr(self.delta, "router", None)
        task = batch.get("task")
        if router is not None and router.centroids.shape[0] and task is not None and bool((task < 0).any()):
            routed = torch.where(task < 0, router(self.visual(batch)), torch.full_like(task, -1))
            out = out.masked_fill(~router.allowed(routed, classes), float("-inf"))
        if self.fusion is not None:
            out = self.fusion(self.visual(batch), batch["z"].float(), out, classes)
        return out

    def adapter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.delta.parameters()) + \
            sum(b.numel() * b.element_size() for b in self.delta.buffers())
