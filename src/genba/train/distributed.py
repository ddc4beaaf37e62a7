"""torch.distributed set-up from torchrun's environment (no home-made process pool).

    torchrun --nproc-per-node 2 -m genba ...   # gloo on CPU, nccl when a GPU exists

`init_from_env()` joins the process group when torchrun's WORLD_SIZE > 1 says so; the engine
calls it, wraps the objective in DistributedDataParallel and gives each process its slice of
every global batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment; True when running distributed.
    `backend` is genba.device.Hardware.distributed_backend (nccl for CUDA ranks, gloo otherwise);
    None picks nccl when CUDA is present."""
    if not dist.is_available():
        return False
    if dist.is_initialized():
        return dist.get_world_size() > 1
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
    dist.init_process_group(backend=backend)
    return True


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def in_group() -> bool:
    """True inside an initialised process group (of any size, one process included)."""
    return dist.is_available() and dist.is_initialized()


def is_main() -> bool:
    """True on the process that writes files and shows progress."""
    return rank_and_world()[0] == 0


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()


def all_sum(value: float) -> float:
    """Sum a float over processes (for reporting)."""
    if rank_and_world()[1] == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    t = torch.tensor([value], dtype=torch.float64, device=device)  # nccl reduces GPU tensors only
    dist.all_reduce(t)
    return float(t.item())


def shard(batch_indices: torch.Tensor) -> torch.Tensor:
    """This process's contiguous slice of a global batch (torch.tensor_split over ranks)."""
    rank, world = rank_and_world()
    return batch_indices if world == 1 else torch.tensor_split(batch_indices, world)[rank]
