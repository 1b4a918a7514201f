"""Text tables that more than one command prints (`lab presets`, `lab demo`)."""

from __future__ import annotations

from llama_core.config import PAPER_PRESETS
from llama_core.paper import preset_rows


def preset_table() -> str:
    """Every preset's shape, parameters and training FLOPs per token, beside the paper's Table 2."""
    header = f"{'preset':<10} {'dim':>5} {'layers':>6} {'heads':>5} {'ffn':>6} {'vocab':>6} {'ctx':>5} " \
             f"{'params':>15} {'ours':>6} {'paper':>6} {'train FLOPs/token':>18}"
    lines = [header, "-" * len(header)]
    for r in preset_rows():
        check = ""
        if r["paper"]:
            check = "ok" if r["paper"] == r["params_printed"] else "MISMATCH"
        lines.append(f"{r['preset']:<10} {r['dim']:>5} {r['layers']:>6} {r['heads']:>5} {r['ffn']:>6} "
                     f"{r['vocab']:>6} {r['context']:>5} {r['params']:>15,} {r['params_printed']:>6} "
                     f"{r['paper']:>6} {r['train_flops_per_token']:>18.3e} {check}")
    lines.append(f"\nPaper presets: {', '.join(PAPER_PRESETS)} (Table 2; FLOPs per token at context 2048, "
                 "6N + 12·L·H·D·T).")
    return "\n".join(lines)
