"""Sequence packing for pretraining: documents tokenized, joined with <|endoftext|>, cut into blocks.

Training reads full blocks only (no padding is ever trained on; the tail that does not fill a block is left
out). Validation keeps its whole token stream (`tokenize`), read as overlapping windows (`WindowDataset`), so no
validation token is dropped. The tokens are saved as a `.npy` file per split and memory-mapped, so every process
of a distributed run reads the same data without holding the corpus in memory.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipeline.artifacts import atomic_write
from pipeline.metrics.lm import windows

SEPARATOR = "<|endoftext|>"


def tokenize(texts: Iterable[str], tokenizer, batch: int = 1000) -> tuple[np.ndarray, dict]:
    """The split as one int32 token stream, each document followed by <|endoftext|>, and stats
    {bytes, tokens, documents} (UTF-8 bytes of the texts, tokens of the stream, number of documents)."""
    sep = tokenizer.convert_tokens_to_ids(SEPARATOR)
    chunks, n_bytes, n_docs, buffer = [], 0, 0, []
    for text in texts:
        buffer.append(text)
        if len(buffer) == batch:
            n_bytes, n_docs = _encode(buffer, tokenizer, sep, chunks, n_bytes, n_docs)
            buffer = []
    if buffer:
        n_bytes, n_docs = _encode(buffer, tokenizer, sep, chunks, n_bytes, n_docs)
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    return ids, {"bytes": n_bytes, "tokens": int(len(ids)), "documents": n_docs}


def validation_stream(texts: Iterable[str], tokenizer) -> tuple[np.ndarray, dict]:
    """`tokenize(texts)` after one leading <|endoftext|>, so the first document is predicted from a separator
    like every other: the stream `pipeline.metrics.lm.bits_per_byte` scores whole."""
    ids, stats = tokenize(texts, tokenizer)
    separator = np.asarray([tokenizer.convert_tokens_to_ids(SEPARATOR)], dtype=ids.dtype)
    return np.concatenate([separator, ids]), stats


def pack(texts: Iterable[str], tokenizer, block_size: int, batch: int = 1000) -> tuple[np.ndarray, dict]:
    """Token blocks of shape (n, block_size): the stream of `tokenize` cut into full blocks (the tail that does
    not fill one is left out), and the stats of the whole text."""
    ids, stats = tokenize(texts, tokenizer, batch)
    n_blocks = len(ids) // block_size
    return ids[: n_blocks * block_size].reshape(n_blocks, block_size), stats


def _encode(texts, tokenizer, sep, chunks, n_bytes, n_docs):
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        chunks.append(np.asarray(ids + [sep], dtype=np.int32))
    return n_bytes + sum(len(t.encode("utf-8")) for t in texts), n_docs + len(texts)


def save_blocks(path: Path, array: np.ndarray) -> None:
    """Blocks (2-D) or a stream (1-D) as `.npy`, written atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    atomic_write(path, buffer.getvalue())


class BlockDataset(torch.utils.data.Dataset):
    """Packed blocks from a `.npy` file; each item is a causal-LM example (labels = input_ids)."""

    def __init__(self, path: Path):
        self.blocks = np.load(path, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        ids = torch.from_numpy(np.array(self.blocks[i], dtype=np.int64))
        return {"input_ids": ids, "labels": ids}


class WindowDataset(torch.utils.data.Dataset):
    """A 1-D token stream (`.npy`) as the overlapping windows of `pipeline.metrics.lm.windows`: window k is
    ids[k*(L-1) : k*(L-1)+L], so the causal-LM loss over all windows predicts every token but the first exactly
    once. A shorter last window is right-padded to L (input 0, label -100: ignored by the loss, and causal
    attention keeps the real positions from seeing it), so it batches with the others and is never dropped."""

    def __init__(self, path: Path, block_size: int):
        self.ids = np.load(path, mmap_mode="r")
        self.block_size = block_size
        self.spans = windows(len(self.ids), block_size)

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, i: int) -> dict:
        a, b = self.spans[i]
        ids = torch.from_numpy(np.array(self.ids[a:b], dtype=np.int64))
        pad = self.block_size - len(ids)
        return {"input_ids": torch.nn.functional.pad(ids, (0, pad), value=0),
                "labels": torch.nn.functional.pad(ids, (0, pad), value=-100)}
