"""A run's energy and CO2eq from its records: the one computation the app and notebook 04 share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lab.records import read_config, read_metrics
from llama_core.carbon import PAPER_PUE, US_AVERAGE_KG_PER_KWH, RunFootprint, run_footprint, run_power


@dataclass(frozen=True)
class RunEnergy:
    """A run's footprint by the paper's formula, with the device it ran on and where its power comes from."""

    device_name: str
    power_source: str
    footprint: RunFootprint


def run_energy(run_dir: Path, pue: float = PAPER_PUE, kg_per_kwh: float = US_AVERAGE_KG_PER_KWH,
               power_watts: float | None = None) -> RunEnergy | None:
    """The footprint over a run's recorded time (None before its first timed metrics line).

    Power is `power_watts` where given, else the mean of the joules a hardware counter recorded,
    else the device's datasheet figure or an assumed CPU figure (`carbon.run_power` says which).
    """
    timed = [m for m in read_metrics(run_dir) if m.get("elapsed_s") is not None]
    if not timed:
        return None
    device = read_config(run_dir).get("hardware", {}).get("device_name", "unknown device")
    if power_watts is not None:
        watts, source = power_watts, "given"
    else:
        measured = [m for m in timed if m.get("energy_j") is not None]
        last = measured[-1] if measured else {}
        watts, source = run_power(device, last.get("energy_j"), last.get("elapsed_s"), last.get("energy_source"))
    return RunEnergy(device, source, run_footprint(timed[-1]["elapsed_s"], watts, pue, kg_per_kwh))
