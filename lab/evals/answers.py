"""Scoring generated answers: exact match for closed-book QA, final answers of GSM8K and MATH, maj@k, pass@k.

Pure functions of strings and counts, each following a published convention named in its docstring:
the SQuAD answer normalisation that open-domain QA uses for NaturalQuestions and TriviaQA; GSM8K's
"#### answer" (Cobbe et al., 2021) and the "The answer is" of Wei et al.'s (2022) exemplars; MATH's
last \\boxed answer and string equivalence (Hendrycks et al., 2021) with Minerva's "The final answer
is" line (Lewkowycz et al., 2022); the unbiased pass@k of Chen et al. (2021). MATH equivalence is of
simple forms, not algebra: "2x+1" and "1+2x" differ.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# Closed-book QA and GSM8K
# SQuAD's punctuation is string.punctuation; TriviaQA's evaluation also drops these typographic quotes.
_PUNCTUATION = frozenset(string.punctuation) | {"\u2018", "\u2019", "\u00b4", "`"}
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# A number as written in a solution: thousands groups or plain digits, an optional decimal part, or
# ".5". A minus (spaced or not, "- 10" in GSM8K's own rationales) is a sign unless it follows a digit
# or a bracket, where it subtracts ("20 - 10").
_NUMBER = re.compile(
    r"(?:(?<![\d)\]])(?<![\d)\]]\s)(-)\s?)?\$?(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)
_ANSWER_MARKER = re.compile(r"the answer is|####", re.IGNORECASE)

# MATH
_BOXED = re.compile(r"\\(?:boxed|fbox)")
_FINAL_ANSWER = re.compile(r"final answer is", re.IGNORECASE)
# Deleted outright: TeX spacing, \left/\right sizing, degrees and percent signs, escaped dollars.
_CONTROL_SPACE = re.compile(r"(?<!\\)\\ ")  # "\ ", not the "\\" row break of "6 \\ 3"
_DELETED = (",\\!", "\\!", "\\,", "\\;", "\\:", "~", "\\left", "\\right", "^{\\circ}", "^\\circ", "\u00b0",
            "\\%", "%", "\\$", "$", "{,}", "\\displaystyle")
# The packaged gold answers went through Minerva's normalisation, which deletes the unit "ft" anywhere:
# "\left(" became "\le(" and "\infty" became "\iny". Undone on both sides so the true forms compare.
_MANGLED_LEFT = re.compile(r"\\le(?=[(\[|.]|\\\{)")
_MANGLED_INFTY = re.compile(r"\\iny(?![a-zA-Z])")
# Units written as text after a value ("5\text{ cm}^2", "10 \mbox{inches}"): Hendrycks drops them.
_TRAILING_UNITS = re.compile(r"(?<=.)\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z ]*\.?\s*\}(?:\^\{?\d\}?)?$")
_TEXT_AND = re.compile(r",?\s*\\(?:text|mbox)\{\s*and\s*\}\s*")  # "3, 4, \text{and} 5" lists 3,4,5
_TEXT_WRAPPERS = re.compile(r"\\(?:text|textbf|mbox|mathrm|mathbf)\{([^{}]*)\}")
# "x = 5" and "x \in [2, 3]" name the answer's variable; the answer is the right-hand side.
_VARIABLE_PREFIX = re.compile(r"^(?:[a-zA-Z]|\\[a-zA-Z]+)(?:=|\\in(?![a-zA-Z]))")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_INTEGER_SLASH = re.compile(r"(-?\d+)/(\d+)")
_CHOICE = re.compile(r"\(([A-Z])\)")
_DECIMAL = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION = re.compile(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}")


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation (Rajpurkar et al., 2016), which open-domain QA (Lee et al., 2019;
    Karpukhin et al., 2020) applies to NaturalQuestions and TriviaQA alike: lower case, punctuation
    removed, the articles a/an/the removed, whitespace collapsed. TriviaQA's typographic quotes count
    as punctuation and its underscores as spaces.
    """
    text = text.lower().replace("_", " ")
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> bool:
    """Whether the normalised prediction equals the normalised form of any gold alias (SQuAD's EM, max
    over the golds). An empty prediction matches nothing, not even a gold that normalises to empty.
    """
    if isinstance(golds, str) or not golds:
        raise ValueError(f"golds must be a non-empty list of gold answers, got {golds!r}")
    predicted = normalize_answer(prediction)
    return bool(predicted) and any(predicted == normalize_answer(gold) for gold in golds)


def first_line(text: str) -> str:
    """The generated answer up to its first newline, stripped: closed-book QA generates until a newline."""
    return text.split("\n", 1)[0].strip()


