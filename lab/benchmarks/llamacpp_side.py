"""llama.cpp as a side of `lab bench decode --vs llamacpp`: the lab's own GGUF export, run by llama.cpp.

The checkpoint is written with llama_core.formats.gguf_write (Q8_0 for int8, Q4_1 for int4; a
checkpoint stored in that block type, the bundled SmolLM2's Q4_1, is used as it is) and loaded by
llama-cpp-python, the Python binding of llama.cpp (`pip install llama-cpp-python`, which compiles
llama.cpp: minutes). The side feeds the prompt's ids and then each greedy choice back one at a
time, as the lab's own decoding does, so the two read the same weights in the same block format and
the tokens/s compare. That llama.cpp loads the file and continues the prompt as the lab does is
also the check that an exported file serves llama.cpp users.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from llama_core.formats import LoadedModel
from llama_core.formats.gguf_write import save_gguf

BLOCKS = {"int8": "q8_0", "int4": "q4_1"}  # the lab's quantization -> the GGUF block type llama.cpp reads


def llamacpp_unavailable_reason() -> str | None:
    if importlib.util.find_spec("llama_cpp") is None:
        return ("llama.cpp's Python binding is not installed: `pip install llama-cpp-python` (it compiles llama.cpp, "
                "a few minutes on a small machine)")
    return None


def gguf_for(loaded: LoadedModel, mode: str, own: str, folder: Path) -> Path:
    """The GGUF file llama.cpp runs for `mode`: the checkpoint's own file where it is stored that way,
    else the lab's export of its float model."""
    if mode == own and loaded.source.suffix == ".gguf":
        return loaded.source
    out = folder / f"{loaded.source.stem}-{BLOCKS[mode]}.gguf"
    return save_gguf(loaded.model, out, loaded.tokenizer, BLOCKS[mode], add_bos=loaded.add_bos)


def llamacpp_generate(gguf: Path, prompt: list[int], new: int, threads: int) -> Callable[[], list[int]]:
    """A closure: llama.cpp's greedy continuation of `prompt` by `new` tokens (ids in, ids out)."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(gguf), n_ctx=len(prompt) + new, n_batch=len(prompt), n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    vocab = llm.n_vocab()

    def last_logits() -> np.ndarray:  # the last evaluated position's, read in place (llama.cpp's C API)
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(vocab,))

    def run() -> list[int]:
        llm.reset()
        llm.eval(prompt)
        out = []
        for _ in range(new):
            out.append(int(np.argmax(last_logits())))
            llm.eval(out[-1:])
        return out

    return run


def check_llamacpp(checkpoint: str | None, modes: list[str]) -> None:
    """Refuse `--vs llamacpp` before anything is loaded, saying what to change."""
    if reason := llamacpp_unavailable_reason():
        raise ValueError(reason)
    if checkpoint is None:
        raise ValueError("--vs llamacpp needs --checkpoint (a run or smollm2): llama.cpp loads a file with its "
                         "vocabulary, which a random-weight preset has not")
    if not any(m in BLOCKS for m in modes):
        raise ValueError("--vs llamacpp compares GGUF block types: give --quant int8, int4 or all")


def llamacpp_sides(loaded: LoadedModel, modes: list[str], own: str, prompt: list[int], new: int,
                   threads: int) -> dict[str, Callable[[], list[int]]]:
    """'llama.cpp int8' / 'llama.cpp int4' sides for the quantized modes in `modes` of the checkpoint
    `loaded` (float, as `load_model` gives it); `check_llamacpp` has accepted them."""
    folder = Path(tempfile.mkdtemp(prefix="lab-llamacpp-"))
    try:  # llama.cpp has read (or mapped) each file once its Llama exists
        return {f"llama.cpp {m}": llamacpp_generate(gguf_for(loaded, m, own, folder), prompt, new, threads)
                for m in modes if m in BLOCKS}
    finally:
        shutil.rmtree(folder, ignore_errors=True)
