"""Attention maps: one head, all heads of a layer, and their average, recomputed with the eager backend."""

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app.services import attention
from app.views.widgets import checkpoint_picker, load

st.title("Attention")
st.caption("The model runs as usual (SDPA or xformers) up to the chosen layer; that layer's attention is then "
           "recomputed explicitly to show its weights. Rows are queries, columns the keys they attend to.")
with st.sidebar:
    spec = checkpoint_picker("attention")
served = load(spec) if spec else None
if served is None:
    st.stop()
cfg = served.config
prompt = st.text_area("Prompt", "To be, or not to be, that is the question:", max_chars=2000)
upload = st.file_uploader("...or a text file", type=["txt", "md"])
if upload is not None:
    try:
        prompt = attention.decode_upload(upload.getvalue(), upload.name)
    except ValueError as err:
        st.warning(str(err))
c1, c2 = st.columns(2)
layer = c1.slider("Layer", 0, cfg.n_layers - 1, 0)
head = c2.slider("Head", 0, cfg.n_heads - 1, 0)

try:
    labels, weights = attention.attention_weights(served, prompt, layer)  # (H, T, T)
except ValueError as err:
    st.warning(str(err))
    st.stop()


def heatmap(matrix, title):
    fig = px.imshow(matrix.numpy(), x=labels, y=labels, color_continuous_scale="Viridis", zmin=0,
                    labels={"x": "key", "y": "query", "color": "weight"}, title=title, aspect="auto")
    fig.update_layout(height=600)
    return fig


tab_head, tab_grid, tab_mean = st.tabs(["One head", "All heads", "Average over heads"])
with tab_head:
    st.plotly_chart(heatmap(weights[head], f"Layer {layer}, head {head}"), width="stretch")
with tab_grid:
    cols = min(4, cfg.n_heads)
    rows = -(-cfg.n_heads // cols)
    grid = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in range(cfg.n_heads)])
    for h in range(cfg.n_heads):
        grid.add_trace(go.Heatmap(z=weights[h].numpy(), coloraxis="coloraxis"), row=h // cols + 1, col=h % cols + 1)
    grid.update_layout(height=260 * rows, coloraxis={"colorscale": "Viridis", "cmin": 0})
    grid.update_yaxes(autorange="reversed")
    st.plotly_chart(grid, width="stretch")
with tab_mean:
    st.plotly_chart(heatmap(weights.mean(0), f"Layer {layer}, mean of {cfg.n_heads} heads"), width="stretch")
