"""Where tensors live and in what precision they are computed: the one place genba resolves
`--device auto|cpu|cuda|cuda:N|mps` and `--precision fp32|bf16|fp16`.

    hw = resolve("auto", "bf16")          # Hardware(device=cuda:0, precision='bf16') on a GPU box
    with use(hw):                         # the CLI does this once per command
        ...                               # the engine, encoders and extraction read current()
    with hw.autocast():                   # mixed precision where precision != fp32
        out = model(hw.to(batch))

`auto` takes CUDA when present, then Apple's MPS, else the CPU. `--runtime torch|onnx|onnx-int8`
says how an encoder that has an exported graph (conse's image tower) runs on the CPU: PyTorch
eager, ONNX Runtime fp32, or a static int8 graph; `auto` is onnx on the CPU in fp32 when
onnxruntime is installed (its features match torch's, genba.encoders.onnx_tower), torch otherwise. Parameters stay float32 (fp32
master weights); `autocast` runs matmuls and convolutions in bf16/fp16; fp16 training scales the
loss (`grad_scaler`, torch.amp.GradScaler) so small gradients do not underflow. Results that a
user sees are returned on the CPU. Under torchrun each rank takes the GPU of its LOCAL_RANK
(`for_rank`) and joins the process group with nccl; without CUDA the group uses gloo.
Library code takes a Hardware argument and falls back to `current()`, which is the CPU in fp32
unless a caller (the CLI) set another one with `use`.
"""

from __future__ import annotations

import contextlib
import os
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from genba.errors import GenbaError
from genba.settings import DEVICES, PRECISIONS, RUNTIMES  # the option names live where the CLI reads them without torch

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Hardware:
    """A resolved device and compute precision (build it with `resolve`)."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    runtime: str = "torch"  # how encoders with an exported graph run on the CPU (RUNTIMES)

    @property
    def dtype(self) -> torch.dtype:
        """The autocast compute dtype (float32 when precision is fp32)."""
        return _DTYPES[self.precision]

    @property
    def is_cpu(self) -> bool:
        return self.device.type == "cpu"

    def autocast(self) -> contextlib.AbstractContextManager:
        """torch.autocast for this device and precision; a no-op context in fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler | None":
        """The loss scaler of fp16 training (None in fp32 and bf16, which need none)."""
        if self.precision != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def to(self, obj: Any) -> Any:
        """`obj` (a tensor, or dicts / lists / tuples of them) on this device."""
        return to_device(obj, self.device)

    def for_rank(self) -> "Hardware":
        """Under torchrun with CUDA: this rank's own GPU, cuda:LOCAL_RANK; otherwise self."""
        if self.device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return self
        return Hardware(torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))), self.precision, self.runtime)

    @property
    def distributed_backend(self) -> str:
        """nccl for CUDA ranks, gloo otherwise."""
        return "nccl" if self.device.type == "cuda" else "gloo"

    def describe(self) -> str:
        """One line: the device (with the GPU's name) and precision."""
        name = ""
        if self.device.type == "cuda":
            name = f" ({torch.cuda.get_device_name(self.device)})"
        return f"{self.device}{name}, {self.precision}, runtime {self.runtime}"


CPU = Hardware()


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _onnxruntime_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def resolve(device: str = "auto", precision: str = "fp32", runtime: str = "torch") -> Hardware:
    """Check and resolve a device, precision and runtime name; a bad or absent device is one GenbaError."""
    name = (device or "auto").strip().lower()
    if precision not in PRECISIONS:
        raise GenbaError(f"unknown precision '{precision}': choose one of {', '.join(PRECISIONS)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise GenbaError(f"unknown device '{device}': choose one of {', '.join(DEVICES)}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GenbaError(f"--device {device}: no CUDA GPU is visible to torch {torch.__version__} here; "
                             "use --device cpu (or auto)")
        count = torch.cuda.device_count()
        index = 0 if dev.index is None else dev.index
        if not 0 <= index < count:
            raise GenbaError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        dev = torch.device("cuda", index)
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise GenbaError(f"--precision bf16: {torch.cuda.get_device_name(index)} has no bfloat16; use fp16")
    elif dev.type == "mps":
        if not _mps_available():
            raise GenbaError(f"--device {device}: Apple's MPS backend is not available here; use --device cpu (or auto)")
    elif dev.type != "cpu":
        raise GenbaError(f"unknown device '{device}': choose one of {', '.join(DEVICES)}")
    if dev.type == "cpu" and precision == "fp16":
        raise GenbaError("--precision fp16 is for GPUs; on the CPU use bf16 (or fp32)")
    if runtime == "auto":
        runtime = "onnx" if dev.type == "cpu" and precision == "fp32" and _onnxruntime_available() else "torch"
    if runtime not in RUNTIMES:
        raise GenbaError(f"unknown runtime '{runtime}': choose one of auto, {', '.join(RUNTIMES)}")
    if runtime != "torch":
        if dev.type != "cpu" or precision != "fp32":
            raise GenbaError(f"--runtime {runtime} runs fp32 graphs on the CPU: use it with --device cpu --precision "
                             "fp32, or --runtime torch")
        if not _onnxruntime_available():
            raise GenbaError(f"--runtime {runtime} needs onnxruntime: pip install 'genba[export]'")
    return Hardware(dev, precision, runtime)


_CURRENT: ContextVar[Hardware] = ContextVar("genba_hardware", default=CPU)


def current() -> Hardware:
    """The Hardware set by the innermost `use` (the CPU in fp32 when none)."""
    return _CURRENT.get()


@contextlib.contextmanager
def use(hardware: Hardware) -> Iterator[Hardware]:
    """Make `hardware` the default of everything called inside the block."""
    token = _CURRENT.set(hardware)
    try:
        yield hardware
    finally:
        _CURRENT.reset(token)


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Tensors inside dicts, lists and tuples moved to `device` (other values unchanged)."""
    if isinstance(obj, torch.Tensor):
        device = torch.device(device)
        if obj.device == device:
            return obj
        return obj.to(device, non_blocking=device.type == "cuda")  # to the CPU: synchronous
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for an empty module)."""
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")
