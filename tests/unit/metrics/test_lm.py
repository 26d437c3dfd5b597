"""bits_per_byte against values computed by hand on models whose probabilities are known (uniform, a fixed
bigram table), the overlapping windows, and per-token byte lengths of the project's byte-level BPE."""

import math

import numpy as np
import pytest
import torch

from pipeline.metrics.lm import bits_per_byte, token_byte_lengths, windows

# A 4-token vocabulary: id 0 is a separator (<|endoftext|>, 0 bytes); ids 1, 2, 3 decode to 1, 2 and 3 bytes.
BYTES = [0, 1, 2, 3]
STREAM = [0, 1, 2, 3, 0, 2, 3]  # 7 tokens: 6 predicted, 5 scored (the separator at index 4 is not)
# The bytes the scored tokens decode to: ids 1, 2, 3, 2, 3 -> 1 + 2 + 3 + 2 + 3 = 11.

# Bigram probabilities p(next | previous), powers of two so the bits are whole numbers.
BIGRAM = [[1 / 8, 1 / 2, 1 / 4, 1 / 8],   # after 0
          [1 / 4, 1 / 4, 1 / 4, 1 / 4],   # after 1
          [1 / 2, 1 / 8, 1 / 8, 1 / 4],   # after 2
          [1 / 8, 1 / 8, 1 / 2, 1 / 4]]   # after 3
# STREAM's predictions: 0->1: 1 bit, 1->2: 2, 2->3: 2, 3->0: 3 (separator), 0->2: 2, 2->3: 2.
# Scored bits: 1 + 2 + 2 + 2 + 2 = 9, over 11 bytes; all 6 predictions: 12 bits = 12 ln 2 nats.


class Uniform(torch.nn.Module):
    """Logits all zero: every token has probability 1/V."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab = vocab

    def forward(self, input_ids):
        return torch.zeros(*input_ids.shape, self.vocab)


class Bigram(torch.nn.Module):
    """Logits at position t = log p(. | input_ids[t]) from a fixed table."""

    def __init__(self, table):
        super().__init__()
        self.log_probs = torch.nn.Parameter(torch.tensor(table, dtype=torch.float64).log().float())

    def forward(self, input_ids):
        return self.log_probs[input_ids]


class Recorder(Uniform):
    """Uniform, and remembers every batch it was given."""

    def __init__(self, vocab: int):
        super().__init__(vocab)
        self.batches = []

    def forward(self, input_ids):
        self.batches.append(input_ids.clone())
        return super().forward(input_ids)


@pytest.mark.parametrize("block_size", [2, 3, 4, 5, 7, 16])
def test_uniform_model_by_hand(block_size):
    result = bits_per_byte(Uniform(4), STREAM, BYTES, block_size=block_size, batch_size=2)
    # 5 scored tokens x log2(4) = 10 bits over 11 bytes; every prediction costs ln 4 nats
    assert result["bits_per_byte"] == pytest.approx(10 / 11)
    assert result["nats_per_token"] == pytest.approx(math.log(4))
    assert (result["predicted_tokens"], result["scored_tokens"], result["bytes"]) == (6, 5, 11)


@pytest.mark.parametrize("block_size", [2, 3, 4, 5, 7, 16])
def test_bigram_model_by_hand(block_size):
    result = bits_per_byte(Bigram(BIGRAM), np.array(STREAM), np.array(BYTES), block_size=block_size, batch_size=2)
    assert result["bits_per_byte"] == pytest.approx(9 / 11)
    assert result["bits"] == pytest.approx(9)
    assert result["nats_per_token"] == pytest.approx(12 * math.log(2) / 6)


def test_stream_of_two_tokens():
    assert bits_per_byte(Uniform(4), [0, 3], BYTES, block_size=8)["bits_per_byte"] == pytest.approx(2 / 3)
    assert bits_per_byte(Bigram(BIGRAM), [2, 3], BYTES, block_size=2)["bits_per_byte"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        bits_per_byte(Uniform(4), [3], BYTES, block_size=8)
    with pytest.raises(ValueError, match="only separators"):
        bits_per_byte(Uniform(4), [1, 0, 0], BYTES, block_size=8)


def test_separators_are_context_not_cost():
    """A separator's prediction enters nats_per_token only; moving probability onto separators changes nothing."""
    sure = [[1 / 2, 1 / 2, 0, 0]] * 4  # p(0) = p(1) = 1/2 after anything
    for table in (sure, [[1 / 256, 1 / 2, 1 / 4, 1 / 4 - 1 / 256]] * 4):
        result = bits_per_byte(Bigram(table), [1, 0, 1, 0, 0, 1], BYTES, block_size=3)
        bits_of_1 = -math.log2(table[0][1])  # = 1 in both tables
        assert result["bits_per_byte"] == pytest.approx(2 * bits_of_1 / 2)
        assert (result["scored_tokens"], result["bytes"]) == (2, 2)


