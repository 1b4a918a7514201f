"""Throughput: measure training and decoding speed here, see your runs' speed, project the paper's runs."""

import pandas as pd
import plotly.express as px
import streamlit as st

from app import services
from llama_core.config import PRESETS

st.title("Throughput")
lab_presets = [p for p in PRESETS if p.startswith("lab-")]
preset = st.selectbox("Preset", lab_presets, index=lab_presets.index("lab-1m"))
results = st.session_state.setdefault("throughput", [])

st.subheader("Measure on this machine")
c1, c2, c3 = st.columns(3)
batches = c1.multiselect("Batch sizes", [1, 2, 4, 8, 16], default=[4])
seqs = c2.multiselect("Sequence lengths", [64, 128, 256, 512, 1024], default=[128])
decode_tokens = c3.number_input("Decode tokens", 16, 512, 64, 16)
if st.button("Measure training and decoding", type="primary"):
    seqs_ok = [s for s in seqs if s <= PRESETS[preset].max_seq_len]
    if not batches or not seqs_ok:
        st.warning(f"choose at least one batch size and a sequence length within {preset}'s context "
                   f"({PRESETS[preset].max_seq_len})")
        st.stop()
    shapes = [(b, s) for b in batches for s in seqs_ok]
    bar = st.progress(0.0, text="measuring...")
    for i, (b, s) in enumerate(shapes):
        def tick(done, total, i=i, b=b, s=s):
            bar.progress((i + done / total) / (len(shapes) + 1), text=f"training batch {b} × seq {s}")
        results.append(services.measure_training(preset, b, s, on_round=tick))
    decode = services.measure_decoding(preset, int(decode_tokens),
                                       on_round=lambda d, t: bar.progress((len(shapes) + d / t) / (len(shapes) + 1),
                                                                          text="decoding"))
    bar.progress(1.0, text="done")
    st.session_state["throughput-decode"] = decode

if results:
    table = pd.DataFrame([{k: r[k] for k in ("preset", "batch", "seq", "tokens_per_s", "mfu", "peak_source")}
                          for r in results])
    st.dataframe(table, hide_index=True, width="stretch")
    same = table[table.preset == preset]
    if len(same.batch.unique()) > 1:
        st.plotly_chart(px.line(same.sort_values("batch"), x="batch", y="tokens_per_s", color="seq", markers=True,
                                title="Training tokens/s against batch size"), width="stretch")
    if len(same.seq.unique()) > 1:
        st.plotly_chart(px.line(same.sort_values("seq"), x="seq", y="tokens_per_s", color="batch", markers=True,
                                title="Training tokens/s against sequence length"), width="stretch")
if "throughput-decode" in st.session_state:
    d = st.session_state["throughput-decode"]
    st.metric(f"Decoding, {d['preset']}, batch 1", f"{d['tokens_per_s']:.1f} tokens/s")

st.subheader("The paper's runs on this machine")
peak, source = services.machine_peak()
st.caption(f"This machine's peak: {peak / 1e9:,.1f} GFLOP/s ({source}). The paper's 65B model ran at about "
           f"{services.PAPER_TOKENS_PER_GPU_S} tokens/s per A100-80GB (~48% MFU), 2048 GPUs, ~21 days.")
if results:
    best = max(results, key=lambda r: r["tokens_per_s"] * r["flops_per_token"])
    projection = pd.DataFrame(services.paper_projection(best["tokens_per_s"], best["preset"], best["seq"]))
    st.dataframe(projection, hide_index=True, width="stretch")
    st.caption(f"Projected at the FLOP rate measured for {best['preset']} (batch {best['batch']}, seq {best['seq']}, "
               f"MFU {best['mfu']:.1%}).")
else:
    st.info("Measure first: the projection uses the FLOP rate this machine reaches.")

st.subheader("Your runs: tokens/s over training")
fig = None
for row in services.run_table():
    metrics = [m for m in services.run_metrics(row["run"]) if "tokens_per_s" in m]
    if metrics:
        frame = pd.DataFrame({"tokens": [m["tokens"] for m in metrics],
                              "tokens/s": [m["tokens_per_s"] for m in metrics], "run": row["run"]})
        fig = px.line(frame, x="tokens", y="tokens/s", color="run") if fig is None else fig.add_traces(
            px.line(frame, x="tokens", y="tokens/s", color="run").data)
if fig is not None:
    st.plotly_chart(fig, width="stretch")
else:
    st.info("No run records with throughput yet.")
bench = services.bench_records("train") + services.bench_records("checkpointing")
if bench:
    st.subheader("Benchmarks recorded by `python -m lab bench`")
    st.dataframe(pd.DataFrame(bench).drop(columns=["hardware"], errors="ignore"), hide_index=True,
                 width="stretch")
