"""The demo's model size and token count for a time budget, chosen by a scaling law: pure functions.

Each candidate shape trains at its own measured rate (tokens per second on this machine), so a
budget of seconds buys it `rate x budget` tokens; the law (bits per byte, comparable across
vocabularies) predicts where each would end, and the lowest prediction wins. This is Hoffmann et
al.'s compute-optimal allocation with the machine's real costs in place of C = 6ND: a faster
machine or a larger budget moves the choice to larger models and more tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.scaling import LawCoefficients, predict_loss


@dataclass(frozen=True)
class Option:
    """One candidate shape under the budget: its size, its rate, the tokens it affords, the law's loss."""

    preset: str
    n_params: int
    tokens_per_s: float
    tokens: int
    predicted: float


@dataclass(frozen=True)
class Choice:
    """The chosen option and every option considered (in the order given), for the budget."""

    best: Option
    options: tuple[Option, ...]
    budget_s: float
    note: str = ""  # set when the budget affords no candidate a step


def affordable_tokens(tokens_per_s: float, budget_s: float, step_tokens: int) -> int:
    """Whole optimizer steps of `step_tokens` that fit in `budget_s` at `tokens_per_s`."""
    return int(tokens_per_s * budget_s // step_tokens) * step_tokens


def choose(law: LawCoefficients, rates: dict[str, tuple[int, float]], budget_s: float,
           step_tokens: int = 1, max_tokens: int | None = None) -> Choice:
    """The candidate with the lowest predicted loss after `budget_s` seconds of training.

    `rates` maps a candidate's name to (parameters N, measured training tokens per second).
    Candidates that cannot afford one whole step are left out; `max_tokens`, where given, caps
    any candidate's tokens.
    """
    if budget_s <= 0:
        raise ValueError(f"the time budget must be positive, got {budget_s} s")
    if not rates:
        raise ValueError("no candidate shapes to choose from")
    options = []
    for name, (n_params, rate) in rates.items():
        if n_params <= 0 or rate <= 0:
            raise ValueError(f"candidate {name!r}: parameters and tokens/s must be positive, "
                             f"got {n_params} and {rate}")
        tokens = affordable_tokens(rate, budget_s, step_tokens)
        if max_tokens is not None:
            tokens = min(tokens, max_tokens // step_tokens * step_tokens)
        if tokens >= step_tokens:
            options.append(Option(name, int(n_params), float(rate), tokens,
                                  float(predict_loss(law, n_params, tokens))))
    if not options:  # the fastest candidate for one step: the least that still trains something
        name, (n_params, rate) = max(rates.items(), key=lambda kv: kv[1][1])
        best = Option(name, int(n_params), float(rate), step_tokens,
                      float(predict_loss(law, n_params, step_tokens)))
        return Choice(best, (best,), float(budget_s),
                      note=f"{budget_s:g} s affords no candidate a whole step; one step of the fastest, "
                           f"{name} ({step_tokens / rate:.3g} s)")
    best = min(options, key=lambda o: (o.predicted, o.n_params))
    return Choice(best, tuple(options), float(budget_s))


def explain(choice: Choice) -> list[str]:
    """Lines that say what was chosen and why: every option's size, tokens and predicted loss."""
    lines = [f"{'shape':<12} {'params':>9} {'tokens/s':>9} {'tokens':>11} {'predicted bits/byte':>20}"]
    for o in sorted(choice.options, key=lambda o: o.n_params):
        mark = "  <- lowest" if o == choice.best else ""
        lines.append(f"{o.preset:<12} {o.n_params:>9,} {o.tokens_per_s:>9,.0f} {o.tokens:>11,} "
                     f"{o.predicted:>20.3f}{mark}")
    return lines + ([f"({choice.note})"] if choice.note else [])
