"""The Models page's table: every preset's shape, exact size and training cost, beside Table 2."""

from __future__ import annotations

from llama_core.paper import preset_rows


def preset_table() -> list[dict]:
    """A row per preset (`llama_core.paper.preset_rows`), named for people."""
    return [{
        "preset": r["preset"], "dim": r["dim"], "layers": r["layers"], "heads": r["heads"],
        "KV heads": r["kv_heads"], "FFN": r["ffn"], "vocab": r["vocab"], "context": r["context"],
        "parameters": r["params"], "size": r["params_printed"], "Table 2": r["paper"],
        "training FLOPs/token": r["train_flops_per_token"],
    } for r in preset_rows()]
