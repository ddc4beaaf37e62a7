"""genba's one training engine: an Objective (nn.Module whose forward is the batch loss),
Callbacks at fixed hook points, TrainConfig, and fit(). See engine.py for the loop."""

from genba.train.config import TrainConfig
from genba.train.data import TensorData, TrainData, seeded
from genba.train.engine import Engine, TrainResult, fit, lr_factor
from genba.train.objective import Callback, Objective

__all__ = ["Callback", "Engine", "Objective", "TensorData", "TrainConfig", "TrainData", "TrainResult", "fit",
           "lr_factor", "seeded"]
