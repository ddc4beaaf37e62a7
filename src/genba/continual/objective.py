"""The ContinualObjective contract (see the genba.continual docstring): the one thing strategies
need from a model. It lives apart from the strategies so that models (the learner, the LoRA
learner, CVM's student) import it without importing every strategy."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from genba.errors import GenbaError
from genba.train import Objective

CAPABILITIES = {
    "logits": "forward(batch) is the task loss, logits(batch) the (B, known) logits (every ContinualObjective)",
    "visual": "visual(batch) -> (B, Dv) unit visual features (task routers, caches)",
    "delta": "a `delta` slot: the module from visual features into the joint space (adapter strategies install theirs)",
    "cache": "a `cache` slot: a training-free logit cache added to the scores (the memory strategy installs one)",
    "fusion": "a `fusion` slot: a training-free module that rewrites the scores, fusion(v, z, scores, classes) (RAIL)",
    "task-adapters": "one adapter per task: a `delta` slot, or the learner's own add_task_adapter + router",
    "reference": "embed, scale, reference_batch() and reference_vocab: images and texts outside the stream (ZSCL)",
}
"""What a learner can offer a strategy (Strategy.requires is a subset of ContinualObjective.provides)."""


class ContinualObjective(Objective):
    """What strategies need from a model (see the package docstring): an engine Objective whose
    forward(batch) is the task loss and logits(batch) -> (B, C) the logits over the classes known
    so far (global class order).

    `provides` names the capabilities (CAPABILITIES) the model offers beyond `logits`; `slots`
    the attributes a strategy may fill with a module of its own: the strategy returns
    {slot: module} from begin_task and the task loop calls `install`, so no strategy assigns
    into a learner."""

    provides: ClassVar[frozenset[str]] = frozenset({"logits"})
    slots: ClassVar[tuple[str, ...]] = ()

    def logits(self, batch: dict) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def install(self, modules: dict[str, nn.Module] | None) -> None:
        """Put each strategy module into its slot (GenbaError for a slot this learner lacks)."""
        for slot, module in (modules or {}).items():
            if slot not in self.slots:
                raise GenbaError(f"{type(self).__name__} has no '{slot}' slot (slots: {', '.join(self.slots) or 'none'})")
            setattr(self, slot, module)
