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

Sentences and documents are compared by 8-byte BLAKE2b digests, kept in flat integer arrays (8 bytes per train
sentence, sorted once with numpy), so memory grows by 8 bytes per train sentence, not with its length (a Python
set of digests took ~100 bytes each: +490 MB of heap on 200 MB of distinct sentences). Two different sentences
share a 64-bit digest with probability ~2^-64 per pair: negligible next to the counts reported.
"""

from __future__ import annotations

import hashlib
import re
from array import array
from typing import Iterable

import numpy as np

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPACES = re.compile(r"\s+")


def sentences(text: str) -> list[str]:
    """The sentences of one document, as defined in the module docstring."""
    text = _SPACES.sub(" ", text).strip()
    return [s for s in _SENTENCE_END.split(text) if s] if text else []


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def split_overlap(train: Iterable[str], validation: Iterable[str]) -> dict:
    """{"sentence_share", "document_share", "validation_sentences", "validation_sentences_in_train",
    "validation_documents", "validation_documents_in_train"} of two iterables of documents."""
    train_sentences, train_documents = array("Q"), array("Q")
    for document in train:
        train_documents.append(_digest(document.strip()))
        train_sentences.extend(_digest(s) for s in sentences(document))
    validation_sentences, validation_documents = array("Q"), array("Q")
    for document in validation:
        validation_documents.append(_digest(document.strip()))
        validation_sentences.extend(_digest(s) for s in sentences(document))
    seen_sentences = np.isin(np.frombuffer(validation_sentences, dtype=np.uint64),
                             np.unique(np.frombuffer(train_sentences, dtype=np.uint64)))
    seen_documents = np.isin(np.frombuffer(validation_documents, dtype=np.uint64),
                             np.unique(np.frombuffer(train_documents, dtype=np.uint64)))
    counts = {"validation_sentences": len(validation_sentences),
              "validation_sentences_in_train": int(seen_sentences.sum()),
              "validation_documents": len(validation_documents),
              "validation_documents_in_train": int(seen_documents.sum())}
    return {
        "sentence_share": counts["validation_sentences_in_train"] / max(counts["validation_sentences"], 1),
        "document_share": counts["validation_documents_in_train"] / max(counts["validation_documents"], 1),
        **counts,
    }
