"""Measured energy, where the machine exposes a counter: RAPL on Linux CPUs, NVML on NVIDIA GPUs.

`EnergyMeter.joules()` is None where there is none (most VMs and containers); callers then fall
back to the paper's estimate (device-hours x board power x PUE) and label it as assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")

Counter = tuple[Callable[[], float], float]  # (read cumulative joules, value at which it wraps)


class EnergyMeter:
    """Joules consumed since construction, summed over the machine's cumulative counters."""

    def __init__(self, device_type: str = "cpu"):
        self.source, self._counters = _counters(device_type)
        self._last = [read() for read, _ in self._counters]
        self._total = 0.0

    def joules(self) -> float | None:
        if not self._counters:
            return None
        for i, (read, wrap) in enumerate(self._counters):
            now = read()
            delta = now - self._last[i]
            self._total += delta + wrap if delta < 0 else delta  # a negative step: the counter wrapped
            self._last[i] = now
        return self._total


def _counters(device_type: str) -> tuple[str | None, list[Counter]]:
    if device_type == "cuda":
        try:
            import pynvml  # optional (nvidia-ml-py); absent, energy is estimated instead

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # millijoules; Volta and later
            return "NVML", [(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3, float("inf"))]
        except Exception:
            return None, []
    counters = []
    # package domains are intel-rapl:N; their sub-zones (intel-rapl:N:M) are already inside them
    for zone in sorted(z for z in POWERCAP.glob("intel-rapl:*") if z.name.count(":") == 1):
        try:
            wrap = int((zone / "max_energy_range_uj").read_text()) / 1e6
            int((zone / "energy_uj").read_text())  # often readable by root only
        except (OSError, ValueError):
            continue
        counters.append((lambda z=zone: int((z / "energy_uj").read_text()) / 1e6, wrap))
    return ("RAPL", counters) if counters else (None, [])
