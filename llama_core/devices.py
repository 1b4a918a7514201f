"""Devices: pick CUDA, MPS or CPU (`auto`, or forced), the dtype that is fast there, and peak figures.

Peaks are data (dense, no sparsity) from the vendors' datasheets; CPUs have no datasheet figure
that means anything for PyTorch, so their peak is measured with a large matmul.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from functools import cache

import torch

DEVICES = ("auto", "cuda", "mps", "cpu")


@dataclass(frozen=True)
class Peak:
    name: str
    bf16_flops: float  # dense FLOP/s in bf16/fp16 tensor cores
    bytes_per_s: float  # memory bandwidth
    watts: float  # board power (TDP), for energy estimates


# name fragments as torch.cuda.get_device_name() reports them, most specific first
GPU_PEAKS: tuple[Peak, ...] = (
    Peak("B200", 2250e12, 8.0e12, 1000),
    Peak("GH200", 989e12, 4.0e12, 1000),  # before H200, which its name contains; module power (CPU + GPU)
    Peak("H200", 989e12, 4.8e12, 700),
    Peak("H100 PCIe", 756e12, 2.0e12, 350),
    Peak("H100 NVL", 835e12, 3.9e12, 400),
    Peak("H100", 989e12, 3.35e12, 700),
    Peak("A100-SXM4-80GB", 312e12, 2.04e12, 400),
    Peak("A100 80GB PCIe", 312e12, 1.94e12, 300),
    Peak("A100", 312e12, 1.56e12, 400),
    Peak("L40S", 362e12, 0.864e12, 350),
    Peak("L40", 181e12, 0.864e12, 300),  # after L40S, before L4
    Peak("L4", 121e12, 0.3e12, 72),
    Peak("A10G", 70e12, 0.6e12, 300),
    Peak("A10", 125e12, 0.6e12, 150),  # after A100 and A10G, whose names contain it
    Peak("RTX A6000", 155e12, 0.768e12, 300),
    Peak("V100", 125e12, 0.9e12, 300),
    Peak("RTX 4090", 165e12, 1.01e12, 450),
    Peak("RTX 3090", 71e12, 0.936e12, 350),
    Peak("T4", 65e12, 0.32e12, 70),
)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then MPS, then CPU; a forced device that is absent is a clear error."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose one of {DEVICES}")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but no CUDA GPU is visible; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for but Apple's MPS is not available; use --device cpu")
    return torch.device(name)


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 where it is fast (CUDA with bf16 support), fp32 elsewhere (CPU, MPS)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name == "auto":
        return default_dtype(device)
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; choose auto, float32, bfloat16 or float16")
    return table[name]


def gpu_peak(device_name: str) -> Peak | None:
    for peak in GPU_PEAKS:
        if peak.name.lower() in device_name.lower():
            return peak
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def machine_record(device: torch.device, dtype: torch.dtype) -> dict:
    """What a measurement ran on: device, dtype, threads and software versions (no peaks measured)."""
    return {"device": device.type, "device_name": device_name(device), "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine()}


@cache
def measured_matmul_flops(device_type: str = "cpu", dtype: torch.dtype = torch.float32,
                          n: int = 1024, seconds: float = 0.5) -> float:
    """The FLOP/s a large square matmul reaches here: the practical peak for MFU on a CPU.

    The fastest of many single products, not their average: on a shared machine the average
    measures the neighbours' load, and MFU against it would exceed 100%.
    """
    device = torch.device(device_type)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from) for MFU on this device and dtype."""
    if device.type == "cuda":
        peak = gpu_peak(device_name(device))
        if peak is not None:
            scale = 1.0 if dtype in (torch.bfloat16, torch.float16) else 0.5  # TF32 is half the rate
            return peak.bf16_flops * scale, f"datasheet {peak.name}"
    return measured_matmul_flops(device.type, dtype), "measured matmul"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU): timings must include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
