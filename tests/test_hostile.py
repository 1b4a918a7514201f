"""Hostile and broken files: pickled code is refused by every loader, damaged files give clear errors
that name them, the readers survive fuzzing, and the app shows a message instead of a traceback."""

import json
import pathlib
import pickle
import resource
import shutil
import signal
from contextlib import contextmanager

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llama_core import checkpoint as ckpt
from llama_core import run_folder
from llama_core.config import ModelConfig
from llama_core.formats import load_model
from llama_core.formats.gguf import load_gguf
from llama_core.formats.hf import save_hf
from llama_core.formats.lab import load_lab
from llama_core.formats.meta import save_meta
from llama_core.model import Transformer
from llama_core.run_folder import RunFolder

gguf = pytest.importorskip("gguf")

CLEAR = (ValueError, FileNotFoundError)  # CheckpointError is a ValueError
# small enough that one load takes milliseconds; quantizable (rows of 32) for the GGUF writer
SMALL = ModelConfig(dim=32, n_layers=1, n_heads=2, vocab_size=300, multiple_of=32, max_seq_len=32)
# inputs per fuzz target, sized to a few seconds each on 2 busy CPU cores (a GGUF load rebuilds its tokenizer)
FUZZ_EXAMPLES = {"GGUF": 100, "lab checkpoint": 300, "HF safetensors": 500}


class Payload:
    """Unpickling this touches `marker`: harmless, and proof that code ran."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def _model(cfg):
    torch.manual_seed(0)
    return Transformer(cfg).eval()


def _lab_run(root, model, tokenizer):
    run = root / "lab-run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": model.config.to_dict()}))
    tokenizer.save(run / "tokenizer.model")
    ckpt.save_checkpoint(run, 1, model, torch.optim.AdamW(model.parameters()), {})
    return run


def _reseal(checkpoint):
    """Recompute state.json's checksums, as someone handing over a doctored checkpoint would."""
    state = json.loads((checkpoint / run_folder.STATE).read_text())
    state["checksums"] = {name: run_folder.sha256(checkpoint / name) for name in state["checksums"]}
    (checkpoint / run_folder.STATE).write_text(json.dumps(state))


def _gguf(path, model, tokenizer):
    from test_gguf import _write

    _write(path, model, tokenizer)
    return path


@pytest.fixture(scope="module")
def small(sp_tokenizer):
    return _model(SMALL.replace(vocab_size=sp_tokenizer.vocab_size))


def _refused(load, path, marker):
    """`load()` raises a clear error naming `path`, and the payload never ran."""
    with pytest.raises(CLEAR) as err:
        load()
    assert path.name in str(err.value), err.value
    assert not marker.exists(), f"{path}: pickled code ran"
    return err.value


# -------------------------------------------------------------------------------- pickled code