def normalize_number(s: str) -> str:
    """A number in one canonical spelling: "1,000" -> "1000", "$18.00" -> "18", "3.50" -> "3.5",
    "-0" -> "0". Dollar signs, thousands commas, spaces and a closing full stop are dropped. ValueError
    if what remains is not a decimal number.
    """
    cleaned = s.strip().replace("$", "").replace(",", "").replace(" ", "").rstrip(".")
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise ValueError(f"{s!r} is not a number (expected digits such as '1,000', '$18.00' or '-3.5')") from None
    if not value.is_finite():
        raise ValueError(f"{s!r} is not a finite number")
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def gsm8k_gold(answer_field: str) -> str:
    """The gold number of a GSM8K `answer` field: what follows its final '####' (Cobbe et al., 2021),
    normalised by `normalize_number`.
    """
    if "####" not in answer_field:
        raise ValueError(f"a GSM8K answer ends with '#### <number>'; this one has no '####': {answer_field[-80:]!r}")
    return normalize_number(answer_field.rsplit("####", 1)[1])


def gsm8k_prediction(generated: str) -> str | None:
    """The final answer of a generated chain of thought: the first number after the last "The answer
    is" (Wei et al.'s exemplars) or "####" (GSM8K's own format), else the last number in the text;
    normalised by `normalize_number`. None if there is no number.
    """
    markers = list(_ANSWER_MARKER.finditer(generated))
    if markers:
        after = _NUMBER.search(generated, markers[-1].end())
        if after is not None:
            return _number_text(after)
    numbers = list(_NUMBER.finditer(generated))
    return _number_text(numbers[-1]) if numbers else None


def _number_text(match: re.Match[str]) -> str:
    sign, digits = match.groups()
    return normalize_number((sign or "") + digits)


def math_prediction(generated: str) -> str | None:
    """The answer of a generated MATH solution: the content of its last \\boxed{...} (braces balanced;
    also "\\boxed 5" and \\fbox), else the expression after its last "The final answer is" (Minerva's
    format), without the surrounding $...$. None when neither is there.
    """
    for match in reversed(list(_BOXED.finditer(generated))):
        content = _box_content(generated, match.end())
        if content:
            return content
    finals = list(_FINAL_ANSWER.finditer(generated))
    if not finals:
        return None
    line = generated[finals[-1].end():].split("\n", 1)[0]
    line = re.split(r"\.?\s*I hope it is correct", line, maxsplit=1)[0].strip().rstrip(".").strip()
    if len(line) >= 2 and line.startswith("$") and line.endswith("$"):
        line = line.strip("$").strip()
    return line or None


def math_gold(solution: str) -> str:
    """The gold answer of a MATH problem: the last \\boxed{...} of its reference solution, as
    Hendrycks et al. score it. Prefer it to the packaged `answer` field, which went through Minerva's
    lossy normalisation (lists lose their commas, "x + y = 13" keeps only "13").
    """
    gold = math_prediction(solution)
    if gold is None:
        raise ValueError(f"a MATH reference solution ends with a \\boxed answer; this one has none: {solution[-80:]!r}")
    return gold


def _box_content(text: str, start: int) -> str | None:
    """What a \\boxed command starting its argument at `start` holds; None if the box is cut off."""
    if text.startswith("{", start):
        group = _braced(text, start)
        return None if group is None else group[0].strip()
    if start < len(text) and text[start].isspace():
        # "\boxed 5$": the argument runs to the closing dollar or the line's end.
        return re.split(r"[$\n]", text[start:].lstrip(" "), maxsplit=1)[0].strip() or None
    return None


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at text[start] and the index after it; None if unclosed."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
    return None


