"""`python -m lab sample --run RUN --prompt TEXT`: continue a prompt with a trained run."""

from __future__ import annotations

from lab.sampling import run_dir_of, samples
from llama_core.quantize import MODES


def add_arguments(parser) -> None:
    parser.add_argument("--run", required=True, help="run name under --runs-dir, or a run folder")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--prompt", default="")
    parser.add_argument("--num", type=int, default=1, help="how many samples")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quant", choices=MODES, default="none",
                        help="weight quantization for decoding (none keeps float32, in the packed layout)")
    parser.add_argument("--compile", action="store_true",
                        help="compile the decode step (llama_core.compiled): the first sample waits for the "
                        "compilation (about 1.5 minutes for lab-110m on a 2-core CPU), later ones are faster")


def run(args) -> int:
    texts = samples(run_dir_of(args.run, args.runs_dir), args.prompt, args.num, args.max_new_tokens,
                    args.temperature, args.top_k, args.top_p, args.seed, args.device, args.quant,
                    args.compile)
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} ---\n{text}\n")
    return 0
