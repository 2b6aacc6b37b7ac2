"""--accelerator, --devices and --precision: their choices, and whether this machine can run them.

torch is imported only when the answer needs it (a GPU named or possible, a precision other than 32-bit), so the
command line checks the common case (auto or cpu, 32-true) without it.
"""
from __future__ import annotations

from utils import UserError

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")  # Lightning's names; auto: a GPU when there is one
PRECISIONS = ("32-true", "16-mixed", "bf16-mixed")


def uses_gpu(accelerator: str) -> bool:
    """Whether --accelerator runs on CUDA GPUs (auto: when there is one)."""
    if accelerator in ("gpu", "cuda"):
        return True
    if accelerator != "auto":
        return False
    import torch
    return torch.cuda.is_available()


def check_precision(precision: str, accelerator: str) -> None:
    """Refuse precisions the hardware cannot run well. bf16 autocast on a CPU is refused outright: CPU
    flags are no guide (a CPU reporting avx512_bf16 ran ResNet-18 ~50x slower in bf16 than in fp32)."""
    if precision == "32-true":
        return
    on_gpu = uses_gpu(accelerator)
    if precision.startswith("bf16"):
        import torch
        if not (on_gpu and torch.cuda.is_bf16_supported()):
            raise UserError(f"--precision {precision}: this {'GPU' if on_gpu else 'CPU'} has no fast bfloat16",
                            "use 32-true" + (" or 16-mixed" if on_gpu else ""))
    if precision.startswith("16") and not on_gpu:
        raise UserError(f"--precision {precision} needs a GPU", "use 32-true on the CPU")


def check_hardware(accelerator: str, devices: str, precision: str) -> None:
    """A UserError for an accelerator this machine does not have, more GPUs than it has, or a precision it cannot
    run (check_precision)."""
    if accelerator in ("gpu", "cuda", "mps") or (accelerator == "auto" and devices != "auto"):
        import torch
        if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
            raise UserError(f"--accelerator {accelerator}: this machine has no CUDA GPU that torch can use "
                            f"(torch {torch.__version__})", "use --accelerator cpu, or auto")
        if accelerator == "mps" and not torch.backends.mps.is_available():
            raise UserError("--accelerator mps: this machine has no Apple GPU (MPS)", "use --accelerator cpu, or auto")
        if accelerator in ("gpu", "cuda", "auto") and devices.isdigit() and torch.cuda.is_available():
            if int(devices) > torch.cuda.device_count():
                raise UserError(f"--devices {devices}: this machine has {torch.cuda.device_count()} CUDA GPU(s)",
                                f"use --devices {torch.cuda.device_count()} or less")
    check_precision(precision, accelerator)
