"""Every notebook runs end to end on small parameters, is stored without outputs, and matches its .py."""

from __future__ import annotations

import json
import sys
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
    if path.stem == "04_carbon_and_throughput":
        printed = _printed(nb)
        assert "BLOOM-175B: the formula gives 476.5 MWh" in printed
        assert "1 run(s) in" in printed and "tiny-started: no metrics yet" in printed


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
