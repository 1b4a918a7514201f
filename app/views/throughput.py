"""Throughput: measure training and decoding speed here, see your runs' speed, project the paper's runs."""

import pandas as pd
import plotly.express as px
import streamlit as st

from app.services import runs, throughput
from app.views.widgets import DECIMAL1, table

st.title("Throughput")
presets = throughput.lab_presets()
preset = st.selectbox("Preset", list(presets), index=list(presets).index("lab-1m"))
results = st.session_state.setdefault("throughput", [])

st.subheader("Measure on this machine")
c1, c2, c3 = st.columns(3)
batches = c1.multiselect("Batch sizes", [1, 2, 4, 8, 16], default=[4])
seqs = c2.multiselect("Sequence lengths", [64, 128, 256, 512, 1024], default=[128])
decode_tokens = c3.number_input("Decode tokens", 16, 512, 64, 16)
if st.button("Measure training and decoding", type="primary"):
    seqs_ok = [s for s in seqs if s <= presets[preset]]
    if not batches or not seqs_ok:
        st.warning(f"choose at least one batch size and a sequence length within {preset}'s context "
                   f"({presets[preset]:,})")
        st.stop()
    shapes = [(b, s) for b in batches for s in seqs_ok]
    bar = st.progress(0.0, text="measuring...")
    for i, (b, s) in enumerate(shapes):
        def tick(done, total, i=i, b=b, s=s):
            bar.progress((i + done / total) / (len(shapes) + 1), text=f"training batch {b} × seq {s}")
        results.append(throughput.measure_training(preset, b, s, on_round=tick))
    decode = throughput.measure_decoding(preset, int(decode_tokens),
                                         on_round=lambda d, t: bar.progress((len(shapes) + d / t) / (len(shapes) + 1),
                                                                            text="decoding"))
    bar.progress(1.0, text="done")
    st.session_state["throughput-decode"] = decode

if results:
    speeds = table(throughput.speed_table(results), {"tokens/s": "%,.0f", "MFU": "percent"})
    same = speeds[speeds.preset == preset]
    if len(same.batch.unique()) > 1:
        st.plotly_chart(px.line(same.sort_values("batch"), x="batch", y="tokens/s", color="seq", markers=True,
                                title="Training tokens/s against batch size"), width="stretch")
    if len(same.seq.unique()) > 1:
        st.plotly_chart(px.line(same.sort_values("seq"), x="seq", y="tokens/s", color="batch", markers=True,
                                title="Training tokens/s against sequence length"), width="stretch")
if "throughput-decode" in st.session_state:
    d = st.session_state["throughput-decode"]
    st.metric(f"Decoding, {d['preset']}, batch 1", f"{d['tokens_per_s']:,.1f} tokens/s")

st.subheader("The paper's runs on this machine")
peak, source = throughput.machine_peak()
paper = throughput.PAPER_THROUGHPUT
st.caption(f"This machine's peak: {peak / 1e9:,.1f} GFLOP/s ({source}). The paper's {paper.preset} model ran at about "
           f"{paper.tokens_per_gpu_s:,.0f} tokens/s per {paper.gpu} ({paper.mfu:.0%} MFU), {paper.gpus:,} GPUs, "
           f"~{paper.printed_days:.0f} days.")
if results:
    best = throughput.fastest(results)
    projection = throughput.paper_projection(best)
    table(projection, {"training tokens": "compact", "training FLOPs (10^21)": "%,.1f", "this machine (years)": "%,.0f",
                       **{column: DECIMAL1 for column in projection[0] if column.endswith("(days)")}})
    st.caption(f"Projected at the FLOP rate measured for {best['preset']} (batch {best['batch']}, seq {best['seq']}, "
               f"MFU {best['mfu']:.1%}).")
else:
    st.info("Measure first: the projection uses the FLOP rate this machine reaches.")

st.subheader("Your runs: tokens/s over training")
curves = runs.speed_curves()
if curves:
    st.plotly_chart(px.line(pd.DataFrame(curves), x="tokens", y="tokens/s", color="run"), width="stretch")
else:
    st.info("No run records with throughput yet.")
bench = runs.bench_records("train", "checkpointing")
if bench:
    st.subheader("Benchmarks recorded by `python -m lab bench`")
    table(bench, {})
