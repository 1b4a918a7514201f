"""Which text of a source is held out for validation: whole documents, by a deterministic rule.

Validation loss should measure generalisation to unseen text, as the paper's held-out sets do, so
whole documents are held out (a tenth of them, chosen by a hash of their ids; one of a source of
two to five). A single-document source can only hold out chunks of itself, which shares its
characters and plots with the training text; the rule's name in the run record says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

VAL_PERCENT = 10  # of a source's documents (or, for a single document, of its chunks)
SPLIT_VERSION = "documents-v1"  # part of every cache key that depends on the split
LISTED_DOCUMENTS = 50  # a record names at most this many held-out documents


def _rank(name: str) -> int:
    """A stable pseudo-random rank of a document or chunk id (sha256, first 8 bytes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")


def is_validation(chunk_id: str, val_percent: int = VAL_PERCENT) -> bool:
    """The chunk rule: a chunk is held out when its hash falls in the first `val_percent` of 100."""
    return _rank(chunk_id) % 100 < val_percent


@dataclass(frozen=True)
class Split:
    """Which text of a source is held out, by a rule the run record names.

    `documents`: whole documents are held out; `val_documents` names them. `chunks` (a source of one
    document): chunks of it are held out by `is_validation`, so validation text shares the
    document's characters and plots with training text, which flatters the loss.
    """

    rule: str  # "documents" or "chunks"
    val_documents: frozenset[str]
    n_documents: int
    val_bytes: int  # bytes of the held-out documents (file sizes); for chunks, filled after tokenizing
    total_bytes: int

    @classmethod
    def of(cls, sizes: list[tuple[str, int]]) -> Split:
        """The deterministic rule over (document id, bytes) pairs.

        One document: chunks. Two to five: the one document whose size is nearest a tenth of the
        whole (so that neither split is starved). Six or more: the round(10%) documents whose ids
        hash lowest (Shakespeare: 4 of its 42 works), at least one, never all.
        """
        if not sizes:
            raise ValueError("the source holds no documents: give it some text")
        total = sum(n for _, n in sizes)
        if len(sizes) == 1:
            return cls("chunks", frozenset(), 1, 0, total)
        if len(sizes) <= 5:
            target = total * VAL_PERCENT / 100
            held = [min(sizes, key=lambda d: (abs(d[1] - target), _rank(d[0])))]
        else:
            k = min(len(sizes) - 1, max(1, round(len(sizes) * VAL_PERCENT / 100)))
            held = sorted(sizes, key=lambda d: (_rank(d[0]), d[0]))[:k]
        ids = frozenset(doc_id for doc_id, _ in held)
        if len(ids) != len(held):
            raise ValueError(f"document ids repeat ({sorted(ids)}): give every file a distinct name")
        return cls("documents", ids, len(sizes), sum(n for _, n in held), total)

    def holds(self, chunk_id: str) -> bool:
        """Whether a chunk ('DOCUMENT#N', as `Source.chunks` names them) belongs to validation."""
        if self.rule == "chunks":
            return is_validation(chunk_id)
        return chunk_id.rpartition("#")[0] in self.val_documents

    def describe(self) -> dict:
        """The rule in words and the held-out documents, for a run's config.json."""
        if self.rule == "chunks":
            rule = (f"chunks: a single document, so {VAL_PERCENT}% of its chunks (cut at paragraphs, "
                    "chosen by a hash of their ids) are held out; validation shares the training document")
            return {"rule": "chunks", "description": rule, "version": SPLIT_VERSION, "n_documents": 1}
        names = sorted(self.val_documents)
        rule = ("documents: the one document nearest a tenth of the bytes" if self.n_documents <= 5 else
                f"documents: the {len(names)} of {self.n_documents} whose ids hash lowest (sha256)")
        return {"rule": "documents", "description": rule, "version": SPLIT_VERSION,
                "n_documents": self.n_documents, "n_val_documents": len(names),
                "val_documents": names[:LISTED_DOCUMENTS], "val_documents_listed": min(len(names), LISTED_DOCUMENTS),
                "val_document_bytes": self.val_bytes, "total_bytes": self.total_bytes}
