"""Every notebook runs end to end on small parameters, is stored without outputs, and matches its .py;
`make lab` serves them on the lab's kernel."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import papermill
import pytest

from llama_core.data import shakespeare_files
from llama_core.run_folder import RunFolder

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
IPYNBS = sorted(NOTEBOOKS.glob("*.ipynb"))
KERNEL = "llama-lab-test"

# Small parameters per notebook, so the suite stays fast on 2 CPU cores; `runs_dir` is filled in
# by the test (a temporary folder).
_SMALL_SWEEP = {  # notebooks 02 and 03: a few tiny runs on Hamlet, seconds each
    "sweep_name": "small", "data": str(next(f for f in shakespeare_files() if "hamlet" in f.name)),
    "vocab_size": 512, "threads": 1, "progress": False,
    "train": {"batch_size": 4, "seq_len": 32, "lr": 3e-3, "log_every": 5, "eval_every": 10, "eval_batches": 2,
              "checkpoint_every": 20}}
SMALL = {
    "01_architecture": {"breakdown_presets": ["lab-1m", "lab-15m"], "flops_seq_len": 128,
                        "demo_preset": "lab-1m", "rope_positions": 16},
    "02_tokens_vs_loss": {**_SMALL_SWEEP, "presets": ["sweep-d64", "sweep-d96"], "tokens": [2560, 5120]},
    "03_scaling_laws": {**_SMALL_SWEEP, "presets": ["sweep-d64", "sweep-d96", "sweep-d128"],
                        "tokens": [640, 1280, 2560], "n_boot": 20},
    "04_carbon_and_throughput": {},
    "05_evaluation": {"suites": ["commonsense", "qa"], "limit": 1, "curve_data": _SMALL_SWEEP["data"],
                      "curve_vocab": 512,
                      "curve_tokens": 2048, "curve_model": {"dim": 64, "n_layers": 2, "n_heads": 4},
                      "curve_train": {"checkpoint_every": 4, "batch_size": 8, "seq_len": 32, "log_every": 4,
                                      "eval_batches": 2}, "curve_tasks": ["piqa"], "curve_limit": 3, "threads": 1},
    "06_instruction_finetuning": {"base_data": _SMALL_SWEEP["data"], "base_vocab": 512, "base_tokens": 1280,
                                  "base_model": {"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128},
                                  "base_train": {**_SMALL_SWEEP["train"], "batch_size": 8, "checkpoint_every": 5},
                                  "per_play": 2, "epochs": 0.2, "batch_size": 8, "lora_rank": 2, "compare": 8,
                                  "threads": 1},
    "07_recipe_sweeps": {},  # reads the shipped sweep records; trains nothing
}


@pytest.fixture(scope="module")
def kernel_path(tmp_path_factory):
    """A kernelspec for this very interpreter, first on JUPYTER_PATH.

    A user-level `python3` kernelspec (in ~/.local/share/jupyter) would otherwise win over the
    venv's and could run the notebooks in another environment.
    """
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "LLaMA Lab (test)", "language": "python"}))
    return str(root)


def _write_run(runs_dir: Path, name: str, with_metrics: bool) -> None:
    record = RunFolder(runs_dir / name)
    record.write_config({"preset": "lab-1m", "hardware": {"device": "cpu", "device_name": "CPU x86_64"}})
    for step in (10, 20) if with_metrics else ():
        record.append({"step": step, "tokens": step * 512, "train_loss": 5.0 - step / 10, "lr": 1e-3,
                       "tokens_per_s": 2000.0 + step, "mfu": 0.05, "elapsed_s": step * 0.25})


def _execute(name: str, out_dir: Path, kernel_path: str, monkeypatch, **parameters) -> nbformat.NotebookNode:
    monkeypatch.setenv("JUPYTER_PATH", kernel_path)
    out = out_dir / f"{name}.out.ipynb"
    # cwd is the temporary folder, so nothing a notebook writes lands in the repository
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out), parameters=parameters,
                               kernel_name=KERNEL, cwd=str(out_dir), progress_bar=False)
    return nbformat.read(out, as_version=4)


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("path", IPYNBS, ids=lambda p: p.stem)
def test_notebook_runs_end_to_end(path, tmp_path, kernel_path, monkeypatch):
    if path.stem not in SMALL:
        pytest.fail(f"{path.name} has no small parameters in SMALL; add them so the suite stays fast")
    runs = tmp_path / "runs"
    _write_run(runs, "tiny-a", with_metrics=True)
    _write_run(runs, "tiny-started", with_metrics=False)  # a run that has not logged yet
    nb = _execute(path.stem, tmp_path, kernel_path, monkeypatch, runs_dir=str(runs), **SMALL[path.stem])
    if path.stem == "03_scaling_laws":
        _assert_the_fit_is_what_it_claims(_printed(nb), runs / SMALL["03_scaling_laws"]["sweep_name"])
    if path.stem == "04_carbon_and_throughput":
        printed = _printed(nb)
        assert "BLOOM-175B: the formula gives 476.5 MWh" in printed
        assert "1 run(s) in" in printed and "tiny-started: no metrics yet" in printed


NUMBER = r"(-?[\d.]+(?:e[-+]?\d+)?|-?inf|nan)"


def _assert_the_fit_is_what_it_claims(printed: str, sweep_root: Path) -> None:
    """Notebook 03 on real sweep records: a finite prediction inside a finite interval, exponents in the
    range the notebook calls plausible, and the printed error equal to the one the numbers give."""
    from lab.laws import sweep_points

    fit = re.search(rf"alpha = {NUMBER}, beta = {NUMBER} \((converged|NOT converged)\)", printed)
    predicted = re.search(rf"PREDICTED held-out bits/byte of (\S+): {NUMBER} \(90% interval {NUMBER} \.\. "
                          rf"{NUMBER}\)", printed)
    measured = re.search(rf"MEASURED held-out bits/byte of (\S+): {NUMBER}", printed)
    error = re.search(rf"relative error {NUMBER}%", printed)
    assert fit and predicted and measured and error, printed
    print(f"\nnotebook 03: {fit[0]}; {predicted[0]}; {measured[0]}; {error[0]}")
    alpha, beta = float(fit[1]), float(fit[2])
    assert fit[3] == "converged" and 0.02 <= alpha <= 2 and 0.02 <= beta <= 2, fit[0]
    point, low, high = map(float, predicted.group(2, 3, 4))
    assert all(math.isfinite(x) for x in (point, low, high)) and low <= point <= high, predicted[0]
    # the held-out run is the sweep's largest, and the measurement printed is its record
    points = sweep_points(sweep_root)[1]
    largest = max(points, key=lambda q: q["n_params"] * q["tokens"])
    assert predicted[1] == measured[1] == largest["run"]
    truth = largest["heldout_bpb"]
    assert float(measured[2]) == round(truth, 3)
    # printed to 3 decimals and 0.1%: the error computed from them agrees within that rounding
    assert abs(float(error[1]) / 100 - (point - truth) / truth) <= 0.0005 / truth + 0.0005, error[0]


def test_carbon_notebook_without_runs_says_so(tmp_path, kernel_path, monkeypatch):
    nb = _execute("04_carbon_and_throughput", tmp_path, kernel_path, monkeypatch,
                  runs_dir=str(tmp_path / "no-runs-here"))
    assert "No run records with metrics" in _printed(nb)


@pytest.mark.parametrize("path", IPYNBS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_and_matches_its_py(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name} is stored with outputs; clear them (jupytext --to ipynb {path.stem}.py)"
    assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells), \
        f"{path.name} needs a cell tagged 'parameters' for papermill"
    paired = path.with_suffix(".py")
    assert paired.exists(), f"{path.name} has no paired {paired.name}"
    text = jupytext.read(paired)
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in text.cells] == \
           [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells], \
        f"{path.name} and {paired.name} differ; run `jupytext --sync notebooks/{paired.name}`"


def test_every_py_notebook_has_its_ipynb():
    for py in NOTEBOOKS.glob("*.py"):
        assert py.with_suffix(".ipynb").exists(), f"{py.name} has no paired .ipynb"


def _get(url: str, token: str):
    """One HTTP GET with the server's token; (status, body)."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_serves_the_notebooks_on_the_labs_kernel(tmp_path):
    """`make lab` as users start it (as root too, as in containers and CI): it serves, lists every
    notebook and offers the venv's kernel. The server's own config is isolated in tmp_path."""
    root = NOTEBOOKS.parent
    assert ("--allow-root" in subprocess.run(["make", "-n", "-o", ".venv/.installed", "lab"], cwd=root,
                                             capture_output=True, text=True, check=True).stdout) == (os.geteuid() == 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = secrets.token_hex(16)
    config = tmp_path / "config"
    config.mkdir()
    (config / "jupyter_server_config.json").write_text(json.dumps(
        {"ServerApp": {"open_browser": False, "port_retries": 0}}))
    env = dict(os.environ, JUPYTER_TOKEN=token, JUPYTER_CONFIG_DIR=str(config),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"))
    # -o: the installed venv counts as up to date, so the test never reinstalls it
    proc = subprocess.Popen(["make", "--no-print-directory", "-o", ".venv/.installed", "lab", "HOST=127.0.0.1",
                             f"LAB_PORT={port}"], cwd=root, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):  # at most 240 requests, half a second apart
            if proc.poll() is not None:
                pytest.fail(f"make lab exited ({proc.returncode}): {proc.stdout.read().decode()[-3000:]}")
            try:
                _get(f"{url}/api/status", token)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("make lab did not answer on /api/status")
        listed = {item["name"] for item in json.loads(_get(f"{url}/api/contents", token)[1])["content"]}
        assert {p.name for p in IPYNBS} <= listed
        specs = json.loads(_get(f"{url}/api/kernelspecs", token)[1])["kernelspecs"]
        assert "llama-lab" in specs, f"the lab's kernel is not offered: {sorted(specs)}"
        argv = specs["llama-lab"]["spec"]["argv"]
        assert Path(argv[0]).parent == root / ".venv" / "bin", argv
        status, page = _get(f"{url}/lab", token)
        assert status == 200 and b"JupyterLab" in page
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # make and the jupyter server it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
