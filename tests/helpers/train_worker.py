"""A tiny deterministic training run, used by tests/test_train.py in subprocesses.

    python train_worker.py OUT_DIR [--resume] [--kill-at STEP]      # plain or under torchrun
Writes OUT_DIR/final.safetensors (rank 0) with the trained weights.
"""

import os
import signal
import sys

import torch
from safetensors.torch import save_file

from genba.train import Callback, Objective, TensorData, TrainConfig, fit


class Linear(Objective):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(8, 4)

    def forward(self, batch):
        return torch.nn.functional.cross_entropy(self.lin(batch["x"]), batch["y"])


class KillAt(Callback):
    """SIGKILL this process right after step `step` (a real crash, no clean-up)."""

    def __init__(self, step):
        self.step = step

    def after_step(self, engine):
        if engine.step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    return TensorData(x=x, y=(x[:, :4].argmax(1) + (x[:, 4] > 1).long()) % 4)


def main(argv):
    out, resume = argv[0], "--resume" in argv
    kill = int(argv[argv.index("--kill-at") + 1]) if "--kill-at" in argv else None
    torch.set_num_threads(1)
    cfg = TrainConfig(lr=0.05, epochs=4, batch_size=16, weight_decay=0.01, warmup=0.1, clip_norm=1.0,
                      checkpoint_every=2, seed=3)
    objective = Linear()
    fit(objective, data(), cfg, callbacks=[KillAt(kill)] if kill else [], checkpoint_dir=os.path.join(out, "ckpt"),
        resume=resume, progress=False)
    if int(os.environ.get("RANK", "0")) == 0:
        save_file({k: v.contiguous() for k, v in objective.state_dict().items()}, os.path.join(out, "final.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1:])
