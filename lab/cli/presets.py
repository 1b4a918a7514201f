"""Every preset's parameter count and FLOPs per token, beside the paper's Table 2."""

from __future__ import annotations

from llama_core.config import PAPER_PRESETS, PRESETS
from llama_core.flops import format_count, param_count, train_flops_per_token

# Table 2 of the paper: printed size, learning rate, batch size (tokens), training tokens.
PAPER_TABLE2 = {
    "llama-7b": ("6.7B", 3.0e-4, "4M", "1.0T"),
    "llama-13b": ("13.0B", 3.0e-4, "4M", "1.0T"),
    "llama-33b": ("32.5B", 1.5e-4, "4M", "1.4T"),
    "llama-65b": ("65.2B", 1.5e-4, "4M", "1.4T"),
}


def preset_rows() -> list[dict]:
    rows = []
    for name, cfg in PRESETS.items():
        n = param_count(cfg)
        paper = PAPER_TABLE2.get(name)
        rows.append({
            "preset": name, "dim": cfg.dim, "layers": cfg.n_layers, "heads": cfg.n_heads,
            "kv_heads": cfg.n_kv_heads, "ffn": cfg.hidden_dim, "vocab": cfg.vocab_size,
            "context": cfg.max_seq_len, "params": n, "params_printed": format_count(n),
            "paper": paper[0] if paper else "",
            "train_flops_per_token": train_flops_per_token(cfg, cfg.max_seq_len),
        })
    return rows


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    header = f"{'preset':<10} {'dim':>5} {'layers':>6} {'heads':>5} {'ffn':>6} {'vocab':>6} {'ctx':>5} " \
             f"{'params':>15} {'ours':>6} {'paper':>6} {'train FLOPs/token':>18}"
    print(header)
    print("-" * len(header))
    for r in preset_rows():
        check = ""
        if r["paper"]:
            check = "ok" if r["paper"] == r["params_printed"] else "MISMATCH"
        print(f"{r['preset']:<10} {r['dim']:>5} {r['layers']:>6} {r['heads']:>5} {r['ffn']:>6} "
              f"{r['vocab']:>6} {r['context']:>5} {r['params']:>15,} {r['params_printed']:>6} "
              f"{r['paper']:>6} {r['train_flops_per_token']:>18.3e} {check}")
    print(f"\nPaper presets: {', '.join(PAPER_PRESETS)} (Table 2; FLOPs per token at context 2048, "
          "6N + 12·L·H·D·T).")
    return 0
