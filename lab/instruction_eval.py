"""Before and after an instruction finetune, the paper's way: held-out questions as multiple choice
(each choice's log-likelihood as the assistant's reply, normalised by its length in characters, as
in the paper's zero-shot tasks), the assistant-token loss on held-out conversations, and the lab's
evaluation suites (lab.evals) on the base and on the finetuned model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch

from lab.instructions import Question
from llama_core.chat import ChatTemplate, Message
from llama_core.loglikelihood import fit_context, loglikelihoods
from llama_core.model import Transformer
from llama_core.sft import SFTBatches, fit, segments
from llama_core.tokenizer import Tokenizer


def reply_tokens(template: ChatTemplate, tokenizer: Tokenizer, answer: str, add_bos: bool) -> list[int]:
    """The tokens of `answer` as the assistant's whole reply (its end marker included)."""
    parts = segments(template, [Message("user", "?"), Message("assistant", answer)], tokenizer, add_bos)
    return [t for ids, mine in parts if mine for t in ids]


def choice_accuracy(model: Transformer, tokenizer: Tokenizer, template: ChatTemplate,
                    questions: Sequence[Question], add_bos: bool = True) -> dict[str, float]:
    """Accuracy per kind (and overall) over the questions that have choices."""
    asked = [q for q in questions if q.choices]
    if not asked:
        return {}
    requests, spans = [], []
    for q in asked:
        context = template.render([Message("user", q.prompt)], tokenizer, add_bos)
        conts = [reply_tokens(template, tokenizer, c, add_bos) for c in q.choices]
        fitted = fit_context(context, conts, model.config.max_seq_len)
        spans.append((len(requests), len(conts)))
        requests += [(fitted.context, c) for c in conts]
    scores = loglikelihoods(model, requests)
    right: dict[str, list[bool]] = {}
    for q, (start, n) in zip(asked, spans):
        normed = [scores[start + i] / max(1, len(c)) for i, c in enumerate(q.choices)]
        right.setdefault(q.kind, []).append(q.choices[max(range(n), key=normed.__getitem__)] == q.answer)
    out = {f"{kind}_accuracy": sum(v) / len(v) for kind, v in right.items()}
    out["choice_accuracy"] = sum(sum(v) for v in right.values()) / len(asked)
    out["questions"] = len(asked)
    return out


@torch.inference_mode()
def assistant_loss(model: Transformer, tokenizer: Tokenizer, template: ChatTemplate,
                   conversations: Sequence[Sequence[Message]], add_bos: bool = True, batch_size: int = 16) -> float:
    """Mean cross-entropy over the assistant tokens of `conversations` (token-weighted)."""
    fitted = fit(template, conversations, tokenizer, model.config.max_seq_len + 1, add_bos)
    batches = SFTBatches(fitted.examples, batch_size, shuffle=False)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    for i in range(len(batches)):
        x, y = batches.batch_at(i)
        if i == len(batches) - 1:  # the last batch wraps around to the first examples: keep each once
            keep = len(fitted.examples) - i * batches.batch_size
            x, y = x[:keep], y[:keep]
        logits, _ = model(x)
        targets = y.flatten()
        losses = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), targets, ignore_index=-100,
                                                   reduction="sum")
        total += losses.item()
        count += int((targets != -100).sum())
    model.train(was_training)
    return total / max(1, count)


def measure(model: Transformer, tokenizer: Tokenizer, template: ChatTemplate, questions: Sequence[Question],
            add_bos: bool = True) -> dict[str, float]:
    """Held-out assistant-token loss and multiple-choice accuracy of one model."""
    return {"assistant_loss": assistant_loss(model, tokenizer, template, [q.conversation() for q in questions],
                                             add_bos),
            **choice_accuracy(model, tokenizer, template, questions, add_bos)}


def before_after(base: str, finetuned: str, questions: Sequence[Question]) -> dict[str, dict[str, float]]:
    """`measure` of the base checkpoint and of the finetuned run, both prompted with the run's template."""
    from llama_core.chat import get_template
    from llama_core.formats import load_model

    tuned = load_model(finetuned)
    template = get_template(tuned.chat_template)
    out = {}
    for label, loaded in (("before", load_model(base)), ("after", tuned)):
        out[label] = measure(loaded.model, loaded.tokenizer, template, questions, tuned.add_bos)
    return out


def spread(questions: Sequence[Question], n: int) -> list[Question]:
    """`n` questions taken evenly through the list (every kind and play, not the first play's)."""
    if n >= len(questions):
        return list(questions)
    return [questions[i * len(questions) // n] for i in range(n)]


def suite_before_after(run_dir: str | Path, suite: str, limit: int | None = None, only: Sequence[str] | None = None,
                       runs_dir: str | Path = "runs") -> dict[str, dict]:
    """Score a finetune's base ("before") and the run itself ("after") on an evaluation suite, the same
    documents for both; each result is stored as `lab eval --suite` stores it (lab.evals.records: the
    run's own evals.jsonl, the base's where its evaluations live), marked with the run and its side."""
    from lab.evals import records
    from lab.evals.harness import evaluate_suite
    from llama_core.adapted import BASE
    from llama_core.formats import load_model
    from llama_core.run_folder import RunFolder

    run = RunFolder(run_dir)
    out = {}
    for side, path in (("before", run.read_config()[BASE]["path"]), ("after", str(run.path))):
        start = time.perf_counter()
        loaded = load_model(path)
        results = evaluate_suite(loaded.model, loaded.tokenizer, suite, loaded.add_bos, limit=limit, only=only)
        settings = {"limit": limit, "only": list(only) if only else None, "finetune": run.path.name, "side": side}
        out[side] = records.make_record(str(loaded.source), loaded.format, suite, settings, results,
                                        time.perf_counter() - start)
        records.save(out[side], runs_dir)
    return out


def suite_table(before: dict, after: dict) -> list[dict]:
    """A row per task (and MMLU category) of two suite records: base %, finetuned %, change, n."""
    def pct(r: dict) -> float | None:
        return None if r.get("accuracy") is None else 100 * r["accuracy"]

    rows = []
    for task, r in after["results"].items():
        pairs = [(task, before["results"][task], r)]
        pairs += [(f"{task}/{c}", before["results"][task]["categories"][c], rc)
                  for c, rc in r.get("categories", {}).items()]
        for name, b, a in pairs:
            change = None if pct(a) is None or pct(b) is None else pct(a) - pct(b)
            rows.append({"task": name, "base %": pct(b), "finetuned %": pct(a), "change": change, "n": a["n"]})
    return rows
