"""LoRA on an `hf:` CLIP checkpoint's image tower through the `peft` library: a ContinualObjective
that trains on images (pixels), with the text side frozen.

    learner = LoraCLIPLearner(encoder, text, r=4)        # encoder = load_encoder("hf:/path/to/clip")
    fit(learner, TensorData(x=pixels, y=labels), cfg)     # only the LoRA matrices train

e(x) = normalize(P(V_lora(x))), V the CLIP vision transformer (pooled output) with LoRA
(Hu et al., ICLR 2022) on its attention projections: W x + (alpha / r) B A x, B zero-initialised
(peft's default), so the untrained learner equals the frozen CLIP; P the frozen visual
projection; logits = scale * cos(e(x), t_k) with t_k the frozen class texts. One LoRA per task
(base frozen) is peft's multi-adapter API: `add_task_adapter(t)` (called by the task-adapters
strategy) adds adapter "task-t" and makes it the only trainable one; images then go through
their task's LoRA, or, without a task id, through the one a TaskRouter on the frozen CLIP's
pooled features picks (unseen domains: the frozen CLIP, as in the feature learner).
Batches: "x" preprocessed pixels (B, 3, H, W) from the encoder's own preprocess.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F

from genba.errors import GenbaError
from genba.continual.learner import ClassTextObjective, TaskRouter

SCALE = 100.0
TARGETS = ("q_proj", "v_proj")


def _peft():
    try:
        import peft
    except ImportError as error:  # pragma: no cover - peft is in genba's extras
        raise GenbaError("LoRA needs the peft package: pip install 'genba[peft]' (or pip install peft)") from error
    return peft


class LoraCLIPLearner(ClassTextObjective):
    """Args: encoder (an hf: CLIP encoder), text (C, D) unit class texts, r / alpha of LoRA."""

    provides = frozenset({"logits", "task-adapters", "reference"})  # LoRA per task, no delta / cache slot

    def __init__(self, encoder, text: torch.Tensor, *, r: int = 4, alpha: float = 8.0,
                 targets: tuple[str, ...] = TARGETS, scale: float = SCALE) -> None:
        super().__init__()
        if getattr(encoder, "model_type", None) != "clip":
            raise GenbaError("LoRA continual learning needs an hf: CLIP checkpoint (load_encoder('hf:<clip dir>'))")
        peft = _peft()
        self.lora_config = dict(r=int(r), lora_alpha=float(alpha), target_modules=list(targets), lora_dropout=0.0)
        base = copy.deepcopy(encoder.model.vision_model).requires_grad_(False)
        with warnings.catch_warnings():  # transformers' deprecation notice inside peft, not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            self.vision = peft.get_peft_model(base, peft.LoraConfig(**self.lora_config), adapter_name="task-0")
        self.projection = copy.deepcopy(encoder.model.visual_projection).requires_grad_(False)
        self.register_buffer("text", text.float())
        self.scale = scale
        self.known = text.shape[0]
        self.val_batch: dict | None = None
        self.per_task, self.current = False, 0
        self.cache = None  # (no Tip cache on this learner)
        self.reference: dict | None = None
        self.reference_vocab: torch.Tensor | None = None
        hidden = encoder.model.vision_model.config.hidden_size
        self.router = TaskRouter(hidden)

    # ------------------------------------------------------------------ ContinualObjective
    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(self.vision(pixel_values=x).pooler_output).float(), dim=-1)

    def base_features(self, batch: dict) -> torch.Tensor:
        """(B, H) unit pooled features of the frozen CLIP (no LoRA): what the task router reads."""
        with torch.no_grad(), self.vision.disable_adapter():
            return F.normalize(self.vision(pixel_values=batch["x"].float()).pooler_output.float(), dim=-1)

    def embed(self, batch: dict) -> torch.Tensor:
        """(B, D) unit embeddings: the shared LoRA, or (per-task mode) the row's task LoRA, the
        router's choice when the task is unknown (-1), and the frozen CLIP for unseen domains."""
        x = batch["x"].float()
        if not self.per_task:
            return self._encode(x)
        task = batch.get("task")
        task = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device) if task is None else task.clone()
        unknown = task < 0
        if unknown.any():
            task[unknown] = self.router(self.base_features({"x": x[unknown]}))
        out = torch.zeros(x.shape[0], self.text.shape[1], device=x.device)
        for t in torch.unique(task).tolist():
            rows = (task == t).nonzero()[:, 0]
            if t < 0 or f"task-{t}" not in self.vision.peft_config:
                with self.vision.disable_adapter():
                    e = self._encode(x[rows])
            else:
                self._activate(t)
                e = self._encode(x[rows])
            out = out.index_put((rows,), e)
        return out

    def scores(self, batch: dict, classes: torch.Tensor) -> torch.Tensor:
        out = self.scale * self.embed(batch) @ self.text[classes].T
        task = batch.get("task")
        if self.per_task and self.router.centroids.shape[0] and task is not None and bool((task < 0).any()):
            routed = torch.where(task < 0, self.router(self.base_features(batch)), torch.full_like(task, -1))
            out = out.masked_fill(~self.router.allowed(routed, classes), float("-inf"))
        return out

    def adapter_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for n, p in self.named_parameters() if "lora_" in n)

    # ------------------------------------------------------------------ one LoRA per task
    def add_task_adapter(self, task: int) -> None:
        """Per-task mode: adapter "task-<task>" (new, zero-initialised B) is the only trainable one."""
        self.per_task = True
        name = f"task-{task}"
        if name not in self.vision.peft_config:
            self.vision.add_adapter(name, _peft().LoraConfig(**self.lora_config))
        self.current = task
        self._activate(task)

    def _activate(self, task: int) -> None:
        self.vision.set_adapter(f"task-{task}")
        for n, p in self.vision.named_parameters():  # only the current task's LoRA trains
            p.requires_grad_("lora_" in n and f".task-{self.current}." in n)

    def use_task(self, task: int) -> None:
        self._activate(task)

    def lora_parameters(self) -> int:
        return sum(p.numel() for n, p in self.vision.named_parameters() if "lora_" in n)
