"""Chat with a checkpoint: streaming replies, sampling controls, tokens/s under each reply."""

import streamlit as st

from app import services
from app.pages.widgets import checkpoint_picker, load
from llama_core.generate import Sampling

st.title("Chat")
with st.sidebar:
    spec = checkpoint_picker("chat")
    temperature = st.slider("Temperature", 0.0, 2.0, 0.7, 0.05, help="0 is greedy and deterministic")
    top_p = st.slider("Top-p", 0.05, 1.0, 0.95, 0.05)
    top_k = st.number_input("Top-k (0 = off)", 0, 1000, 0)
    max_tokens = st.slider("Max new tokens", 8, 1024, 200, 8)
    seed = st.number_input("Seed", 0, 2**31 - 1, 0)

loaded = load(spec) if spec else None
if loaded is None:
    st.stop()
ckpt = loaded.checkpoint
st.caption(f"{ckpt.format} checkpoint · {ckpt.model.num_params / 1e6:.1f}M parameters · "
           f"template: {ckpt.chat_template} · context {ckpt.model.config.max_seq_len}")
system = ""
if services.template_has_system(ckpt.chat_template):
    system = st.sidebar.text_area("System prompt", "You are a helpful assistant.", key="chat-system")

# one conversation per browser session and checkpoint: tabs never share history
state_key = f"chat::{spec}::{system}"
if state_key not in st.session_state:
    st.session_state[state_key] = {"conversation": services.new_conversation(loaded, system), "stats": []}
session = st.session_state[state_key]
conversation = session["conversation"]

left, right = st.sidebar.columns(2)
if left.button("Clear", width="stretch"):
    session["conversation"], session["stats"] = services.new_conversation(loaded, system), []
    st.rerun()
regenerate = right.button("Regenerate", width="stretch",
                          disabled=not conversation.messages or conversation.messages[-1].role != "assistant")

stats = iter(session["stats"])
for message in conversation.messages:
    with st.chat_message(message.role):
        st.markdown(message.content)
        if message.role == "assistant":
            st.caption(next(stats, ""))

sampling = Sampling(max_new_tokens=int(max_tokens), temperature=float(temperature), top_p=float(top_p),
                    top_k=int(top_k) or None, seed=int(seed))
prompt = st.chat_input("Say something")
if regenerate:
    conversation.messages.pop()
    session["stats"].pop()
    prompt = None
elif prompt is not None:
    try:
        services.check_message(prompt)
    except ValueError as err:
        st.warning(str(err))
        st.stop()
    conversation.add("user", prompt)
    with st.chat_message("user"):
        st.markdown(prompt)
if prompt is not None or regenerate:
    with st.chat_message("assistant"):
        reply = services.TimedReply(loaded, conversation, sampling)
        try:
            st.write_stream(reply)
        except ValueError as err:  # e.g. a message longer than the model's context
            conversation.messages.pop()
            st.warning(str(err))
            st.stop()
        stat = f"{reply.tokens} tokens · {reply.tokens_per_s:.1f} tokens/s"
        st.caption(stat)
        session["stats"].append(stat)
