"""Bits per UTF-8 byte of a token stream, from each predicted token's loss and byte length.

Inputs, one per predicted token i (every token of the stream but the first, see
`pipeline.metrics.lm.bits_per_byte` for how the losses are taken in overlapping windows):
nll (-ln p(token_i | its context), in nats) and token_bytes (the UTF-8 byte length the token decodes to; 0 for
separators and other special tokens). Then

    bits_per_byte   = sum_{i: bytes_i > 0} nll_i / ln 2  /  sum_i bytes_i     (a 0-byte token is context, not cost)
    nats_per_token  = mean of nll_i over every predicted token (separators too): the split's loss
    bits, bytes, predicted_tokens, scored_tokens (#{i: bytes_i > 0})

Sums in float64. A stream whose predicted tokens have no bytes has no bits per byte (ValueError).
"""

import math

import datasets
import evaluate
import numpy as np


class BitsPerByte(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=__doc__,
            features=datasets.Features({"nll": datasets.Value("float64"), "token_bytes": datasets.Value("int64")}))

    def _compute(self, nll, token_bytes):
        nll, lengths = np.asarray(nll, dtype=np.float64), np.asarray(token_bytes, dtype=np.int64)
        scored = lengths > 0
        n_bytes = int(lengths.sum())
        if n_bytes == 0:
            raise ValueError("token_bytes: no predicted token has any bytes (only separators): bits per byte undefined")
        bits = float(nll[scored].sum()) / math.log(2)
        return {"bits_per_byte": bits / n_bytes, "nats_per_token": float(nll.mean()), "bits": bits,
                "predicted_tokens": len(nll), "scored_tokens": int(scored.sum()), "bytes": n_bytes}
