"""Packing: documents joined by <|endoftext|>; training keeps full blocks, validation its whole stream as
overlapping windows (the padded last one is never dropped)."""

import numpy as np
import torch

from pipeline.data.packing import BlockDataset, WindowDataset, pack, save_blocks, tokenize
from pipeline.models.tokenizer import train_bpe

DOCS = ["one two three", "four five", "six"]


def joined(tok, docs):
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    return sum((tok(d, add_special_tokens=False)["input_ids"] + [eot] for d in docs), [])


def test_packing_joins_documents_with_eot_and_keeps_only_full_blocks(tmp_path):
    tok = train_bpe(DOCS * 20, vocab_size=300)
    blocks, stats = pack(DOCS, tok, block_size=4)
    ids = joined(tok, DOCS)
    assert stats == {"bytes": sum(len(d) for d in DOCS), "tokens": len(ids), "documents": 3}
    assert blocks.shape == (len(ids) // 4, 4)
    assert blocks.flatten().tolist() == ids[: blocks.size]
    save_blocks(tmp_path / "b.npy", blocks)
    item = BlockDataset(tmp_path / "b.npy")[1]
    assert torch.equal(item["input_ids"], item["labels"]) and item["input_ids"].tolist() == ids[4:8]


def test_tokenize_keeps_the_tail(tmp_path):
    tok = train_bpe(DOCS * 20, vocab_size=300)
    stream, stats = tokenize(DOCS, tok)
    assert stream.tolist() == joined(tok, DOCS) and stats["tokens"] == len(stream)
    blocks, _ = pack(DOCS, tok, block_size=len(stream) - 1)
    assert blocks.size == len(stream) - 1  # pack leaves the tail out; tokenize keeps it


def test_window_dataset_covers_every_token_once_and_pads_the_last(tmp_path):
    stream = np.arange(11, dtype=np.int32) + 5  # 5..15
    save_blocks(tmp_path / "s.npy", stream)
    data = WindowDataset(tmp_path / "s.npy", block_size=4)
    items = [data[i] for i in range(len(data))]
    assert [it["input_ids"].tolist() for it in items] == [[5, 6, 7, 8], [8, 9, 10, 11], [11, 12, 13, 14], [14, 15, 0, 0]]
    assert items[-1]["labels"].tolist() == [14, 15, -100, -100]
    # HF shifts labels by one inside the model: the targets are labels[1:] of every window
    targets = [t for it in items for t in it["labels"][1:].tolist() if t != -100]
    assert targets == stream[1:].tolist()
    tiny = tmp_path / "t.npy"
    save_blocks(tiny, stream[:3])  # shorter than one block: one padded window
    assert len(WindowDataset(tiny, block_size=8)) == 1
    assert WindowDataset(tiny, block_size=8)[0]["labels"].tolist() == [5, 6, 7] + [-100] * 5
