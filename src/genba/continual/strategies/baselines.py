"""Baselines: zero-shot (never trained), sequential fine-tune, joint training (upper reference).

* zeroshot: the frozen VLM; every row of the accuracy matrix is the zero-shot row.
* finetune: train the learner on each task in turn with the task loss only (the lower
  reference of ZSCL, Zheng et al. ICCV 2023, Table 1 "Continual-FT").
* joint: at step j, train from the initial model on the union of tasks 0..j (the
  multi-task upper reference; rows j < T are what joint training on the tasks so far gives).
"""

from __future__ import annotations

import copy

from genba.continual.strategies.base import Strategy, all_rows, concat_data, register_strategy, tensor_bytes
from genba.train import TrainData


@register_strategy("zeroshot")
class ZeroShot(Strategy):
    trains = False


@register_strategy("finetune")
class FineTune(Strategy):
    pass


@register_strategy("joint")
class Joint(Strategy):
    def __init__(self, config=None, **kw) -> None:
        super().__init__(config, **kw)
        self.seen: list[dict] = []
        self.initial: dict | None = None

    def begin_task(self, objective, task_index: int) -> None:
        if self.initial is None:
            self.initial = copy.deepcopy(objective.state_dict())
        else:  # restart from the initial model at every step
            state = dict(self.initial)
            state.update({k: v for k, v in objective.state_dict().items() if k not in self.initial})
            objective.load_state_dict(state)

    def task_data(self, data: TrainData, task_index: int) -> TrainData:
        return concat_data(*self.seen, all_rows(data))

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        self.seen.append(all_rows(data))

    def extra_bytes(self) -> int:
        return tensor_bytes(*self.seen)
