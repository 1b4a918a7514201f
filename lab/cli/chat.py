"""`python -m lab chat`: a terminal chat with any checkpoint, streaming the reply and its tokens/s."""

from __future__ import annotations

import time

from lab.cli.options import add_threads
from llama_core.chat import Conversation, get_template
from llama_core.compiled import compile_decoding
from llama_core.devices import resolve_device
from llama_core.formats import load_for_decoding
from llama_core.generate import Sampling
from llama_core.quantize import MODES

HELP = "commands: /reset clears the history, /quit (or Ctrl-D) leaves"


def add_arguments(parser) -> None:
    parser.add_argument("--checkpoint", default="smollm2",
                        help="a run name, a Hugging Face/Meta folder, a .gguf file, or smollm2 (the default)")
    parser.add_argument("--template", default=None, help="chat template: chatml, llama2 or plain "
                        "(default: the checkpoint's own)")
    parser.add_argument("--system", default=None, help="a system prompt")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quant", choices=(*MODES, "own"), default="own",
                        help="weight quantization for decoding: own (the default) is the checkpoint's own, 4-bit for "
                        "the bundled SmolLM2 and none for a float run; none keeps float32, in the packed layout")
    parser.add_argument("--compile", action="store_true", help="compile the decode step (llama_core.compiled): "
                        "measured 1.4x (float32) to 1.85x (4-bit) the tokens/s of SmolLM2 on a 2-core CPU, "
                        "once the first "
                        "reply has waited for the compilation")
    add_threads(parser)


def run(args) -> int:
    ckpt, quant = load_for_decoding(args.checkpoint, args.quant, resolve_device(args.device))
    if args.compile:
        compile_decoding(ckpt.model)
        quant += ", compiled"
        print("The decode step compiles during the first reply: minutes on a small CPU the first time, "
              "less once Inductor's disk cache has it.")
    template = get_template(args.template or ckpt.chat_template)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                        top_p=args.top_p, seed=args.seed)
    conv = Conversation(template, ckpt.tokenizer, ckpt.model.config.max_seq_len, args.system, ckpt.add_bos)
    print(f"{ckpt.source} ({ckpt.format}, {ckpt.model.num_params / 1e6:.0f}M parameters, "
          f"template {template.name}, quantization {quant}). {HELP}")
    while True:
        try:
            line = input("\nyou> ")
        except EOFError:
            print()
            return 0
        if line.strip() in ("/quit", "/exit"):
            return 0
        if line.strip() == "/reset":
            conv.messages.clear()
            continue
        if not line.strip():
            continue
        conv.add("user", line)
        print("model> ", end="", flush=True)
        start = time.perf_counter()
        for piece in conv.respond(ckpt.model, sampling):
            print(piece, end="", flush=True)
        seconds = time.perf_counter() - start
        n_tokens = conv.last_reply_tokens
        print(f"\n[{n_tokens} tokens in {seconds:.2f} s: {n_tokens / max(seconds, 1e-9):.1f} tokens/s, {quant}]")
