"""The names of the hardware options, torch-free: the CLI builds its parser from them without
importing torch (`genba predict` on an ONNX file runs where torch is not installed); genba.device
resolves them."""

from __future__ import annotations

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISIONS = ("fp32", "bf16", "fp16")
RUNTIMES = ("torch", "onnx", "onnx-int8")


def add_cli_options(parser) -> None:
    """--device, --precision and --runtime on an argparse parser (the CLI's shared options)."""
    parser.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto | cpu | cuda | cuda:N | mps (default auto: a GPU when one is present)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="compute precision of encoders and training (default fp32; bf16/fp16 autocast, "
                             "fp32 master weights)")
    parser.add_argument("--runtime", default="auto", choices=("auto",) + RUNTIMES,
                        help="image encoder runtime on the CPU: torch, onnx (ONNX Runtime fp32) or onnx-int8 "
                             "(default auto: onnx on the CPU in fp32 when onnxruntime is installed)")
