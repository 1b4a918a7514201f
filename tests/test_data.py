import json

import numpy as np
import pytest

from llama_core.data import (
    BatchSampler,
    Mixture,
    corpus_text,
    parse_mixture,
    resolve_source,
    shakespeare_files,
    split_chunks,
    stdlib_files,
    tokenize_source,
)
from llama_core.split import Split, is_validation


def _write_corpus(folder, name, text, n_files=4):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (folder / f"{name}{i}.txt").write_text(text[i::n_files] if n_files > 1 else text)
    return folder


def test_builtin_sources_are_real():
    works = shakespeare_files()
    assert len(works) == 42 and all(f.name.endswith("_gut.txt") for f in works)
    code = stdlib_files()
    assert any(f.name == "os.py" for f in code)
    assert not any("test" in f.parent.parts[-1:] for f in code if f.parent.name in ("test", "tests"))


def test_user_sources_text_folder_jsonl(tmp_path, shakespeare_text):
    txt = tmp_path / "one.txt"
    txt.write_text(shakespeare_text[:5000])
    assert resolve_source(str(txt)).disk_bytes == len(shakespeare_text[:5000].encode())
    folder = _write_corpus(tmp_path / "folder", "part", shakespeare_text[:8000])
    assert len(resolve_source(str(folder)).files) == 4
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": f"document {i}"}) for i in range(3)))
    assert [t for _, t in resolve_source(str(jsonl)).documents()] == ["document 0", "document 1", "document 2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text field"}\n')
    with pytest.raises(ValueError, match="line 1.*'text'"):
        list(resolve_source(str(bad)).documents())


def test_bad_sources_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a built-in source"):
        resolve_source("wikipedia")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        resolve_source(str(tmp_path / "empty.txt"))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(ValueError, match="no .txt or .md"):
        resolve_source(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="positive"):
        parse_mixture("shakespeare:0")


def test_chunks_and_validation_split_are_deterministic(shakespeare_text):
    chunks = split_chunks(shakespeare_text, size=10_000)
    assert "".join(chunks) == shakespeare_text
    assert all(len(c) <= 10_000 for c in chunks)
    ids = [f"doc#{i}" for i in range(2000)]
    held_out = [i for i in ids if is_validation(i)]
    assert held_out == [i for i in ids if is_validation(i)]
    assert 0.07 < len(held_out) / len(ids) < 0.13  # about 10%


def test_document_split_rule_is_deterministic_and_named():
    works = [(f"work{i}.txt", 100_000 + i) for i in range(42)]
    split = Split.of(works)
    assert split.rule == "documents" and len(split.val_documents) == 4  # Shakespeare's 42 works: 4 held out
    assert Split.of(list(reversed(works))) == split  # by id, not by order
    assert split.holds(f"{sorted(split.val_documents)[0]}#3") and not split.holds("not-held#0")
    described = split.describe()
    assert described["val_documents"] == sorted(split.val_documents)
    assert described["val_document_bytes"] == sum(n for d, n in works if d in split.val_documents)
    # two to five documents: the one nearest a tenth of the bytes
    assert Split.of([("a", 2000), ("b", 500), ("c", 5000)]).val_documents == {"b"}
    # one document: chunks, labelled as such
    single = Split.of([("only.txt", 10**6)])
    assert single.rule == "chunks" and "chunks" in single.describe()["description"]
    assert [single.holds(f"only.txt#{i}") for i in range(50)] == [is_validation(f"only.txt#{i}") for i in range(50)]
    with pytest.raises(ValueError, match="no documents"):
        Split.of([])


def test_builtin_split_holds_out_whole_works():
    split = resolve_source("shakespeare").split()
    assert split.rule == "documents" and split.n_documents == 42 and len(split.val_documents) == 4
    assert split.describe()["val_documents"] == sorted(split.val_documents)


def test_folder_documents_keep_distinct_ids(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "same.txt").write_text(f"text of {sub}\n")
    source = resolve_source(str(tmp_path))
    assert [doc_id for doc_id, _ in source.documents()] == ["a/same.txt", "b/same.txt"]


