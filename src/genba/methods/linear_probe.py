"""Linear probe: multinomial logistic regression on the image features, the baseline every
few-shot paper compares against.

    logits = x W^T + b,    minimise  mean_i CE(logits_i, y_i) + l2 * ||W||_F^2
with x the un-augmented view's feature in the memory (cache) space (unit rows; `genba adapt`
centres the visual space on the train mean first), W (C, D) and b (C,) initialised at zero.
This is the protocol of CLIP's linear probes (Radford et al., 2021, appendix A.3: L-BFGS
logistic regression, the regularisation strength swept on a validation split): genba sweeps
`l2` on validation (`LinearProbe.selection_grid`) and minimises the same convex objective
with AdamW, full batch, through the one training engine (`genba.train.fit`; the L2 term is the
`L2Penalty` callback). The text classifier is not used, so the probe also runs on vision-only
encoders (DINOv2).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genba.methods.base import Method
from genba.methods.config import non_negative
from genba.methods.registry import register_method
from genba.methods.training import check_train
from genba.device import CPU
from genba.train import Callback, Objective, TensorData, TrainConfig, fit


def _probe_training() -> TrainConfig:
    return TrainConfig(lr=0.05, epochs=300, batch_size=4096, weight_decay=0.0, seed=0)


@dataclass
class LinearProbeConfig:
    l2: float = 1e-3
    """Strength of the L2 penalty on W (the inverse of scikit-learn's C, up to the batch mean)."""
    train: TrainConfig = field(default_factory=_probe_training)
    """Training settings: full-batch AdamW, lr 0.05, 300 epochs (the objective is convex)."""

    def __post_init__(self) -> None:
        non_negative(self, "l2")
        check_train(self)


class LogisticObjective(Objective):
    """Mean cross-entropy of x W^T + b over a batch of feature rows."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.x, self.y = x, y  # (N, D), (N,)
        self.weight = torch.nn.Parameter(torch.zeros(num_classes, x.shape[1]))
        self.bias = torch.nn.Parameter(torch.zeros(num_classes))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T + self.bias  # (B, C)

    def forward(self, batch) -> torch.Tensor:
        rows = batch["i"]
        return torch.nn.functional.cross_entropy(self.logits(self.x[rows]), self.y[rows])


class L2Penalty(Callback):
    """Adds l2 * ||W||_F^2 to each step's loss."""

    def __init__(self, strength: float) -> None:
        self.strength = strength

    def before_backward(self, engine, batch, loss: torch.Tensor) -> torch.Tensor:
        return loss + self.strength * engine.objective.weight.pow(2).sum()


@register_method("linear-probe")
class LinearProbe(Method):
    """Logistic regression on the support features; predictions are its softmax."""

    config_cls = LinearProbeConfig
    needs_support = True
    text_optional = True  # never reads the text classifier
    selection_grid = {"l2": [0.0, 1e-4, 1e-3, 1e-2, 1e-1]}  # CLIP's probes sweep the regularisation likewise
    shown_hyperparameters = ("l2",)

    def _fit(self, sj, sc, y, val) -> None:
        self.weight, self.bias = torch.zeros(self.num_classes, sc.shape[2]), torch.zeros(self.num_classes)

    def _train(self, sj, sc, y, val) -> None:
        objective = LogisticObjective(sc[:, 0].contiguous(), y, self.num_classes)
        # few-shot support rows: trained on the CPU whatever --device says (the method's tensors live there)
        fit(objective, TensorData(i=torch.arange(len(y))), self.config.train, callbacks=[L2Penalty(self.config.l2)], hardware=CPU,
            progress=False, desc="linear-probe")
        self.weight, self.bias = objective.weight.detach().clone(), objective.bias.detach().clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The learned W (C, D) and b (C,)."""
        return {"weight": self.weight.clone(), "bias": self.bias.clone()} if hasattr(self, "weight") else {}

    def _load_state(self, state) -> None:
        self.weight, self.bias = state["weight"].float().clone(), state["bias"].float().clone()

    def _predict(self, qj: torch.Tensor, qc: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        return (qc[:, 0] @ self.weight.T + self.bias).softmax(-1)  # (N, C)
