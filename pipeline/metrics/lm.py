"""Language-model metrics on a token stream: validation bits per byte, the exact full-split loss.

    from pipeline.metrics.lm import bits_per_byte, token_byte_lengths
    bits_per_byte(model, stream, token_byte_lengths(tokenizer), block_size=128, batch_size=32)

A library: it knows no run folder or stage. `bits_per_byte` needs only a causal LM (anything called as
`model(input_ids=LongTensor[B, T])` returning logits [B, T, V], or an object with `.logits`), the token stream
and a table of UTF-8 byte lengths per vocabulary id.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def windows(n_tokens: int, block_size: int) -> list[tuple[int, int]]:
    """[start, stop) of the windows that cover a stream of `n_tokens`, overlapping by one token.

    Window k is ids[k*(L-1) : k*(L-1)+L] (L = block_size), clipped at the end of the stream, for
    k = 0 .. ceil((n-1)/(L-1)) - 1: the last one may be shorter (at least 2 tokens), none is dropped. Inside a
    window, position j >= 1 is predicted from positions 0..j-1; so every token of the stream except ids[0] is
    predicted exactly once: ids[i] (i >= 1) at position j = i - k*(L-1) of window k = ceil(i/(L-1)) - 1, from the
    j <= L-1 tokens before it.
    """
    if block_size < 2:
        raise ValueError(f"block_size: need at least 2 tokens per window, got {block_size}")
    stride = block_size - 1
    return [(start, min(start + block_size, n_tokens)) for start in range(0, n_tokens - 1, stride)]


def token_byte_lengths(tokenizer) -> np.ndarray:
    """UTF-8 byte length of each vocabulary id of a byte-level BPE tokenizer (GPT-2 style), as int64[len(tokenizer)].

    A byte-level token is a string over a 256-character alphabet, one character per byte, so its byte length is
    its length in characters (whatever UTF-8 characters those bytes are pieces of). Special tokens
    (<|endoftext|>, <|im_start|>, ...) decode to nothing: 0 bytes. An added non-special token is literal text:
    the length of its UTF-8 encoding. Then for any text without special tokens,
    sum(lengths[encode(text)]) == len(text.encode("utf-8")).
    """
    from tokenizers import pre_tokenizers

    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    for token, i in tokenizer.get_vocab().items():
        if i in added:
            lengths[i] = 0 if added[i].special else len(added[i].content.encode("utf-8"))
        elif set(token) <= alphabet:
            lengths[i] = len(token)
        else:
            raise ValueError(f"token {i} ({token!r}) is not byte-level: byte lengths need a byte-level BPE")
    return lengths


def bits_per_byte(model, token_ids, token_bytes, block_size: int, batch_size: int = 32) -> dict:
    """Bits per UTF-8 byte of a token stream (the whole validation split), and its exact mean loss.

    Let ids[0..n-1] be the stream (documents joined by separators, e.g. <|endoftext|>), p the model and
    b[t] = token_bytes[t] the UTF-8 byte length of vocabulary id t (0 for separators and other special tokens).
    The stream is evaluated in the overlapping windows of `windows(n, block_size)`, so each ids[i], i >= 1, is
    predicted exactly once, from the up to block_size-1 tokens before it in its window; ids[0] is context only
    (start the stream with a separator and every token of the text is scored). With nll_i = -ln p(ids[i] | context):

        nats_per_token  = sum_{i>=1} nll_i / (n-1)                  over every predicted token, separators too:
                                                                    the full-split validation loss
        bits            = sum_{i>=1, b[ids[i]]>0} nll_i / ln 2      scored tokens only: a separator (0 bytes)
                                                                    is context, never a cost
        bytes           = sum_{i>=1} b[ids[i]]                      = the UTF-8 bytes the scored tokens decode to
        bits_per_byte   = bits / bytes

    Returns those plus predicted_tokens (n-1) and scored_tokens (#{i >= 1: b[ids[i]] > 0}). Full-length windows
    run `batch_size` at a time; the shorter last window (if any) runs alone, so nothing is padded. The model
    runs in eval mode (its mode is restored after) on its own device, in its own dtype (log-softmax in fp32,
    sums in fp64). Nothing is gathered across processes: under accelerate, call it on every rank (each gets the
    same numbers; FSDP and DeepSpeed ZeRO-3 need every rank in each forward anyway).
    """
    ids = torch.as_tensor(np.asarray(token_ids, dtype=np.int64))
    lengths = torch.as_tensor(np.asarray(token_bytes, dtype=np.int64))
    if ids.ndim != 1 or len(ids) < 2:
        raise ValueError(f"token_ids: need a 1-D stream of at least 2 tokens, got shape {tuple(ids.shape)}")
    nll = _window_nll(model, ids, block_size, batch_size)
    from pipeline.metrics.modules import load  # the sums above, computed by the `bits_per_byte` evaluate module

    return load("bits_per_byte").compute(nll=nll[1:].tolist(), token_bytes=lengths[ids[1:]].tolist())


@torch.no_grad()
def _window_nll(model, ids: torch.Tensor, block_size: int, batch_size: int) -> torch.Tensor:
    """nll[i] = -ln p(ids[i] | the tokens before it in its window), float64; nll[0] is NaN (never predicted)."""
    spans = windows(len(ids), block_size)
    full = [s for s in spans if s[1] - s[0] == block_size]
    groups = [full[i: i + batch_size] for i in range(0, len(full), batch_size)]
    groups += [[s] for s in spans[len(full):]]  # at most one: a shorter last window, run alone
    nll = torch.full((len(ids),), math.nan, dtype=torch.float64)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        for group in groups:
            x = torch.stack([ids[a:b] for a, b in group]).to(device)
            out = model(input_ids=x)
            logits = getattr(out, "logits", out)[:, :-1].float()
            losses = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                       reduction="none").view(len(group), -1).double().cpu()
            for (a, b), row in zip(group, losses):
                nll[a + 1: b] = row
    finally:
        model.train(was_training)
    return nll
