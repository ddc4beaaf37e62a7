"""One fit through genba's engine inside a torch.distributed process group (bench/gpu.py runs this
under `python -m torch.distributed.run --nproc-per-node 1`): nccl on CUDA, gloo on the CPU.

With one process torchrun's WORLD_SIZE is 1 and the engine would not join a group by itself, so
this script joins it explicitly (genba.device.Hardware.distributed_backend, this rank's own GPU);
the engine then wraps the objective in DistributedDataParallel. The same objective is first fitted
without any process group; the two final weight sets are compared (one rank: they must agree up to
float rounding). Rank 0 writes the result as JSON to --out.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
import torch.distributed as dist

from genba.device import resolve
from genba.train import Callback, Objective, TensorData, TrainConfig, fit


class MLP(Objective):
    """Two-layer classifier on synthetic features: loss = cross-entropy (mean over the batch)."""

    def __init__(self, dim: int, hidden: int, classes: int, generator: torch.Generator):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, classes))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=generator) * 0.05)

    def forward(self, batch):
        return torch.nn.functional.cross_entropy(self.net(batch["x"]), batch["y"])


class Spy(Callback):
    def __init__(self):
        self.wrapped = None

    def on_fit_start(self, engine):
        self.wrapped = type(engine.model).__name__


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    hardware = resolve(args.device, "fp32").for_rank()
    n, dim, hidden, classes = (256, 16, 32, 4) if args.dry_run else (16384, 512, 1024, 100)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, dim, generator=g), torch.randint(0, classes, (n,), generator=g)
    config = TrainConfig(lr=1e-3, epochs=2, batch_size=64 if args.dry_run else 512, seed=0)
    plain = MLP(dim, hidden, classes, g)
    ddp = copy.deepcopy(plain)
    fit(plain, TensorData(x=x, y=y), config, progress=False, hardware=hardware)
    dist.init_process_group(backend=hardware.distributed_backend)
    spy = Spy()
    start = time.perf_counter()
    result = fit(ddp, TensorData(x=x, y=y), config, callbacks=[spy], progress=False, hardware=hardware)
    seconds = time.perf_counter() - start
    diff = max(float((a - b).abs().max()) for a, b in zip(plain.parameters(), ddp.parameters()))
    if dist.get_rank() == 0:
        with open(args.out, "w") as handle:
            json.dump({"backend": dist.get_backend(), "world": dist.get_world_size(), "device": str(hardware.device),
                       "ddp": spy.wrapped, "steps": result.steps, "fit_seconds": round(seconds, 3),
                       "rows_per_s": round(result.samples_per_second, 1), "max_abs_diff": diff,
                       "weights_back_on": str(next(ddp.parameters()).device)}, handle)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
