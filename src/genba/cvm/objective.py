"""Training objectives of CVM and of its cross-entropy baseline, for genba.train.fit.

Batches are dicts with "x" (uint8 pixels (B, 3, S, S), or cached float16 activations of the
student's frozen part) and "y" (B,) global class ids. Only the first `known` classes of the label
space (the classes of the tasks seen so far, current one included) take part in the loss, as in
class-incremental learning; `logits(batch)` is (B, known).

The mapping loss (interpretation of CVM, arXiv 2407.08279, which maps the visual model's output
into the frozen language model's concept-embedding space; no public code):
  * "contrastive" (default): InfoNCE of the image embedding against the concept bank rows of the
    known classes, L = -log softmax_c(s * cos(z, t_c))[y] (the class concepts are the negatives,
    as in CLIP's image->text loss with a fixed text side);
  * "cosine": regression onto the target concept, L = 1 - cos(z, t_y) (DeViSE-style, no negatives).
Which one a run uses is chosen on the first task's validation split (genba.cvm.stream.select_loss,
the result and both scores are in the run's JSON); on the built-in stream contrastive wins
(bench/results/cvm.md), because the class names of a dataset are close in MiniLM space
(cosines ~0.3-0.7) and a regression target without negatives does not separate them.
  * "ce": the baseline, cross-entropy of a linear head over the known classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from genba.device import module_device
from genba.continual.objective import ContinualObjective
from genba.errors import GenbaError

LOSSES = ("contrastive", "cosine", "ce")


def as_input(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1] (the same operations as genba.cvm.pixels.normalize); else float32."""
    if x.dtype == torch.uint8:
        return x.float() / 127.5 - 1.0
    return x.float()


class StreamObjective(ContinualObjective):
    """student.encode -> head -> loss over the known classes (see module docstring).

    The ContinualObjective contract: logits(batch) -> (B, known), forward(batch) = task loss.
    """

    def __init__(self, student, head, loss: str = "contrastive"):
        super().__init__()
        if loss not in LOSSES:
            raise GenbaError(f"unknown CVM loss '{loss}': choose one of {', '.join(LOSSES)}")
        if (loss == "ce") != (head.kind == "linear"):
            raise GenbaError(f"loss '{loss}' does not fit a {head.kind} head: use 'ce' with the linear head, "
                             "'contrastive' or 'cosine' with the concept head")
        self.student, self.head, self.loss_kind = student, head, loss
        self.known = head.num_classes
        if hasattr(head, "known"):
            head.known = self.known
        self.val_x: torch.Tensor | None = None
        self.val_y: torch.Tensor | None = None

    def set_known(self, known: int) -> None:
        if not 1 <= known <= self.head.num_classes:
            raise GenbaError(f"known classes must be in 1..{self.head.num_classes}, got {known}")
        self.known = int(known)
        if hasattr(self.head, "known"):
            self.head.known = self.known  # the concept head scores classes [known, C) as classes without images

    def set_validation(self, x: torch.Tensor | None, y: torch.Tensor | None) -> None:
        self.val_x, self.val_y = x, y

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) logits over the whole label space (classes known only by name included)."""
        return self.head(self.student.encode(as_input(x)))

    def logits(self, batch) -> torch.Tensor:
        return self.all_logits(batch["x"])[:, : self.known]

    def forward(self, batch):
        y = batch["y"]
        if self.loss_kind == "cosine":
            z = self.head.embed(self.student.encode(as_input(batch["x"])))
            return (1.0 - (z * self.head.bank[y]).sum(-1)).mean()
        return F.cross_entropy(self.logits(batch), y)

    def validate(self) -> float | None:
        if self.val_x is None or len(self.val_y) == 0:
            return None
        return accuracy(self.predict(self.val_x, self.known), self.val_y)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, upto: int | None = None, lo: int = 0, batch: int = 512) -> torch.Tensor:
        """argmax over the classes [lo, upto) of the label space (global ids)."""
        was = self.training
        self.eval()
        out = []
        for start in range(0, len(x), batch):
            logits = self.all_logits(x[start:start + batch].to(module_device(self)))  # the engine may have moved us
            out.append((logits[:, lo:upto].argmax(-1) + lo).cpu())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 in percent."""
    return 100.0 * (predicted == labels).float().mean().item() if len(labels) else float("nan")