def test_validation_documents_never_reach_the_training_tokens(tmp_path, sp_tokenizer):
    works = shakespeare_files()[:8]
    folder = tmp_path / "works"
    folder.mkdir()
    texts = {}
    for f in works:  # 20 KB of each of 8 works: the rule holds one out
        texts[f.name] = f.read_text(encoding="utf-8")[20_000:40_000]
        (folder / f.name).write_text(texts[f.name], encoding="utf-8")
    source = resolve_source(str(folder))
    split = source.split()
    held = sorted(split.val_documents)
    assert len(held) == 1
    token_file = tokenize_source(source, sp_tokenizer, tmp_path / "cache", progress=False)
    assert token_file.split == split.describe()
    assert tokenize_source(source, sp_tokenizer, tmp_path / "cache2", progress=False).split == token_file.split
    # byte fallback makes tokenization lossless, and bos decodes to nothing: each token file is
    # exactly its documents, in order
    train_text = sp_tokenizer.decode(token_file.tokens("train").tolist())
    val_text = sp_tokenizer.decode(token_file.tokens("val").tolist())
    assert val_text == "".join(texts[name] for name in held)
    assert train_text == "".join(texts[f.name] for f in works if f.name not in held)
    assert token_file.val_bytes == sum(len(texts[name].encode()) for name in held)
    for name in held:
        for start in range(0, len(texts[name]) - 200, 2_000):
            assert texts[name][start:start + 200] not in train_text
    # the tokenizer's training text is the training documents only
    assert "".join(corpus_text(source)) == train_text


def test_token_file_is_cached_and_typed(tmp_path, shakespeare_text, sp_tokenizer):
    source = resolve_source(str(_write_corpus(tmp_path / "c", "w", shakespeare_text, n_files=8)))
    first = tokenize_source(source, sp_tokenizer, tmp_path / "cache", progress=False)
    assert first.tokens("train").dtype == np.uint16
    assert first.train_tokens + first.val_tokens > 100_000
    meta_mtime = (first.folder / "meta.json").stat().st_mtime_ns
    again = tokenize_source(source, sp_tokenizer, tmp_path / "cache", progress=False)
    assert again == first and (first.folder / "meta.json").stat().st_mtime_ns == meta_mtime
    assert sp_tokenizer.decode(first.tokens("train")[:50].tolist()).replace("\n", "")[:5].strip()


def test_mixture_proportions_and_epochs(tmp_path, shakespeare_text, sp_tokenizer):
    a = _write_corpus(tmp_path / "a", "a", shakespeare_text[: len(shakespeare_text) // 2])
    b = _write_corpus(tmp_path / "b", "b", shakespeare_text[len(shakespeare_text) // 2:])
    mixture = Mixture.build(f"{a}:0.8,{b}:0.2", sp_tokenizer, tmp_path / "cache", progress=False)
    rows = mixture.table(token_budget=1_000_000)
    for row, w in zip(rows, (0.8, 0.2)):
        assert row["proportion"] == pytest.approx(w)
        assert row["epochs"] == pytest.approx(1_000_000 * w / row["train_tokens"])
    sampler = BatchSampler(mixture, batch_size=20, seq_len=32, seed=3)
    picks = [s for pos in range(200) for s, _ in sampler.plan(pos)]
    share = picks.count(0) / len(picks)
    # 4,000 draws: the standard error of a 0.8 share is 0.0063; allow 4 of them
    assert abs(share - 0.8) < 4 * (0.8 * 0.2 / len(picks)) ** 0.5


def test_batches_are_reproducible_from_seed_and_position(tmp_path, shakespeare_text, sp_tokenizer):
    a = _write_corpus(tmp_path / "a", "a", shakespeare_text)
    mixture = Mixture.build(str(a), sp_tokenizer, tmp_path / "cache", progress=False)
    s1 = BatchSampler(mixture, 4, 16, seed=7)
    batches = [next(s1) for _ in range(5)]
    x, y = batches[0]
    assert x.shape == (4, 16) and (x[:, 1:] == y[:, :-1]).all()
    s2 = BatchSampler(mixture, 4, 16, seed=7)
    s2.load_state_dict({"seed": 7, "position": 3})
    assert (next(s2)[0] == batches[3][0]).all()
    assert not (BatchSampler(mixture, 4, 16, seed=8).batch_at(0)[0] == x).all()
    with pytest.raises(ValueError, match="shorter --seq"):
        BatchSampler(mixture, 4, 10**7)
