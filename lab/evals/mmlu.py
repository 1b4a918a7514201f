"""MMLU (Hendrycks et al., 2021) the paper's way: 5-shot, the subject's dev examples in order as shots,
the answer scored by its letter; accuracy per subject, per category, and over all questions.

The prompt is Hendrycks et al.'s: a subject line, then each question with its choices labelled
A-D and "Answer:"; the shots end with their answer letter and a blank line. (Their code prints
the subject with a doubled space, "about  abstract algebra"; lm-eval and this lab use one.)
"""

from __future__ import annotations

LETTERS = "ABCD"
CATEGORIES = ("Humanities", "STEM", "Social Sciences", "Other")

# The 57 subjects and their category (Hendrycks et al.'s categories.py, as lm-eval groups them).
_BY_CATEGORY = {
    "Humanities": """formal_logic high_school_european_history high_school_us_history high_school_world_history
        international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy prehistory
        professional_law world_religions""",
    "STEM": """abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science
        college_mathematics college_physics computer_security conceptual_physics electrical_engineering
        elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science
        high_school_mathematics high_school_physics high_school_statistics machine_learning""",
    "Social Sciences": """econometrics high_school_geography high_school_government_and_politics
        high_school_macroeconomics high_school_microeconomics high_school_psychology human_sexuality
        professional_psychology public_relations security_studies sociology us_foreign_policy""",
    "Other": """business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing
        medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology""",
}
SUBJECT_CATEGORY: dict[str, str] = {s: c for c, names in _BY_CATEGORY.items() for s in names.split()}


def header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def format_example(row: dict, with_answer: bool) -> str:
    """A question, its lettered choices and "Answer:" (followed by the letter for a shot)."""
    lines = [row["question"].strip(), *(f"{L}. {c}" for L, c in zip(LETTERS, row["choices"])), "Answer:"]
    text = "\n".join(lines)
    return f"{text} {LETTERS[row['answer']]}\n\n" if with_answer else text


def prompt(subject: str, shots: list[dict], row: dict) -> str:
    """The context for `row`: the subject line, then the shots in the given order, then the question."""
    return header(subject) + "".join(format_example(s, True) for s in shots) + format_example(row, False)


def check_row(row: dict, where: str) -> None:
    if len(row.get("choices", ())) != len(LETTERS) or not 0 <= int(row.get("answer", -1)) < len(LETTERS):
        raise ValueError(f"{where}: an MMLU question needs 4 choices and an answer index 0-3, got {row}")
