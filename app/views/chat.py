"""Chat with a checkpoint: streaming replies, sampling controls, tokens/s under each reply."""

import streamlit as st

from app.services import chat, checkpoints
from app.views.widgets import checkpoint_picker, load

st.title("Chat")
with st.sidebar:
    spec = checkpoint_picker("chat")
    start = checkpoints.default_quantization(spec) if spec else "none"
    quant = st.selectbox("Quantization", checkpoints.QUANTIZATIONS, checkpoints.QUANTIZATIONS.index(start),
                         key=f"chat-quant::{spec}",
                         help="Weights for decoding: float (none), int8 or int4. Starts at the checkpoint's own "
                         "(4-bit for the bundled SmolLM2 GGUF, none for a float run). Each reply's caption names it.")
    temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.05, help="0 is greedy and deterministic")
    top_p = st.slider("Top-p", 0.05, 1.0, 0.95, 0.05)
    top_k = st.number_input("Top-k (0 = off)", 0, 1000, 0)
    max_tokens = st.slider("Max new tokens", 8, 1024, 200, 8)
    seed = st.number_input("Seed", 0, 2**31 - 1, 0)

served = load(spec, quant) if spec else None
if served is None:
    st.stop()
st.caption(served.describe())
if checkpoints.kind(spec) == "run":
    st.info("This model was trained here from scratch on Shakespeare, as the demo run of `make run` is: it "
            "continues text in the plays' style and does not answer questions. Start a line as a play would, "
            "such as `HAMLET:` or `To be, or not to be`. To chat, choose the bundled SmolLM2-135M-Instruct.",
            icon=":material/theater_comedy:")
elif checkpoints.kind(spec) == "bundled":
    st.caption("SmolLM2-135M-Instruct is instruction-tuned: ask it something. The runs in the Checkpoint list "
               "were trained here on Shakespeare; they continue lines of a play rather than chat, and show what a "
               "small model learns from a few million tokens.")
system = ""
if chat.takes_system_prompt(served):
    system = st.sidebar.text_area("System prompt", "You are a helpful assistant.", key="chat-system")

# one conversation per browser session and checkpoint: tabs never share history
state_key = f"chat::{spec}::{system}"
if state_key not in st.session_state:
    st.session_state[state_key] = {"conversation": chat.new_conversation(served, system), "stats": []}
session = st.session_state[state_key]
conversation = session["conversation"]

left, right = st.sidebar.columns(2)
if left.button("Clear", width="stretch"):
    session["conversation"], session["stats"] = chat.new_conversation(served, system), []
    st.rerun()
regenerate = right.button("Regenerate", width="stretch",
                          disabled=not conversation.messages or conversation.messages[-1].role != "assistant")

stats = iter(session["stats"])
for message in conversation.messages:
    with st.chat_message(message.role):
        st.markdown(message.content)
        if message.role == "assistant":
            st.caption(next(stats, ""))

settings = chat.sampling(max_tokens, temperature, top_p, top_k, seed)
prompt = st.chat_input("Say something")
if regenerate:
    conversation.messages.pop()
    session["stats"].pop()
    prompt = None
elif prompt is not None:
    try:
        chat.check_message(prompt)
    except ValueError as err:
        st.warning(str(err))
        st.stop()
    conversation.add("user", prompt)
    with st.chat_message("user"):
        st.markdown(prompt)
if prompt is not None or regenerate:
    with st.chat_message("assistant"):
        reply = chat.TimedReply(served, conversation, settings)
        try:
            st.write_stream(reply)
        except ValueError as err:  # e.g. a message longer than the model's context
            conversation.messages.pop()
            st.warning(str(err))
            st.stop()
        st.caption(reply.summary())
        session["stats"].append(reply.summary())
