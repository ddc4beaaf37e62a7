"""LoRA on an `hf:` CLIP checkpoint's image tower through the `peft` library: a ContinualObjective
that trains on images (pixels), with the text side frozen.

    learner = LoraCLIPLearner(encoder, text, r=4)        # encoder = load_encoder("hf:/path/to/clip")
    fit(learner, TensorData(x=pixels, y=labels), cfg)     # only the LoRA matrices train

e(x) = normalize(P(V_lora(x))), V the CLIP vision transformer (pooled output) with LoRA
(Hu et al., ICLR 2022) on its attention projections: W x + (alpha / r) B A x, B zero-initialised
(peft's default), so the untrained learner equals the frozen CLIP; P the frozen visual
projection; logits = scale * cos(e(x), t_k) with t_k the frozen class texts. One LoRA per task
(base frozen) is peft's multi-adapter API: `add_task_adapter(t)` adds adapter "task-t" and
makes it the only trainable one; `use_task(t)` selects which one reads the images.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F

from genba.errors import GenbaError
from genba.train import Objective

SCALE = 100.0
TARGETS = ("q_proj", "v_proj")


def _peft():
    try:
        import peft
    except ImportError as error:  # pragma: no cover - peft is in genba's extras
        raise GenbaError("LoRA needs the peft package: pip install 'genba[peft]' (or pip install peft)") from error
    return peft


class LoraCLIPLearner(Objective):
    """Args: encoder (an hf: CLIP encoder), text (C, D) unit class texts, r / alpha of LoRA."""

    def __init__(self, encoder, text: torch.Tensor, *, r: int = 4, alpha: float = 8.0,
                 targets: tuple[str, ...] = TARGETS, scale: float = SCALE) -> None:
        super().__init__()
        if getattr(encoder, "model_type", None) != "clip":
            raise GenbaError("LoRA continual learning needs an hf: CLIP checkpoint (load_encoder('hf:<clip dir>'))")
        peft = _peft()
        self.lora_config = dict(r=int(r), lora_alpha=float(alpha), target_modules=list(targets), lora_dropout=0.0)
        base = copy.deepcopy(encoder._model.vision_model).requires_grad_(False)
        with warnings.catch_warnings():  # transformers' deprecation notice inside peft, not ours to fix
            warnings.simplefilter("ignore", FutureWarning)
            self.vision = peft.get_peft_model(base, peft.LoraConfig(**self.lora_config), adapter_name="task-0")
        self.projection = copy.deepcopy(encoder._model.visual_projection).requires_grad_(False)
        self.register_buffer("text", text.float())
        self.scale = scale
        self.known = text.shape[0]
        self.val_batch: dict | None = None
        self.tasks = 1

    # ------------------------------------------------------------------ ContinualObjective
    def embed(self, batch: dict) -> torch.Tensor:
        pooled = self.vision(pixel_values=batch["x"].float()).pooler_output
        return F.normalize(self.projection(pooled).float(), dim=-1)

    def logits(self, batch: dict) -> torch.Tensor:
        return self.scale * self.embed(batch) @ self.text[: self.known].T

    def forward(self, batch: dict) -> torch.Tensor:
        return F.cross_entropy(self.logits(batch), batch["y"])

    def validate(self) -> float | None:
        if self.val_batch is None:
            return None
        return (self.logits(self.val_batch).argmax(1) == self.val_batch["y"]).float().mean().item()

    def set_known(self, known: int) -> None:
        if not 0 < known <= self.text.shape[0]:
            raise GenbaError(f"known classes must be in [1, {self.text.shape[0]}], got {known}")
        self.known = known

    # ------------------------------------------------------------------ one LoRA per task
    def add_task_adapter(self, task: int) -> None:
        name = f"task-{task}"
        if name not in self.vision.peft_config:
            self.vision.add_adapter(name, _peft().LoraConfig(**self.lora_config))
            self.tasks += 1
        self.use_task(task)
        for n, p in self.vision.named_parameters():  # only the current task's LoRA trains
            p.requires_grad_(f".{name}." in n)

    def use_task(self, task: int) -> None:
        self.vision.set_adapter(f"task-{task}")
        for n, p in self.vision.named_parameters():
            if "lora_" in n and f".task-{task}." not in n:
                p.requires_grad_(False)

    def lora_parameters(self) -> int:
        return sum(p.numel() for n, p in self.vision.named_parameters() if "lora_" in n)
