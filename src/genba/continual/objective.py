"""The ContinualObjective contract (see the genba.continual docstring): the one thing strategies
need from a model. It lives apart from the strategies so that models (the learner, the LoRA
learner, CVM's student) import it without importing every strategy."""

from __future__ import annotations

import torch

from genba.train import Objective


class ContinualObjective(Objective):
    """What strategies need from a model (see the package docstring): an engine Objective whose
    forward(batch) is the task loss and logits(batch) -> (B, C) the logits over the classes known
    so far (global class order). Strategies only duck-type these, so subclassing is optional."""

    def logits(self, batch: dict) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
