"""The Carbon page's numbers: Table 15 by the paper's formula, and the GPU and grid presets to vary it."""

from __future__ import annotations

from llama_core.carbon import GPU_POWER_WATTS, GRID_KG_PER_KWH, PAPER_PUE, US_AVERAGE_KG_PER_KWH, reproduce_table15

__all__ = ["DEFAULT_GPU", "GPU_POWER_WATTS", "GRID_KG_PER_KWH", "PAPER_PUE", "US_AVERAGE_KG_PER_KWH", "table15"]

DEFAULT_GPU = "A100-SXM4-80GB"  # the paper's


def table15(pue: float, kg_per_kwh: float, power_watts: float) -> list[dict]:
    """Every Table 15 row by the formula at these settings, beside what the paper printed."""
    return [{
        "model": c.row.model, "GPU": c.row.gpu, "GPU-hours": c.row.gpu_hours, "power (W)": power_watts,
        "MWh (formula)": round(c.mwh, 1), "MWh (printed)": c.row.printed_mwh,
        "tCO2eq (formula)": round(c.tco2eq, 1), "tCO2eq (printed)": c.row.printed_tco2eq,
    } for c in reproduce_table15(pue=pue, kg_per_kwh=kg_per_kwh, power_watts=power_watts)]
