"""Memory bandwidth as batch-1 decoding reads it: the denominator of MBU.

A decode step streams every weight matrix once through a one-row product, so the bandwidth that
bounds it is what that kernel reaches over weights that are not in the cache, not what a copy
reaches (a copy also writes, and measured 40% lower here: MBU against it exceeded 1). The
measurement times one-row float32 `x @ W` over many distinct matrices stored as the packed decode
path holds them ((in, out), llama_core.packing), together several times the last-level cache, at
the caller's thread count, and keeps the fastest of a few rounds (on a shared machine the slower
rounds measure the neighbours) that fit in about a second. Known GPUs use their datasheet figure
(llama_core.devices).
"""

from __future__ import annotations

import time
from functools import cache
from pathlib import Path

import torch

from llama_core.devices import device_name, gpu_peak, synchronize

GEMV_SHAPE = (768, 2048)  # (in, out): a lab-110m feed-forward matrix, 6 MiB in float32
CACHE_MULTIPLE = 4  # the matrices together span this many last-level caches
MIN_BYTES, MAX_BYTES = 256 * 2**20, 2 * 2**30  # whatever the cache reports, keep the set in this range
FALLBACK_CACHE_BYTES = 64 * 2**20  # when the cache size cannot be read
TIME_BUDGET_S = 1.0  # no new round after this long (a loaded machine's slow rounds add nothing)


def last_level_cache_bytes(device_type: str = "cpu") -> int | None:
    """The largest cache this process's memory reads pass through (Linux sysfs; CUDA's L2), or None."""
    if device_type == "cuda":
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size)
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            text = (index / "size").read_text().strip()
            if (index / "type").read_text().strip() == "Instruction":
                continue
        except OSError:
            continue
        units = {"K": 2**10, "M": 2**20, "G": 2**30}
        sizes.append(int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text))
    return max(sizes, default=None)


def working_set_bytes(cache_bytes: int | None) -> int:
    """Bytes of matrices to stream: CACHE_MULTIPLE caches, within [MIN_BYTES, MAX_BYTES]."""
    return min(max(CACHE_MULTIPLE * (cache_bytes or FALLBACK_CACHE_BYTES), MIN_BYTES), MAX_BYTES)


@cache
def gemv_bandwidth(device_type: str = "cpu", threads: int | None = None, total_bytes: int | None = None,
                   rounds: int = 3) -> tuple[float, str]:
    """(bytes/s, a description of what was measured): the fastest round of one-row float32 `x @ W`
    over distinct (in, out) matrices of `total_bytes` in all (default: sized from the cache)."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, not {rounds}")
    device = torch.device(device_type)
    total = total_bytes or working_set_bytes(last_level_cache_bytes(device_type))
    n_in, n_out = GEMV_SHAPE
    count = max(2, total // (n_in * n_out * 4))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        # one allocation, every page written: untouched pages would all read one shared zero page
        weights = torch.empty(count, n_in, n_out, device=device).fill_(1e-3)
        x = torch.ones(1, n_in, device=device)
        x @ weights[0]  # first-call dispatch
        best, done, began = float("inf"), 0, time.perf_counter()
        while done < rounds and (done == 0 or time.perf_counter() - began < TIME_BUDGET_S):
            synchronize(device)
            start = time.perf_counter()
            for w in weights:
                x @ w
            synchronize(device)
            best, done = min(best, time.perf_counter() - start), done + 1
        threads_used = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)
    size = weights.numel() * 4
    where = f"{threads_used} thread{'s' if threads_used > 1 else ''}" if device_type == "cpu" else device_type
    source = (f"measured GEMV: 1-row float32 x @ W over {count} distinct {n_in}x{n_out} matrices "
              f"({size / 2**20:.0f} MiB), best of {done}, {where}")
    return size / best, source


def peak_bandwidth(device: torch.device, threads: int | None = None) -> tuple[float, str]:
    """(bytes/s, where the figure comes from) for MBU: a known GPU's datasheet, else `gemv_bandwidth`."""
    if device.type == "cuda":
        peak = gpu_peak(device_name(device))
        if peak is not None:
            return peak.bytes_per_s, f"datasheet {peak.name}"
    return gemv_bandwidth(device.type, threads)
