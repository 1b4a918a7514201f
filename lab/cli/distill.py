"""`python -m lab distill --out FILE.jsonl [--teacher smollm2] [--prompts shakespeare|FILE] [--num N]`.

Instructions answered by a teacher chat model, written as chat-format JSONL for `lab finetune`
(lab.distill: the Alpaca recipe, offline).
"""

from __future__ import annotations

import sys
import time

from tqdm.auto import tqdm

from lab.cli.options import add_threads
from lab.distill import SHAKESPEARE, distill, read_prompts, shakespeare_prompts, write
from llama_core.devices import resolve_device
from llama_core.formats import load_model
from llama_core.generate import Sampling
from llama_core.quantize import MODES, for_decoding


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="the JSONL file to write (chat format)")
    parser.add_argument("--teacher", default="smollm2", help="a chat checkpoint: smollm2, a .gguf, an HF folder, a run")
    parser.add_argument("--prompts", default=SHAKESPEARE,
                        help="shakespeare (instructions built from the training works) or a file: a line of text "
                             "each, or JSONL with instruction/input or prompt")
    parser.add_argument("--num", type=int, default=200,
                        help="how many instructions (shakespeare), or the first N of a file")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy, repeatable")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quant", choices=MODES, default="none", help="the teacher's weights for decoding")
    parser.add_argument("--device", default="auto")
    add_threads(parser)


def run(args) -> int:
    if args.num < 1:
        raise ValueError(f"--num must be at least 1, got {args.num}")
    prompts = shakespeare_prompts(args.num, args.seed) if args.prompts == SHAKESPEARE else \
        read_prompts(args.prompts)[:args.num]
    teacher = load_model(args.teacher, device=resolve_device(args.device))
    for_decoding(teacher.model, args.quant)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    start = time.perf_counter()
    with tqdm(total=len(prompts), desc=f"answering with {teacher.source.name}", unit="instr", file=sys.stderr) as bar:
        conversations = distill(teacher, prompts, sampling, args.batch_size,
                                progress=lambda done, total: bar.update(done - bar.n))
    path = write(conversations, args.out)
    print(f"wrote {len(conversations)} conversations ({len(prompts) - len(conversations)} empty replies left out) "
          f"to {path} in {time.perf_counter() - start:.0f} s; finetune on it with "
          f"python -m lab finetune --checkpoint RUN --data {path} --name NAME", file=sys.stderr)
    return 0