def test_pickled_code_is_refused_by_every_loader(tmp_path, small, sp_tokenizer):
    marker = tmp_path / "MARKER"
    evil = pickle.dumps({"tok_embeddings.weight": Payload(marker)})
    # the payload is live: an ordinary unpickler runs it
    pickle.loads(evil)
    assert marker.exists()
    marker.unlink()

    def plant(path):
        torch.save({"tok_embeddings.weight": Payload(marker)}, path)
        return path

    cases = []  # (what, the hostile file, how it is loaded)
    meta = save_meta(small, tmp_path / "meta", sp_tokenizer)
    cases.append(("Meta shard", plant(meta / "consolidated.00.pth"), lambda: load_model(meta)))
    meta2 = save_meta(_model(SMALL), tmp_path / "meta2", shards=2)
    cases.append(("second Meta shard", plant(meta2 / "consolidated.01.pth"), lambda: load_model(meta2)))

    run = _lab_run(tmp_path, small, sp_tokenizer)
    step = RunFolder(run).checkpoints()[-1]
    plant(step / run_folder.OPTIMIZER)
    _reseal(step)  # past the checksums: the loader itself must refuse
    cases.append(("lab optimizer.pt on resume", step / run_folder.OPTIMIZER, lambda: ckpt.load_training_state(step)))

    # a sharded (DCP) checkpoint: torch.distributed.checkpoint unpickles dcp/.metadata with plain pickle
    dcp_step = RunFolder(run).checkpoint_dir(2)
    shutil.copytree(step, dcp_step)
    (dcp_step / "dcp").mkdir()
    (dcp_step / "dcp" / ".metadata").write_bytes(evil)
    from llama_core import distributed

    resume_model = _model(small.config)
    cases.append(("DCP metadata on resume", dcp_step / "dcp" / ".metadata", lambda: distributed.restore_training_state(
        dcp_step, resume_model, torch.optim.AdamW(resume_model.parameters()))))
    cases.append(("DCP metadata when chatting", dcp_step / "dcp" / ".metadata", lambda: load_lab(run, step=2)))

    weights_run = _lab_run(tmp_path / "w", small, sp_tokenizer)
    weights_step = RunFolder(weights_run).checkpoints()[-1]
    plant(weights_step / run_folder.WEIGHTS)
    _reseal(weights_step)
    cases.append(("lab model.safetensors", weights_step / run_folder.WEIGHTS, lambda: load_model(weights_run)))

    tok_run = _lab_run(tmp_path / "t", small, sp_tokenizer)
    cases.append(("lab tokenizer.model", plant(tok_run / "tokenizer.model"), lambda: load_model(tok_run)))

    hf = save_hf(small, tmp_path / "hf", sp_tokenizer)
    (hf / "model.safetensors").unlink()
    cases.append(("HF pytorch_model.bin", plant(hf / "pytorch_model.bin"), lambda: load_model(hf)))
    hf_sharded = save_hf(small, tmp_path / "hf-sharded", sp_tokenizer)
    (hf_sharded / "model.safetensors").unlink()
    (hf_sharded / "pytorch_model.bin.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "pytorch_model-00001-of-00001.bin"}}))
    cases.append(("HF sharded .bin", plant(hf_sharded / "pytorch_model-00001-of-00001.bin"),
                  lambda: load_model(hf_sharded)))
    hf_json = save_hf(small, tmp_path / "hf-json")
    cases.append(("HF tokenizer.json", plant(hf_json / "tokenizer.json"), lambda: load_model(hf_json)))
    hf_st = save_hf(small, tmp_path / "hf-st", sp_tokenizer)
    cases.append(("HF model.safetensors", plant(hf_st / "model.safetensors"), lambda: load_model(hf_st)))

    gguf_named = plant(tmp_path / "model.gguf")
    cases.append(("a pickle named .gguf", gguf_named, lambda: load_model(gguf_named)))
    cases.append(("a pickle with GGUF's magic", tmp_path / "magic.gguf",
                  lambda: load_gguf(tmp_path / "magic.gguf")))
    (tmp_path / "magic.gguf").write_bytes(b"GGUF" + evil)

    refused = 0
    for _, path, load in cases:
        error = _refused(load, path, marker)
        assert "weights_only=False" not in str(error)  # never advise the unsafe way round
        refused += 1
    print(f"\nhostile files refused: {refused} of {len(cases)} ({', '.join(w for w, _, _ in cases)})")
    assert refused == len(cases) == 13


def test_a_genuine_dcp_metadata_still_passes_the_vetting(tmp_path, small):
    """The DCP vetting refuses code, not the classes torch.distributed.checkpoint really pickles."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    optimizer = torch.optim.AdamW(small.parameters())
    model_sd, optim_sd = get_state_dict(small, optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=tmp_path / "dcp", no_dist=True)
    (tmp_path / run_folder.STATE).write_text(json.dumps({"checksums": {}}))
    assert run_folder.verify(tmp_path) == {"checksums": {}}


# -------------------------------------------------------------------------------- broken files

def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep > 0 else len(data) + keep])


def test_truncated_safetensors_are_named(tmp_path, small, sp_tokenizer):
    run = _lab_run(tmp_path, small, sp_tokenizer)
    step = RunFolder(run).checkpoints()[-1]
    _cut(step / run_folder.WEIGHTS, -100)
    error = _refused(lambda: load_model(run), step / run_folder.WEIGHTS, tmp_path / "none")
    assert "no complete checkpoint" in str(error) or "damaged" in str(error)
    _reseal(step)  # the checksum agrees: the safetensors reader itself must explain
    with pytest.raises(run_folder.CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        ckpt.load_weights(step, _model(small.config))
    for keep in (5, 100, -100):
        hf = save_hf(small, tmp_path / f"hf{keep}", sp_tokenizer)
        _cut(hf / "model.safetensors", keep)
        with pytest.raises(ValueError, match=rf"{hf}/model\.safetensors is not a readable safetensors file"):
            load_model(hf)


def test_broken_gguf_files_are_named(tmp_path, small, sp_tokenizer):
    path = _gguf(tmp_path / "good.gguf", small, sp_tokenizer)
    data = path.read_bytes()
    wrong_magic = tmp_path / "wrong-magic.gguf"
    wrong_magic.write_bytes(b"GGUG" + data[4:])
    with pytest.raises(ValueError, match=rf"{wrong_magic} is a file but not a GGUF file"):
        load_model(wrong_magic)
    with pytest.raises(ValueError, match=rf"{wrong_magic} is not a readable GGUF file"):
        load_gguf(wrong_magic)
    for cut in (-1, -1000, len(data) // 2, 30):
        broken = tmp_path / f"cut{cut}.gguf"
        broken.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=str(broken)):
            load_model(broken)


def test_params_json_that_disagrees_with_the_weights_names_it(tmp_path, small):
    meta = save_meta(small, tmp_path / "meta")
    params = json.loads((meta / "params.json").read_text())
    for change in ({"dim": 64}, {"vocab_size": 1000}, {"n_kv_heads": 1}, {"n_layers": 2}, {"dim": "32"},
                   {"n_heads": 0}):
        (meta / "params.json").write_text(json.dumps(dict(params, **change)))
        with pytest.raises(ValueError, match=r"params\.json"):
            load_model(meta)
    (meta / "params.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"params\.json holds a JSON list"):
        load_model(meta)


def test_a_tokenizer_that_does_not_match_the_vocabulary_names_it(tmp_path, sp_tokenizer):
    model = _model(SMALL)  # 300 embeddings; the tokenizer has 512 pieces
    run = _lab_run(tmp_path, model, sp_tokenizer)
    with pytest.raises(run_folder.CheckpointError, match=r"tokenizer\.model has 512 pieces .* vocabulary is 300"):
        load_model(run)
    for folder, name in ((save_hf(model, tmp_path / "hf", sp_tokenizer), "tokenizer.model"),
                         (save_meta(model, tmp_path / "meta", sp_tokenizer), "tokenizer.model")):
        with pytest.raises(ValueError, match=rf"{folder}/{name}: the tokenizer has 512 tokens"):
            load_model(folder)
    with pytest.raises(ValueError, match="tokenizer has 512 tokens"):
        load_model(_gguf(tmp_path / "m.gguf", model, sp_tokenizer))
    (run / "tokenizer.model").write_bytes(b"\x00not a sentencepiece model")
    with pytest.raises(ValueError, match=rf"{run}/tokenizer\.model is not a SentencePiece model"):
        load_model(run)


# ------------------------------------------------------------------------------------- fuzzing

POSITION = st.one_of(st.integers(0, 400), st.floats(0, 1))  # in the header, or anywhere in the file
MUTATIONS = st.lists(st.one_of(
    st.tuples(st.just("flip"), POSITION, st.integers(1, 255)),
    st.tuples(st.just("cut"), POSITION),
    st.tuples(st.just("insert"), POSITION, st.binary(min_size=1, max_size=24)),
    st.tuples(st.just("set"), POSITION, st.sampled_from([b"\xff" * 8, b"\x00" * 8, b"\x7f\xff\xff\xff", b"{}"])),
), min_size=1, max_size=4)


def _mutate(data: bytes, mutations) -> bytes:
    out = bytearray(data)
    for op, where, *arg in mutations:
        at = min(where if isinstance(where, int) else int(where * len(out)), max(len(out) - 1, 0))
        if op == "flip" and out:
            out[at] ^= arg[0]
        elif op == "cut":
            del out[at:]
        elif op == "insert":
            out[at:at] = arg[0]
        elif op == "set":
            out[at:at + len(arg[0])] = arg[0]
    return bytes(out)


class Hang(Exception):
    pass


@contextmanager
def _guarded(seconds=60, extra_bytes=3 << 30):
    """A load that never returns, or asks for gigabytes, fails the test instead of stalling the suite
    or driving the machine out of memory (the address space is capped at its current size + 3 GiB)."""
    def alarm(*_):
        raise Hang(f"a load did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    vm = int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmSize"))) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + extra_bytes, hard))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        signal.signal(signal.SIGALRM, previous)


def _fuzz(name, root, targets, load):
    """Mutate one of `targets` (restored afterwards) per input; every load succeeds or names `root`."""
    originals = {t: t.read_bytes() for t in targets}
    tried = {"inputs": 0, "loaded": 0}

    @settings(max_examples=FUZZ_EXAMPLES[name], deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(targets), MUTATIONS)
    def check(target, mutations):
        tried["inputs"] += 1
        target.write_bytes(_mutate(originals[target], mutations))
        try:
            with _guarded():
                load()
            tried["loaded"] += 1
        except CLEAR as err:
            assert str(root) in str(err), f"{type(err).__name__} does not name the file: {err}"
        finally:
            target.write_bytes(originals[target])

    check()
    print(f"\nfuzz {name}: {tried['inputs']} inputs tried, {tried['loaded']} loaded, the rest refused clearly")
    assert tried["inputs"] >= FUZZ_EXAMPLES[name] // 2  # hypothesis may stop early, never at zero


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # damaged scales dequantize to NaN
def test_fuzz_the_gguf_reader(tmp_path, small, sp_tokenizer):
    path = _gguf(tmp_path / "fuzz.gguf", small, sp_tokenizer)
    _fuzz("GGUF", path, [path], lambda: load_model(path))


def test_fuzz_the_lab_checkpoint_reader(tmp_path, small, sp_tokenizer):
    run = _lab_run(tmp_path, small, sp_tokenizer)
    step = RunFolder(run).checkpoints()[-1]

    def load():
        _reseal(step)  # a doctored checkpoint with matching checksums reaches the readers
        load_model(run)

    _fuzz("lab checkpoint", run, [step / run_folder.WEIGHTS, step / run_folder.WEIGHTS, run / "config.json"], load)


def test_fuzz_the_hf_safetensors_reader(tmp_path, small, sp_tokenizer):
    hf = save_hf(small, tmp_path / "hf", sp_tokenizer)
    _fuzz("HF safetensors", hf, [hf / "model.safetensors", hf / "model.safetensors", hf / "config.json"],
          lambda: load_model(hf))


# ----------------------------------------------------------------------------------------- app

def test_broken_checkpoints_give_messages_in_the_app(tmp_path, small, sp_tokenizer, tiny_runs_dir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    models = tmp_path / "models"
    models.mkdir()
    marker = tmp_path / "MARKER"
    gguf_path = _gguf(models / "cut.gguf", small, sp_tokenizer)
    _cut(gguf_path, -500)
    meta = save_meta(small, models / "hostile-meta", sp_tokenizer)
    torch.save({"x": Payload(marker)}, meta / "consolidated.00.pth")
    hf = save_hf(small, models / "cut-hf", sp_tokenizer)
    _cut(hf / "model.safetensors", -100)
    bin_only = save_hf(small, models / "bin-only", sp_tokenizer)
    (bin_only / "model.safetensors").rename(bin_only / "pytorch_model.bin")
    monkeypatch.setenv("LLAMA_LAB_RUNS_DIR", str(tiny_runs_dir))
    monkeypatch.setenv("LLAMA_LAB_MODEL_DIRS", str(models))

    at = AppTest.from_file(str(pathlib.Path(__file__).parents[1] / "app" / "main.py"), default_timeout=120)
    at.run()
    at.sidebar.selectbox[0].set_value("A path to a checkpoint...").run()
    for broken, named in ((gguf_path, "cut.gguf"), (meta, "consolidated.00.pth"),
                          (hf, "model.safetensors"), (bin_only, "pytorch_model.bin")):
        at.sidebar.text_input[0].set_value(str(broken)).run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("Could not load this checkpoint" in e.value and named in e.value for e in at.error), \
            [e.value for e in at.error]
    assert not marker.exists()
