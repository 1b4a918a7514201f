"""The run folder's one owner: its records, sealed checkpoints, checksums and the weights-fit check."""

import json

import pytest
import torch

from conftest import TINY
from llama_core.model import Transformer
from llama_core.run_folder import (
    STATE,
    CheckpointError,
    RunFolder,
    append_jsonl,
    bench_path,
    bench_record,
    check_weights_fit,
    expected_shapes,
    read_jsonl,
    sha256,
    verify,
)


def test_the_record_metrics_and_a_cut_last_line(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert not run.is_run()
    with pytest.raises(FileNotFoundError, match="is not a lab run"):
        run.read_config()
    run.write_config({"model": TINY.to_dict(), "status": "running"})
    run.update_config(status="finished")
    assert run.is_run() and run.read_config()["status"] == "finished"
    assert run.model_config() == TINY
    for step in (1, 2, 3):
        run.append({"step": step, "train_loss": 5.0 - step})
    with open(run.metrics_path, "a") as f:
        f.write('{"step": 4, "train_')  # a line cut by a crash mid-write
    assert [m["step"] for m in run.read_metrics()] == [1, 2, 3]
    run.truncate_after(2)
    assert [m["step"] for m in run.read_metrics()] == [1, 2]
    run.config_path.write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="holds a JSON list"):
        run.read_config()
    run.config_path.write_text(json.dumps({"model": {"dim": "wide"}}))
    with pytest.raises(CheckpointError, match="does not describe a model"):
        run.model_config()


def test_sealed_checkpoints_verify_prune_and_name_damage(tmp_path):
    run = RunFolder(tmp_path / "r")
    for step in (10, 20, 30):
        tmp = run.staging_dir(step)
        (tmp / "weights.bin").write_bytes(bytes([step]) * 100)
        (tmp / "dcp").mkdir()
        (tmp / "dcp" / "shard").write_bytes(b"x" * step)
        final = run.seal(tmp, step, {"tokens": step * 64})
        assert final == run.checkpoint_dir(step) and not tmp.exists()
    state = verify(run.checkpoint_dir(20))
    assert state["step"] == 20 and state["tokens"] == 20 * 64
    assert set(state["checksums"]) == {"weights.bin", "dcp/shard"}
    assert state["checksums"]["weights.bin"] == sha256(run.checkpoint_dir(20) / "weights.bin")
    run.prune(keep=2)
    assert [p.name for p in run.checkpoints()] == ["step_0000020", "step_0000030"]
    (run.checkpoint_dir(30) / "dcp" / "shard").write_bytes(b"damaged")
    with pytest.raises(CheckpointError, match=r"step_0000030/dcp/shard is damaged"):
        verify(run.checkpoint_dir(30))
    assert run.latest_valid_checkpoint() == run.checkpoint_dir(20)  # the damaged newer one is skipped
    (run.checkpoint_dir(20) / STATE).unlink()
    assert run.checkpoints() == [run.checkpoint_dir(30)]  # a folder without state.json is not complete


def test_one_weights_fit_check_for_every_format(tmp_path):
    model = Transformer(TINY)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert shapes == expected_shapes(TINY)
    check_weights_fit(shapes, TINY, "m.safetensors")
    tied = TINY.replace(tie_embeddings=True)
    check_weights_fit({k: v for k, v in expected_shapes(tied).items() if k != "output.weight"}, tied, "t")
    cases = {
        r"m: weights missing for \['layers\.1\.": {k: v for k, v in shapes.items() if not k.startswith("layers.1.")},
        r"m: unexpected weights \['extra'\]": {**shapes, "extra": (1,)},
        r"m: layers\.0\.attention\.wk\.weight has shape \[1, 64\] but the config implies \[64, 64\]":
            {**shapes, "layers.0.attention.wk.weight": torch.Size([1, 64])},
    }
    for message, found in cases.items():
        with pytest.raises(CheckpointError, match=message):
            check_weights_fit(found, TINY, "m")
    with pytest.raises(CheckpointError, match="a context of 2,097,152 tokens"):
        check_weights_fit(shapes, TINY.replace(max_seq_len=1 << 21), "m")
    with pytest.raises(CheckpointError, match="the config has 1,000 layers but the file holds only"):
        check_weights_fit(shapes, TINY.replace(n_layers=1000), "m")


def test_benchmark_records_share_one_envelope(tmp_path):
    path = bench_path(tmp_path, "decode")
    assert path == tmp_path / "bench" / "decode.jsonl"
    record = bench_record("decode", {"tokens_per_s": 12.5}, {"device": "cpu"})
    assert {"bench", "tokens_per_s", "hardware", "host", "time"} <= record.keys() and record["bench"] == "decode"
    append_jsonl(path, record)
    append_jsonl(path, record)
    assert read_jsonl(path) == [record, record]
    assert read_jsonl(tmp_path / "absent.jsonl") == []
