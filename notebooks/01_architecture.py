# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · The LLaMA architecture, counted and run
#
# Touvron et al. (2023), section 2.2: a decoder-only Transformer with RMSNorm pre-normalisation,
# the SwiGLU feed-forward and rotary position embeddings. This notebook checks the lab's presets
# against the paper's Table 2, shows where parameters and FLOPs go, and runs RoPE and SwiGLU on
# real tensors. Every number comes from `llama_core` or from counting a real model; no formula is
# re-derived here.

# %% tags=["parameters"]
breakdown_presets = ["lab-15m", "lab-110m", "llama-7b", "llama-65b"]  # built on the meta device
flops_seq_len = 2048  # context for FLOPs per token, capped at each preset's max_seq_len
demo_preset = "lab-4m"  # a real model for the RoPE and SwiGLU cells
rope_positions = 64

# %%
import pandas as pd
import plotly.express as px
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llama_core.config import get_preset
from llama_core.flops import inference_flops_per_token, param_count
from llama_core.model import FeedForward, Transformer, apply_rope, rope_tables
from llama_core.paper import preset_rows

torch.manual_seed(0)

# %% [markdown]
# ## Parameter counts against Table 2
# The paper prints sizes truncated to one decimal (65,285,660,672 is "65.2B"); `params` is the
# exact count from `llama_core.flops.param_count`, `params_printed` the same printed the paper's way.

# %%
rows = pd.DataFrame(preset_rows())
rows["matches paper"] = [(paper == ours) if paper else None
                         for paper, ours in zip(rows["paper"], rows["params_printed"], strict=True)]
paper_rows = rows[rows["paper"] != ""]
assert paper_rows["matches paper"].all(), "a paper preset no longer matches Table 2"
print(f"All {len(paper_rows)} paper presets match Table 2.")
rows[["preset", "dim", "layers", "heads", "ffn", "vocab", "context", "params", "params_printed", "paper",
      "matches paper"]]

# %% [markdown]
# ## FLOPs per token
# Training costs 6N FLOPs per token for the matrix multiplies plus 12·L·H·D·T for attention
# (`llama_core.flops.train_flops_per_token`, after PaLM's appendix B), at each preset's context.

# %%
px.bar(rows, x="preset", y="train_flops_per_token", log_y=True, hover_data=["params"],
       title="Training FLOPs per token at each preset's context length")

# %% [markdown]
# ## Where the parameters and the FLOPs go
# Each model is built on PyTorch's `meta` device (shapes, no memory), so even the 65B model costs
# nothing. Parameters are grouped by module name; FLOPs are *counted* by PyTorch's
# `FlopCounterMode` during one forward pass, and checked against `inference_flops_per_token`.


# %%
def meta_model(name):
    with torch.device("meta"):
        return Transformer(get_preset(name))


def parameter_groups(model):
    """Parameters by where they sit: Meta's module names say which sub-layer owns each."""
    groups = {"attention": 0, "feed-forward": 0, "embeddings + output": 0, "norms": 0}
    for name, p in model.named_parameters():
        if ".attention." in name:
            groups["attention"] += p.numel()
        elif ".feed_forward." in name:
            groups["feed-forward"] += p.numel()
        elif name.startswith(("tok_embeddings", "output")):
            groups["embeddings + output"] += p.numel()
        else:
            groups["norms"] += p.numel()
    return groups


