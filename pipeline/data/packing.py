"""Sequence packing for pretraining: documents tokenized, joined with <|endoftext|>, cut into full blocks.

No padding is ever trained on. The packed tokens are saved as a `.npy` file per split and memory-mapped,
so every process of a distributed run reads the same blocks without holding the corpus in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from pipeline.artifacts import atomic_write


def pack(texts: Iterable[str], tokenizer, block_size: int, batch: int = 1000) -> tuple[np.ndarray, dict]:
    """Token blocks of shape (n, block_size) and stats {bytes, tokens, documents} of the text they cover."""
    sep = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    chunks, n_bytes, n_docs, buffer = [], 0, 0, []
    for text in texts:
        buffer.append(text)
        if len(buffer) == batch:
            n_bytes, n_docs = _encode(buffer, tokenizer, sep, chunks, n_bytes, n_docs)
            buffer = []
    if buffer:
        n_bytes, n_docs = _encode(buffer, tokenizer, sep, chunks, n_bytes, n_docs)
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    n_blocks = len(ids) // block_size
    blocks = ids[: n_blocks * block_size].reshape(n_blocks, block_size)
    return blocks, {"bytes": n_bytes, "tokens": int(len(ids)), "documents": n_docs}


def _encode(texts, tokenizer, sep, chunks, n_bytes, n_docs):
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        chunks.append(np.asarray(ids + [sep], dtype=np.int32))
    return n_bytes + sum(len(t.encode("utf-8")) for t in texts), n_docs + len(texts)


def save_blocks(path: Path, blocks: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.save(buffer, blocks)
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
