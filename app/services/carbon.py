"""The Carbon page's numbers: Table 15 by the paper's formula, and the GPU and grid presets to vary it."""

from __future__ import annotations

from llama_core.carbon import GPU_POWER_WATTS, GRID_KG_PER_KWH, PAPER_PUE, US_AVERAGE_KG_PER_KWH, reproduce_table15
from llama_core.paper import PAPER_THROUGHPUT

__all__ = ["DEFAULT_GPU", "GPU_POWER_WATTS", "GRID_KG_PER_KWH", "PAPER_PUE", "US_AVERAGE_KG_PER_KWH",
           "paper_defaults_note", "table15"]

DEFAULT_GPU = PAPER_THROUGHPUT.gpu


def table15(pue: float, kg_per_kwh: float, power_watts: float) -> list[dict]:
    """Every Table 15 row by the formula at these settings, beside what the paper printed."""
    return [{
        "model": c.row.model, "GPU": c.row.gpu, "GPU-hours": c.row.gpu_hours, "power (W)": power_watts,
        "MWh (formula)": round(c.mwh, 1), "MWh (printed)": c.row.printed_mwh,
        "tCO2eq (formula)": round(c.tco2eq, 1), "tCO2eq (printed)": c.row.printed_tco2eq,
    } for c in reproduce_table15(pue=pue, kg_per_kwh=kg_per_kwh, power_watts=power_watts)]


def paper_defaults_note() -> str:
    """What the formula gives with the paper's own settings: which printed rows it reproduces."""
    checks = reproduce_table15()
    off = [c for c in checks if not c.matches]
    text = (f"With the paper's defaults ({checks[0].row.power_watts:.0f} W, PUE {PAPER_PUE}, "
            f"{US_AVERAGE_KG_PER_KWH} kg/kWh) the formula gives every printed row to its rounding")
    gaps = "; ".join(f"{c.row.model}: {c.mwh:,.1f} MWh against the printed {c.row.printed_mwh:,.0f} "
                     f"({c.tco2eq:,.1f} t against {c.row.printed_tco2eq:,.0f})" for c in off)
    return f"{text} except {gaps}." if off else f"{text}."
