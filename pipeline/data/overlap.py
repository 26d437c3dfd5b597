"""How held out a validation split really is: the share of its sentences and documents that occur in train.

A validation loss on text the model has seen verbatim measures memorisation, not generalisation. The data
stage computes these numbers for every text dataset with a validation split and writes them into the
dataset's card and `manifest.json`; the pretrain stage carries them into its metrics.

Definitions (recompute them from the saved splits):

* a sentence is a maximal run of text ending in `.`, `!` or `?` followed by whitespace or the end of the
  document (the last run counts even without a full stop), with runs of whitespace collapsed to one space
  and the ends stripped; sentences are compared as exact strings (case and punctuation matter);
* `sentence_share` = (validation sentence occurrences whose text is also a sentence somewhere in train) /
  (all validation sentence occurrences), each occurrence counted, so a validation sentence repeated five times
  counts five times;
* `document_share` = (validation documents whose whole text, stripped, equals a train document) / (validation
  documents).

Sentences are stored as 12-byte BLAKE2b digests, so memory grows with the number of distinct train sentences
(about 100 bytes each), not with their length.
"""

from __future__ import annotations

import hashlib
import re
from typing import Iterable

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPACES = re.compile(r"\s+")


def sentences(text: str) -> list[str]:
    """The sentences of one document, as defined in the module docstring."""
    text = _SPACES.sub(" ", text).strip()
    return [s for s in _SENTENCE_END.split(text) if s] if text else []


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()


def split_overlap(train: Iterable[str], validation: Iterable[str]) -> dict:
    """{"sentence_share", "document_share", "validation_sentences", "validation_sentences_in_train",
    "validation_documents", "validation_documents_in_train"} of two iterables of documents."""
    train_sentences: set[bytes] = set()
    train_documents: set[bytes] = set()
    for document in train:
        train_documents.add(_digest(document.strip()))
        train_sentences.update(_digest(s) for s in sentences(document))
    counts = {"validation_sentences": 0, "validation_sentences_in_train": 0,
              "validation_documents": 0, "validation_documents_in_train": 0}
    for document in validation:
        counts["validation_documents"] += 1
        counts["validation_documents_in_train"] += _digest(document.strip()) in train_documents
        for sentence in sentences(document):
            counts["validation_sentences"] += 1
            counts["validation_sentences_in_train"] += _digest(sentence) in train_sentences
    return {
        "sentence_share": counts["validation_sentences_in_train"] / max(counts["validation_sentences"], 1),
        "document_share": counts["validation_documents_in_train"] / max(counts["validation_documents"], 1),
        **counts,
    }
