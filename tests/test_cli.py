"""Every `python -m lab` command as users run it, in a subprocess, on tiny sizes.

`train`, `export` and `sweep` have their own tests (test_train.py, test_formats.py, test_sweep.py);
these cover the rest: presets, runs, sample, tokenizer, bench train --vs hf, eval and chat with the
bundled SmolLM2, and `make run`'s `lab demo` (trained once, resumed when interrupted, not retrained
when finished, samples printed).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import held_env, stop_while_held, wait_until_held
from llama_core.data import shakespeare_files
from llama_core.run_folder import RunFolder, read_state
from llama_core.tokenizer import SentencePieceTokenizer


def lab(*args, env=None, input=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """`python -m lab ARGS...`; its stdout and stderr as text."""
    done = subprocess.run([sys.executable, "-m", "lab", *map(str, args)], env=env, input=input, text=True,
                          capture_output=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def hamlet():
    return str(next(f for f in shakespeare_files() if "hamlet" in f.name))


def test_presets_prints_table_2_with_our_exact_counts():
    out = lab("presets").stdout
    for name, printed in (("llama-7b", "6.7B"), ("llama-13b", "13.0B"), ("llama-33b", "32.5B"),
                          ("llama-65b", "65.2B")):
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert row.split()[-4:-2] == [printed, printed] and row.endswith(" ok"), row
    assert "MISMATCH" not in out and "lab-1m" in out


def test_runs_lists_the_runs_and_says_when_there_are_none(tiny_runs_dir, tmp_path):
    row = next(line for line in lab("runs", "--runs-dir", tiny_runs_dir).stdout.splitlines()
               if line.startswith("tiny-hamlet"))
    assert "finished" in row
    assert "no runs under" in lab("runs", "--runs-dir", tmp_path / "empty").stdout


def test_sample_continues_the_prompt_from_a_run(tiny_runs_dir):
    out = lab("sample", "--run", "tiny-hamlet", "--runs-dir", tiny_runs_dir, "--prompt", "HAMLET:", "--num", 2,
              "--max-new-tokens", 8).stdout
    texts = re.split(r"--- sample \d ---\n", out)[1:]
    assert len(texts) == 2 and all(t.startswith("HAMLET:") for t in texts)
    missing = lab("sample", "--run", "missing", "--runs-dir", tiny_runs_dir, check=False)
    assert missing.returncode == 2 and "error:" in missing.stderr and "missing" in missing.stderr


def test_tokenizer_trains_saves_and_round_trips(tmp_path, hamlet):
    out_file = tmp_path / "tok.model"
    out = lab("tokenizer", "--data", hamlet, "--vocab", 512, "--out", out_file).stdout
    tok = SentencePieceTokenizer.load(out_file)
    assert tok.vocab_size == 512 and f"fingerprint {tok.fingerprint}" in out
    text = "To be, or not to be: that is the question. In 1599, ÿ"
    assert tok.decode(tok.encode(text)) == text


def test_bench_train_against_hugging_face_writes_one_record(tmp_path):
    out_file = tmp_path / "train.jsonl"
    out = lab("bench", "train", "--preset", "lab-1m", "--batch", 1, "--seq", 16, "--steps", 1, "--rounds", 1,
              "--vs", "hf", "--out", out_file).stdout
    printed = json.loads(out.strip().splitlines()[-1])
    assert [json.loads(line) for line in out_file.read_text().splitlines()] == [printed]
    print(f"\nbench train --vs hf: {printed}")  # a figure to read, not a limit to assert
    assert printed["bench"] == "train" and printed["preset"] == "lab-1m"
    assert printed["tokens_per_s"] > 0 and printed["hf_tokens_per_s"] > 0 and printed["ratio_vs_hf"] > 0


def test_eval_scores_smollm2_on_two_items():
    done = lab("eval", "--checkpoint", "smollm2", "--limit", 2)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["format"] == "gguf"
    task = result["task"]
    print(f"\neval smollm2 --limit 2: {task}")
    assert task["n"] == 2 and 0.0 <= task["accuracy"] <= 1.0


def _replies(stdout: str) -> list[str]:
    """The text of each `model> ...` reply in a chat transcript."""
    return re.findall(r"model> (.*?)\n\[\d+ tokens in ", stdout, flags=re.S)


def test_chat_with_smollm2_and_reset_really_clears_the_history():
    question = "What is my name?"
    script = [question, "My name is Zanzibar.", question, "/reset", question, "/quit"]
    done = lab("chat", "--temperature", 0, "--max-new-tokens", 12, input="\n".join(script) + "\n")
    fresh, _, remembered, after_reset = _replies(done.stdout)
    print(f"\nfresh: {fresh!r}\nwith the history: {remembered!r}\nafter /reset: {after_reset!r}")
    assert remembered != fresh  # the history changes the greedy reply, so the test can see it go
    assert after_reset == fresh  # after /reset the model sees exactly a fresh conversation


def test_demo_trains_once_resumes_when_interrupted_and_prints_samples(tmp_path):
    from lab.cli.demo import DEMO_NAME, PROMPTS
    from lab.laws import load_law

    recipe = load_law("shakespeare").train  # what the demo trains with
    steps, stop_at = 16, 8
    env = dict(os.environ, LLAMA_LAB_CACHE=str(tmp_path / "cache"))
    args = ["demo", "--runs-dir", tmp_path / "runs", "--preset", "sweep-d64",
            "--tokens", steps * recipe["batch_size"] * recipe["seq_len"]]
    run = RunFolder(tmp_path / "runs" / DEMO_NAME)

    # SIGKILL (a closed terminal, a power cut) after step 2, before the first checkpoint: a record, nothing to resume
    marker = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-m", "lab", *map(str, args)], env=held_env(
        env, "step-done", 2, marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_held(proc, marker, timeout=600)
    finally:
        proc.kill()
        proc.wait()
    marker.unlink()
    assert run.is_run() and run.latest_valid_checkpoint() is None

    # Ctrl-C after step 8, as a user stops `make run`: it saves a checkpoint there and exits
    proc = subprocess.Popen([sys.executable, "-m", "lab", *map(str, args)], env=held_env(
        env, "step-done", stop_at, marker), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until_held(proc, marker, timeout=600)
        stop_while_held(proc, signal.SIGINT, marker)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "training it again from the start" in out and run.read_config()["status"] == "interrupted"
    assert read_state(run.latest_valid_checkpoint())["step"] == stop_at

    resumed = lab(*args, env=env).stdout
    assert "Resuming the demo model" in resumed and run.read_config()["status"] == "finished"
    logged = [m["step"] for m in run.read_metrics()]
    assert logged == sorted(set(logged)) and stop_at in logged and logged[-1] == steps  # continued, not restarted
    assert all(f"--- {prompt!r} ---" in resumed for prompt in PROMPTS)

    finished_metrics = run.metrics_path.read_bytes()
    again = lab(*args, env=env).stdout
    assert "already trained" in again and "Training" not in again and "Resuming" not in again
    assert run.metrics_path.read_bytes() == finished_metrics
    assert all(f"--- {prompt!r} ---" in again for prompt in PROMPTS)
