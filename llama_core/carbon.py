"""Energy and CO2eq as pure functions: the paper's formula, its Table 15, presets for GPUs and grids.

Source: Touvron et al. 2023, section 6.4 and Table 15, after Wu et al. 2022: energy (Wh) =
GPU-hours x GPU power (W) x PUE with PUE 1.1; tCO2eq = MWh x 0.385, the US national average carbon
intensity (kg CO2eq per kWh).
"""

from __future__ import annotations

from dataclasses import dataclass

from llama_core.devices import GPU_PEAKS, gpu_peak

PAPER_PUE = 1.1
US_AVERAGE_KG_PER_KWH = 0.385


def energy_mwh(gpu_hours: float, power_watts: float, pue: float = PAPER_PUE) -> float:
    """MWh = GPU-hours x power (W) x PUE / 1e6 (Touvron et al. 2023, section 6.4)."""
    if gpu_hours < 0 or power_watts < 0:
        raise ValueError(f"GPU-hours and power must be non-negative, got {gpu_hours}, {power_watts}")
    if pue < 1:
        raise ValueError(f"PUE is facility energy over IT energy, so at least 1; got {pue}")
    return gpu_hours * power_watts * pue / 1e6


def tco2eq(mwh: float, kg_per_kwh: float = US_AVERAGE_KG_PER_KWH) -> float:
    """Tonnes CO2eq = MWh x grid intensity in kg/kWh (1 MWh = 1000 kWh, 1 t = 1000 kg)."""
    if kg_per_kwh < 0:
        raise ValueError(f"grid intensity must be non-negative, got {kg_per_kwh} kg/kWh")
    return mwh * kg_per_kwh


# ---- Table 15 ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Table15Row:
    """One printed row of Table 15: the inputs and the two printed results (whole numbers)."""

    model: str
    gpu: str
    power_watts: float
    gpu_hours: float
    printed_mwh: float
    printed_tco2eq: float


TABLE15: tuple[Table15Row, ...] = (
    Table15Row("OPT-175B", "A100-80GB", 400, 809_472, 356, 137),
    Table15Row("BLOOM-175B", "A100-80GB", 400, 1_082_880, 475, 183),
    Table15Row("LLaMA-7B", "A100-80GB", 400, 82_432, 36, 14),
    Table15Row("LLaMA-13B", "A100-80GB", 400, 135_168, 59, 23),
    Table15Row("LLaMA-33B", "A100-80GB", 400, 530_432, 233, 90),
    Table15Row("LLaMA-65B", "A100-80GB", 400, 1_022_362, 449, 173),
)


@dataclass(frozen=True)
class RowCheck:
    """A Table 15 row recomputed by the formula, beside what the paper printed."""

    row: Table15Row
    mwh: float
    tco2eq: float

    @property
    def mwh_gap(self) -> float:
        return self.mwh - self.row.printed_mwh

    @property
    def tco2eq_gap(self) -> float:
        return self.tco2eq - self.row.printed_tco2eq

    @property
    def matches(self) -> bool:
        """Printed values are whole numbers: a match is within one unit of the printed digit.

        One unit, not half: the paper prints LLaMA-65B's 449.84 MWh as 449 (truncated, not rounded).
        """
        return abs(self.mwh_gap) < 1 and abs(self.tco2eq_gap) < 1


def reproduce_table15(pue: float = PAPER_PUE, kg_per_kwh: float = US_AVERAGE_KG_PER_KWH,
                      power_watts: float | None = None) -> list[RowCheck]:
    """Every Table 15 row by the formula. With the defaults all rows match but BLOOM-175B, which
    the formula puts at 476.5 MWh against the printed 475 (its tCO2eq, 183.4, still matches)."""
    checks = []
    for row in TABLE15:
        mwh = energy_mwh(row.gpu_hours, row.power_watts if power_watts is None else power_watts, pue)
        checks.append(RowCheck(row, mwh, tco2eq(mwh, kg_per_kwh)))
    return checks


