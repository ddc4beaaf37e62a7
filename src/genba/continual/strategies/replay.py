"""Experience replay with a bounded multimodal buffer (genba.continual.buffer).

Task t trains on its own rows plus every buffer row (the buffer holds rows of tasks < t):
the "ER" of Chaudhry et al. 2019 with the buffer concatenated to the task data (rather than
one replay batch per step), and iCaRL's herding as the class-balanced alternative. After a
task its rows enter the buffer, which is then written to `path` (if set) atomically, together
with a snapshot `<path>.after-<t>` per task; a restarted run reads back the latest buffer, and
rewinds to the snapshot of the task it resumes, so a resumed stream sees the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from genba.continual.buffer import POLICIES, ReplayBuffer
from genba.continual.strategies.base import Strategy, all_rows, concat_data, positive, register_strategy
from genba.train import TrainData


@dataclass
class ReplayConfig:
    buffer_size: int = 500
    """Rows kept over the whole stream (fixed in advance)."""
    policy: str = "reservoir"
    """'reservoir' or 'herding' (class-balanced, iCaRL)."""
    path: str = ""
    """Where the buffer is persisted after each task ('' = in memory only)."""

    def __post_init__(self) -> None:
        positive(self, "buffer_size")
        if int(self.buffer_size) != self.buffer_size:
            raise ValueError(f"buffer_size must be an integer, got {self.buffer_size!r}")
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")


@register_strategy("replay")
class Replay(Strategy):
    config_cls = ReplayConfig

    def __init__(self, config=None, *, seed: int = 0) -> None:
        super().__init__(config, seed=seed)
        cfg = self.config
        self.buffer = ReplayBuffer(int(cfg.buffer_size), cfg.policy, self.seed)  # the run's seed draws the reservoir
        self.saved_after = -1  # the last task whose rows the persisted buffer holds
        if cfg.path and Path(cfg.path).exists():
            self.buffer = ReplayBuffer.load(cfg.path)

    def snapshot_path(self, tasks_done: int) -> Path:
        """The buffer as it was after `tasks_done` tasks (kept so that any task can be resumed)."""
        path = Path(self.config.path)
        return path.with_name(f"{path.stem}.after-{tasks_done}{path.suffix}")

    def _rewind(self, task_index: int) -> None:
        """On a restart, the buffer as it was when task `task_index` began."""
        if self.buffer.tasks_done == task_index or not self.config.path:
            return
        cfg = self.config
        if task_index == 0:
            self.buffer = ReplayBuffer(int(cfg.buffer_size), cfg.policy, self.seed)
        else:
            self.buffer = ReplayBuffer.load(self.snapshot_path(task_index))

    def task_data(self, data: TrainData, task_index: int) -> TrainData:
        self._rewind(task_index)
        if len(self.buffer) == 0:
            return data
        rows = all_rows(data)
        old = self.buffer.batch(rows.keys())
        return concat_data(rows, old)

    def end_task(self, objective, data: TrainData, task_index: int) -> None:
        self._rewind(task_index)
        rows = all_rows(data)
        text = getattr(objective, "text", None)  # (C, D) class texts, when the objective has them
        if isinstance(text, torch.Tensor) and text.dim() == 2 and int(rows["y"].max()) < text.shape[0]:
            rows = dict(rows, text=text[rows["y"]])
        self.buffer.add(rows)
        self.buffer.tasks_done = task_index + 1
        if self.config.path:
            self.buffer.save(self.snapshot_path(task_index + 1))
            self.buffer.save(self.config.path)

    def extra_bytes(self) -> int:
        return self.buffer.nbytes
