"""PPO-ptx: the pretraining loss mixed into every PPO micro-step, against the "alignment tax" (InstructGPT,
Ouyang et al. 2022, eq. 2: objective + γ · E_pretrain[log π(x)]).

Ours: TRL's PPO never had it. The trainer adds `ptx_coef` × `causal_lm_loss` of the policy on one micro-batch of
packed pretraining blocks (as many rows as the PPO micro-batch) to each micro-step's loss, so one backward covers
both. `PTXBlocks` is the source of those blocks: an endless stream of seeded permutations of the blocks, one per
pass, read at a position the trainer computes from (update, micro-step, process). The rows a micro-step gets are
thus a pure function of (seed, position): a resumed run needs no saved data cursor to draw the same rows.
"""

from __future__ import annotations

import numpy as np
import torch


def causal_lm_loss(model, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (float32) of a causal LM over every position of the packed blocks `ids`
    (rows, L): L - 1 predictions per row. The mask is explicitly all ones: packed blocks have no padding, but
    their document separator may be the pad token, which must still be attended to."""
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, :-1]
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten())


class PTXBlocks:
    """Packed token blocks (n, L) read as an endless stream: pass p is a permutation of the blocks seeded by
    (seed, p), and stream position k is block `order(k // n)[k % n]`. `rows(start, count)` depends on nothing
    else, so the same (seed, start) always gives the same rows, in any process and after any resume."""

    def __init__(self, blocks: np.ndarray, seed: int):
        if blocks.ndim != 2 or len(blocks) == 0:
            raise ValueError(f"PTXBlocks: expected a non-empty (n, L) array of blocks, got shape {blocks.shape}")
        self.blocks, self.seed = blocks, seed
        self._cached = (None, None)  # (pass index, its order): consecutive reads stay within one pass or two

    @property
    def block_size(self) -> int:
        return self.blocks.shape[1]

    def order(self, pass_index: int) -> np.ndarray:
        if self._cached[0] != pass_index:
            self._cached = (pass_index, np.random.default_rng([self.seed, pass_index]).permutation(len(self.blocks)))
        return self._cached[1]

    def rows(self, start: int, count: int) -> torch.Tensor:
        """Stream positions start .. start + count - 1 as an int64 tensor (count, L) on the CPU."""
        n = len(self.blocks)
        index = [int(self.order(k // n)[k % n]) for k in range(start, start + count)]
        return torch.from_numpy(np.asarray(self.blocks[index], dtype=np.int64))