@dataclass(frozen=True)
class DevelopmentFigure:
    """The paper's footprint for developing all its models (section 6.4): printed, and implied."""

    gpus: int = 2048
    months: float = 5  # "approximately 5 months"
    printed_mwh: float = 2638
    printed_tco2eq: float = 1015

    @property
    def implied_gpu_hours(self) -> float:
        """GPU-hours that give printed_mwh at 400 W and PUE 1.1 (inverting the formula)."""
        return self.printed_mwh * 1e6 / (400 * PAPER_PUE)

    @property
    def implied_days(self) -> float:
        """Days of all GPUs busy that those GPU-hours mean: ~122, i.e. about 4 of the 5 months."""
        return self.implied_gpu_hours / self.gpus / 24


PAPER_DEVELOPMENT = DevelopmentFigure()


# ---- presets -----------------------------------------------------------------------------------------

# Board power (TDP) of common GPUs, from the device table that MFU also uses.
GPU_POWER_WATTS: dict[str, float] = {peak.name: peak.watts for peak in GPU_PEAKS}

# Annual average carbon intensity of electricity, kg CO2eq per kWh (approximate; grids change yearly).
GRID_KG_PER_KWH: dict[str, float] = {
    "US average (paper)": US_AVERAGE_KG_PER_KWH,  # Touvron et al. 2023, section 6.4
    "World average": 0.480,  # Ember, Global Electricity Review 2024 (2023 data: 480 g/kWh)
    "Germany": 0.381,  # Ember, European Electricity Review 2024 (2023 data)
    "France": 0.056,  # Ember, European Electricity Review 2024 (2023 data; mostly nuclear)
    "Quebec": 0.002,  # Canada National Inventory Report 2023, part 3 (under 2 g/kWh; hydro)
}

# A CPU exposes no power figure to PyTorch; a typical desktop CPU package power stands in, and
# callers must label it as assumed.
ASSUMED_CPU_WATTS = 65.0


def device_power(device_name: str) -> tuple[float, str]:
    """(watts, where the figure comes from) for a device name as llama_core.devices reports it."""
    peak = gpu_peak(device_name)
    if peak is not None:
        return peak.watts, f"datasheet TDP of {peak.name}"
    return ASSUMED_CPU_WATTS, "assumed (typical desktop CPU package power)"


# ---- a lab run ---------------------------------------------------------------------------------------

def run_power(device_name: str, energy_j: float | None = None, elapsed_s: float | None = None,
              counter: str | None = None) -> tuple[float, str]:
    """(mean watts, source) of a run: the joules a hardware counter (RAPL, NVML) measured over
    `elapsed_s` where it recorded any, else the device's figure from `device_power`."""
    if energy_j is not None and elapsed_s:
        return energy_j / elapsed_s, f"measured ({counter or 'counter'})"
    return device_power(device_name)


@dataclass(frozen=True)
class RunFootprint:
    """Energy and emissions of one lab run, by the paper's formula."""

    elapsed_s: float
    power_watts: float
    n_devices: int
    pue: float
    kg_per_kwh: float
    kwh: float
    kg_co2eq: float


def run_footprint(elapsed_s: float, power_watts: float, pue: float = PAPER_PUE,
                  kg_per_kwh: float = US_AVERAGE_KG_PER_KWH, n_devices: int = 1) -> RunFootprint:
    """A run's energy and CO2eq: device-hours x power x PUE, times grid intensity (section 6.4).

    Power is the device's board power at full load, as the paper assumes, so this is an upper
    estimate for a run that does not keep its device saturated.
    """
    if elapsed_s < 0:
        raise ValueError(f"elapsed_s must be non-negative, got {elapsed_s}")
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices}")
    mwh = energy_mwh(elapsed_s / 3600 * n_devices, power_watts, pue)
    return RunFootprint(elapsed_s, power_watts, n_devices, pue, kg_per_kwh, mwh * 1000,
                        tco2eq(mwh, kg_per_kwh) * 1000)