def counted_forward_flops(model, seq_len):
    """Forward FLOPs per token by module, as FlopCounterMode counts them on one sequence."""
    tokens = torch.zeros(1, seq_len, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        model(tokens)
    by_module = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    projections = sum(f for k, f in by_module.items() if k.split(".")[-1] in ("wq", "wk", "wv", "wo"))
    attention = sum(f for k, f in by_module.items() if k.endswith(".attention"))
    groups = {
        "attention projections": projections,
        "attention scores (QK^T, AV)": attention - projections,
        "feed-forward": sum(f for k, f in by_module.items() if k.endswith(".feed_forward")),
        "output head": by_module.get("Transformer.output", 0),
    }
    return {k: v / seq_len for k, v in groups.items()}, counter.get_total_flops() / seq_len


param_rows, flop_rows, checks = [], [], []
for name in breakdown_presets:
    model, cfg = meta_model(name), get_preset(name)
    seq_len = min(flops_seq_len, cfg.max_seq_len)
    assert model.num_params == param_count(cfg)
    param_rows += [{"preset": name, "part": k, "params": v} for k, v in parameter_groups(model).items()]
    groups, total = counted_forward_flops(model, seq_len)
    flop_rows += [{"preset": name, "part": k, "forward FLOPs/token": v} for k, v in groups.items()]
    formula = inference_flops_per_token(cfg, seq_len)
    checks.append({"preset": name, "context": seq_len, "counted": total, "formula": formula,
                   "relative gap": (total - formula) / formula})
pd.DataFrame(checks)

# %% [markdown]
# The formula and the counter agree to within 0.1%: the formula also counts the RMSNorm gains as
# matrix-multiply parameters, which the counter (rightly) does not.

# %%
px.bar(pd.DataFrame(param_rows), x="preset", y="params", color="part",
       title="Where the parameters go (% of each model)").update_layout(barnorm="percent")

# %%
px.bar(pd.DataFrame(flop_rows), x="preset", y="forward FLOPs/token", color="part",
       title="Where the forward FLOPs go (% of each model, counted)").update_layout(barnorm="percent")

# %% [markdown]
# ## RoPE on real tensors
# Rotary embeddings rotate each pair of query/key features by an angle proportional to the
# position, so the score between a query at position m and a key at position n depends only on
# m − n. Below, the *same* query and key vectors are placed at every position with the model's
# own `rope_tables` and `apply_rope`: the score matrix is constant along each diagonal.

# %%
cfg = get_preset(demo_preset)
cos, sin = rope_tables(cfg.head_dim, rope_positions, cfg.rope_theta)
q, k = torch.randn(cfg.head_dim), torch.randn(cfg.head_dim)
q_at = apply_rope(q.expand(1, rope_positions, 1, -1), torch.complex(cos, sin))[0, :, 0]  # (T, D): q at each position
k_at = apply_rope(k.expand(1, rope_positions, 1, -1), torch.complex(cos, sin))[0, :, 0]
scores = q_at @ k_at.T  # scores[m, n] = <R_m q, R_n k>
spread = max((scores.diagonal(offset).max() - scores.diagonal(offset).min()).item()
             for offset in range(-rope_positions + 1, rope_positions))
print(f"largest spread along any diagonal: {spread:.2e} "
      f"(scores range {scores.min():.2f} .. {scores.max():.2f})")
print(f"rotation keeps lengths: |q| = {q.norm():.4f}, |R_m q| in [{q_at.norm(dim=-1).min():.4f}, "
      f"{q_at.norm(dim=-1).max():.4f}]")
assert spread < 1e-5 * scores.abs().max()

# %%
px.imshow(scores.numpy(), labels={"x": "key position n", "y": "query position m", "color": "score"},
          title="⟨RoPE(q, m), RoPE(k, n)⟩: constant along diagonals, so it depends only on m − n",
          color_continuous_scale="RdBu", color_continuous_midpoint=0)

# %%
relative = pd.DataFrame({"m - n": range(rope_positions), "score": scores[:, 0].tolist()})
px.line(relative, x="m - n", y="score", title="The score as a function of relative position alone")

# %% [markdown]
# ## SwiGLU on real tensors
# The feed-forward is `w2(silu(w1 x) * w3 x)` with a hidden size of 2/3 · 4d rounded up to a
# multiple (`ModelConfig.hidden_dim`), which keeps its parameters near a 4d ReLU MLP's while
# adding the gate. Here the model's own `FeedForward` runs on a real batch, and its pieces are
# shown separately.

# %%
ffn = FeedForward(cfg)
x = torch.randn(2, 8, cfg.dim)  # (B, T, dim)
gate, up = F.silu(ffn.w1(x)), ffn.w3(x)  # (B, T, hidden)
with torch.no_grad():
    assert torch.allclose(ffn(x), ffn.w2(gate * up), atol=1e-6)
print(f"{demo_preset}: dim {cfg.dim}, hidden {cfg.hidden_dim} (4d would be {4 * cfg.dim}); "
      f"three matrices, {sum(p.numel() for p in ffn.parameters()):,} parameters")
print(f"gate: {(gate < 0).float().mean():.0%} of its values are negative "
      "(SiLU lets a little of them through, ReLU would zero them)")

# %%
z = torch.linspace(-6, 6, 241)
curves = pd.DataFrame({"z": z.tolist() * 2, "activation": ["SiLU (the gate)"] * 241 + ["ReLU"] * 241,
                       "value": F.silu(z).tolist() + F.relu(z).tolist()})
px.line(curves, x="z", y="value", color="activation", title="SiLU, the gate of SwiGLU, against ReLU")
