"""Bits per byte over the whole held-out text: a hand computation agrees, and a run records it."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lab.experiment import RunSpec, run_training
from lab.records import read_metrics
from llama_core.config import ModelConfig, TrainConfig
from llama_core.data import Mixture, shakespeare_files, windows
from llama_core.heldout import heldout_metrics
from llama_core.loss import use_fused_loss
from llama_core.model import Transformer


@pytest.fixture(scope="module")
def works(tmp_path_factory):
    """A folder of 6 documents (6 KB of 6 works): the rule holds one whole work out."""
    folder = tmp_path_factory.mktemp("works")
    for f in shakespeare_files()[:6]:
        (folder / f.name).write_text(f.read_text(encoding="utf-8")[30_000:36_000], encoding="utf-8")
    return folder


def test_windows_cover_every_target_once():
    tokens = torch.arange(50).numpy()
    batches = list(windows(tokens, seq_len=8, batch_size=4))
    targets = torch.cat([y.flatten() for _, y in batches])
    assert targets.tolist() == list(range(1, 50))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 8), (2, 8), (1, 1)]
    for x, y in batches:
        assert (y - x == 1).all()


def test_whole_text_bits_per_byte_equals_a_hand_computation(works, sp_tokenizer, tmp_path):
    mixture = Mixture.build(str(works), sp_tokenizer, tmp_path / "cache", progress=False)
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=sp_tokenizer.vocab_size, multiple_of=32,
                      max_seq_len=64)
    torch.manual_seed(0)
    model = use_fused_loss(Transformer(cfg))  # the training head installed: evaluation must not use it
    seq = 48
    got = heldout_metrics(model, mixture, seq, torch.device("cpu"))
    # by hand: every window alone, log-softmax in float64 at each position, summed, over the bytes
    tokens = torch.from_numpy(mixture.files[0].tokens("val").astype("int64"))
    nll = 0.0
    with torch.no_grad():
        model.eval()
        for start in range(0, len(tokens) - 1, seq):
            window = tokens[start:start + seq + 1]
            logits = model(window[None, :-1])[0][0].double()  # one window at a time, (T, V)
            nll -= logits.log_softmax(-1)[torch.arange(len(window) - 1), window[1:]].sum().item()
    n_bytes = mixture.files[0].val_bytes
    assert got["heldout_sources"][str(works.name)]["tokens"] == len(tokens) - 1
    assert got["heldout_bpb"] == pytest.approx(nll / math.log(2) / n_bytes, rel=1e-5)
    assert got["heldout_loss"] == pytest.approx(nll / (len(tokens) - 1), rel=1e-5)


def test_a_run_records_its_split_and_whole_text_result(works, tmp_path):
    spec = RunSpec(name="heldout", preset="lab-1m", data=str(works), vocab_size=400,
                   model_overrides={"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "max_seq_len": 64},
                   train=TrainConfig(tokens=12 * 4 * 32, batch_size=4, seq_len=32, lr=3e-3, eval_every=6,
                                     eval_batches=2, log_every=3, checkpoint_every=12))
    result = run_training(spec, tmp_path / "runs", progress=False, cache_dir=tmp_path / "cache")
    run_dir = tmp_path / "runs" / "heldout"
    config = json.loads((run_dir / "config.json").read_text())
    split = config["data"]["table"][0]["split"]
    assert split["rule"] == "documents" and split["n_documents"] == 6 and len(split["val_documents"]) == 1
    assert "sampled" in config["validation"]["during"] and "all validation" in config["validation"]["final"]
    heldout = config["heldout"]
    assert heldout["heldout_bpb"] == result.last["heldout_bpb"] and 0 < heldout["heldout_bpb"] < 10
    assert heldout["heldout_sources"][works.name]["bytes"] == config["data"]["table"][0]["val_bytes"]
    assert heldout["step"] == 12 and all("heldout_bpb" not in m for m in read_metrics(run_dir))