@pytest.mark.parametrize("n, block_size", [(2, 4), (3, 8), (7, 3), (10, 4), (11, 4), (12, 4), (33, 8), (50, 2)])
def test_windows_predict_every_token_but_the_first_exactly_once(n, block_size):
    spans = windows(n, block_size)
    targets = sorted(i for a, b in spans for i in range(a + 1, b))
    assert targets == list(range(1, n))
    assert all(2 <= b - a <= block_size for a, b in spans) and spans[0][0] == 0 and spans[-1][1] == n
    assert [a for a, _ in spans] == list(range(0, n - 1, block_size - 1))  # window k starts at k(L-1)

    model = Recorder(n)  # the stream 0..n-1: every id names its position
    bits_per_byte(model, np.arange(n), np.ones(n, dtype=int), block_size=block_size, batch_size=3)
    seen = [row.tolist() for batch in model.batches for row in batch]
    assert sorted(i for row in seen for i in row[1:]) == list(range(1, n))  # each predicted once, none dropped
    assert all(len(row) <= block_size for row in seen)
    # full windows go 3 at a time; a shorter last window runs alone, unpadded
    assert all(len(batch) <= 3 and (batch.shape[1] == block_size or len(batch) == 1) for batch in model.batches)


def old_formula(model, stream, token_bytes, block_size):
    """What the stage reported before: mean loss over full blocks only (tail dropped, separators counted),
    in bits, times all tokens over the text's bytes."""
    n = len(stream) // block_size
    blocks = torch.tensor(stream[: n * block_size]).view(n, block_size)
    logits = model(blocks)[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), blocks[:, 1:].reshape(-1))
    return loss.item() / math.log(2) * len(stream) / sum(token_bytes[t] for t in stream)


def test_hand_value_rejects_the_old_formula():
    """The old extrapolation gives 14/11 on the bigram case (blocks [0,1,2] and [3,0,2]: 8 bits over 4
    predictions, x 7 tokens / 11 bytes), not the 9/11 the definition asks for."""
    old = old_formula(Bigram(BIGRAM), STREAM, BYTES, block_size=3)
    assert old == pytest.approx(14 / 11)
    assert old != pytest.approx(9 / 11)
    assert bits_per_byte(Bigram(BIGRAM), STREAM, BYTES, block_size=3)["bits_per_byte"] == pytest.approx(9 / 11)


def test_mode_is_restored_and_nothing_is_graded():
    model = Bigram(BIGRAM).train()
    bits_per_byte(model, STREAM, BYTES, block_size=3)
    assert model.training and model.log_probs.grad is None


def test_byte_lengths_of_the_project_tokenizer_sum_to_utf8_bytes():
    from pipeline.models.tokenizer import train_bpe

    docs = ["naïve café — déjà vu", "日本語のテキスト", "emoji 🙂🚀 and ascii", "Ελληνικά και русский"] * 10
    tok = train_bpe(docs, vocab_size=400)
    lengths = token_byte_lengths(tok)
    assert len(lengths) == len(tok)
    for name in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert lengths[tok.convert_tokens_to_ids(name)] == 0
    for text in docs[:4] + ["unseen: Ω≈ç√∫ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u00a0tab\tnewline\n"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert lengths[ids].sum() == len(text.encode("utf-8")), text
    assert lengths[lengths > 0].min() == 1 and lengths.max() > 3  # single bytes and merged multi-byte tokens
