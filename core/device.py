"""Which device and precision the model runs in.

``auto`` prefers CUDA, then Apple MPS, then the CPU. Half precision is used on GPUs (fp16, as the
official inference does; the deformable convolution samples in fp32 regardless), fp32 on the CPU,
where half precision is slower and less accurate.
"""

from __future__ import annotations

import torch
from maskd.core.errors import MaskdError

_DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def pick_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` → cuda > mps > cpu; an explicit device that is not there is an error, not a fallback."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise MaskdError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MaskdError(
            f"device {name!r} asked for, but this torch build sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device auto or cpu, "
            "or install a CUDA build of torch"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise MaskdError(
            f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist"
        )
    if device.type == "mps" and not mps_available():
        raise MaskdError(
            "device 'mps' asked for, but Apple MPS is not available here; use --device auto or cpu"
        )
    return device


def pick_dtype(device: torch.device, dtype=None) -> torch.dtype:
    """None/"auto": fp16 on CUDA and MPS, fp32 on CPU. Names (fp32/fp16/bf16) or torch dtypes."""
    if isinstance(dtype, torch.dtype):
        chosen = dtype
    elif dtype is None or str(dtype).lower() == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    else:
        key = str(dtype).lower().replace("torch.", "")
        if key not in _DTYPES:
            raise MaskdError(f"unknown precision {dtype!r}: use auto, fp32, fp16 or bf16")
        chosen = _DTYPES[key]
    if chosen not in (torch.float32, torch.float16, torch.bfloat16):
        raise MaskdError(f"unsupported precision {chosen}: use fp32, fp16 or bf16")
    if device.type == "cuda" and chosen == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise MaskdError("bf16 asked for, but this GPU does not support bfloat16; use fp16 or fp32")
    return chosen


def dtype_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, str(dtype))


def release_memory(device=None) -> None:
    """Give cached accelerator memory back (after running out of it, or unloading the model).

    torch keeps freed blocks cached for reuse; after an out-of-memory error they would make the next
    attempt fail too. ``device`` None: every accelerator torch sees (CUDA and MPS); otherwise only
    that device's kind (``cuda:1`` clears CUDA, ``cpu`` nothing but Python's garbage).
    """
    import gc

    gc.collect()  # tensors held only by reference cycles (a traceback's frames) are freed first
    kind = torch.device(device).type if device is not None else None
    try:
        if kind in (None, "cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if kind in (None, "mps") and mps_available() and hasattr(torch, "mps"):
            torch.mps.empty_cache()
    except RuntimeError:  # a device in a bad state: nothing more to give back
        pass