def math_normalize(expr: str) -> str:
    """A canonical spelling of a MATH answer, after Hendrycks et al.'s `_strip_string`: no spaces,
    \\left/\\right, \\! and other TeX spacing, degrees, percent or dollar signs; units in trailing text
    dropped and other \\text{...} unwrapped; dfrac/tfrac as frac; shorthand \\frac12 and \\sqrt3 braced;
    ".5" as "0.5"; a leading "x =" (one variable) dropped; "1,000" as "1000"; integer a/b as
    \\frac{a}{b}; a choice "(C)" as "C"; a trailing full stop dropped.
    """
    s = expr.replace("\n", " ").strip()
    s = _MANGLED_LEFT.sub("", s)
    s = _MANGLED_INFTY.sub(r"\\infty", s)
    s = _CONTROL_SPACE.sub("", s).replace("\\\\", "\\")  # matrix rows: "6 \\ 3" as "6\3", like the golds
    for deleted in _DELETED:
        s = s.replace(deleted, "")
    s = s.strip().rstrip(".").strip()
    s = _TRAILING_UNITS.sub("", s).strip()
    s = _TEXT_AND.sub(",", s)
    s = _TEXT_WRAPPERS.sub(lambda m: m.group(1), s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = "".join(s.split())
    while "{}" in s:  # an empty group typesets nothing ("\frac{9}{{}19}")
        s = s.replace("{}", "")
    s = _brace_shorthand(s)
    s = _VARIABLE_PREFIX.sub("", s, count=1) if s.count("=") <= 1 else s
    s = re.sub(r"(?<![\d.])\.(\d)", r"0.\1", s)
    s = s.rstrip(".")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if (slash := _INTEGER_SLASH.fullmatch(s)) is not None:
        numerator, denominator = slash.groups()
        sign = "-" if numerator.startswith("-") else ""
        s = f"{sign}\\frac{{{numerator.lstrip('-')}}}{{{denominator}}}"
    if (choice := _CHOICE.fullmatch(s)) is not None:
        s = choice.group(1)
    return s


def _brace_shorthand(s: str) -> str:
    """\\frac12 -> \\frac{1}{2}, \\frac1{72} -> \\frac{1}{72}, \\sqrt3 -> \\sqrt{3}: TeX's one-token
    arguments written out as brace groups (Hendrycks' `_fix_fracs` and `_fix_sqrt`)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        command = re.match(r"\\(frac|sqrt)(?![a-zA-Z])", s[i:])
        if command is None:
            out.append(s[i])
            i += 1
            continue
        out.append(command.group(0))
        i += command.end()
        if command.group(1) == "sqrt" and s.startswith("[", i):  # \sqrt[3]{x}: the index stays as written
            close = s.find("]", i)
            if close < 0:
                break
            out.append(s[i:close + 1])
            i = close + 1
        for _ in range(2 if command.group(1) == "frac" else 1):
            if i >= len(s):
                break
            group = _braced(s, i) if s[i] == "{" else None
            if group is not None:
                out.append("{" + _brace_shorthand(group[0]) + "}")
                i = group[1]
            elif s[i] == "\\":  # a command as the argument, e.g. \sqrt\pi
                name = re.match(r"\\[a-zA-Z]+", s[i:])
                token = name.group(0) if name else s[i:i + 2]
                out.append("{" + token + "}")
                i += len(token)
            else:
                out.append("{" + s[i] + "}")
                i += 1
    return "".join(out) + s[i:]


def math_equal(prediction: str | None, gold: str) -> bool:
    """Whether a predicted MATH answer equals the gold one: the same after `math_normalize`, or both
    plain numbers or integer fractions of equal value ("0.5", "\\frac{1}{2}", "1/2", "\\frac{2}{4}").
    A missing prediction is wrong.
    """
    if prediction is None:
        return False
    predicted, expected = math_normalize(prediction), math_normalize(gold)
    if not predicted:
        return False
    if predicted == expected:
        return True
    a, b = _as_fraction(predicted), _as_fraction(expected)
    return a is not None and a == b


def _as_fraction(s: str) -> Fraction | None:
    """The exact value of a normalised plain number or integer fraction; None for anything else."""
    if _DECIMAL.fullmatch(s):
        return Fraction(s)
    frac = _FRACTION.fullmatch(s)
    if frac is None or int(frac.group(3)) == 0:
        return None
    value = Fraction(int(frac.group(2)), int(frac.group(3)))
    return -value if frac.group(1) else value


def majority(answers: Sequence[str | None]) -> str | None:
    """maj@k (Lewkowycz et al., 2022): the most common answer that is not None, a tie going to the one
    that occurs first; None if every answer is None.
    """
    counts = Counter(a for a in answers if a is not None)
    # A Counter iterates in first-seen order and max keeps the first of equal counts.
    return max(counts, key=counts.__getitem__) if counts else None


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), the chance that k
    of n samples, c of them correct, hold at least one correct one. Computed as their product form,
    1 - prod_{i=n-c+1}^{n} (1 - k/i), which stays finite and accurate where the binomials grow huge.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass@k takes whole numbers; {name} = {value!r}")
    if n < 1:
        raise ValueError(f"n (samples per problem) must be at least 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c (correct samples) must lie in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must lie in [1, n={n}]: pass@{k} needs at least {k} samples per problem, got {n}")
    if n - c < k:
        return 1.0
    missed = 1.0
    for i in range(n - c + 1, n + 1):
        missed *= 1.0 - k / i
    return 1.0 - missed
