"""The value as a head on the policy: one backbone for both, instead of a second model (the recipe's
`value_model: policy_head`; the other choice, `reward`, is `pipeline.rl.rollout.PolicyAndValue`).

Ours (TRL's old `AutoModelForCausalLMWithValueHead` did the same as a model class; we keep the policy a stock
transformers model and the head a plain `torch.nn.Linear` beside it). The head reads the policy's final hidden
state after the last norm, the one the LM head reads: with `output_hidden_states=True`, transformers' output
capture (`transformers.utils.output_capturing.capture_outputs`, `tie_last_hidden_states`) replaces
`hidden_states[-1]` with the backbone's `last_hidden_state`, which Llama's and GPT-2's backbones return after
their final norm (`LlamaModel.norm`, `GPT2Model.ln_f`). One forward pass then gives the logits and the values.

Works on plain models and on peft LoRA models (the adapter-disabled base stays the reference; the head is
trained with the adapter). Saved apart from the policy, so `final/` stays a vanilla causal LM:
`value_head.safetensors` (`weight` (1, H), `bias` (1,)) and `value_head.json` describing what it reads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.rl.ptx import causal_lm_loss
from pipeline.rl.rollout import position_ids

WEIGHTS, DESCRIPTION = "value_head.safetensors", "value_head.json"


class ValueHead(torch.nn.Linear):
    """A scalar value from a hidden state of width `hidden_size`.

    Zero-initialised, weight and bias: every value starts at 0 (a neutral baseline, no seed drawn, so a run's
    random streams are those of the `reward` choice), and since ∂value/∂hidden = weight = 0, the value loss sends
    no gradient into the shared backbone until the head has learnt something: the first updates do not disturb
    the policy's features through an untrained critic. The head itself still learns from the first step
    (∂value/∂weight = hidden ≠ 0)."""

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size, 1)
        torch.nn.init.zeros_(self.weight)
        torch.nn.init.zeros_(self.bias)

    @classmethod
    def for_policy(cls, policy) -> "ValueHead":
        return cls(policy.config.hidden_size)


class PolicyWithValueHead(torch.nn.Module):
    """The policy and its value head as one module (one optimizer, one DDP wrapper), with the interface of
    `PolicyAndValue`: `forward(query_responses, attention_mask, response_width, ptx_ids=None)` returns the policy's
    logits (B, R, V) and values (B, R) at the R columns that predict the response tokens (and the LM loss on
    `ptx_ids`, or None), from one forward pass of the backbone."""

    def __init__(self, policy, value_head: ValueHead):
        super().__init__()
        self.policy, self.value_head = policy, value_head

    def forward(self, query_responses, attention_mask, response_width: int, ptx_ids=None):
        logits, hidden = self._logits_and_hidden(query_responses, attention_mask, response_width)
        ptx_loss = causal_lm_loss(self.policy, ptx_ids) if ptx_ids is not None else None
        return logits, self._head(hidden), ptx_loss

    def values(self, query_responses, attention_mask, response_width: int) -> torch.Tensor:
        """The value (B, R) of the state before each response token."""
        return self._head(self._logits_and_hidden(query_responses, attention_mask, response_width)[1])

    def _logits_and_hidden(self, query_responses, attention_mask, response_width: int):
        """Logits (not temperature-scaled) and final normed hidden states at columns P-1 .. P+R-2."""
        out = self.policy(input_ids=query_responses, attention_mask=attention_mask,
                          position_ids=position_ids(attention_mask), logits_to_keep=response_width + 1,
                          output_hidden_states=True)
        return out.logits[:, :-1], out.hidden_states[-1][:, -response_width - 1: -1]

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.value_head(hidden).squeeze(-1).float()


def save_value_head(folder: Path, weights: dict[str, torch.Tensor]) -> None:
    """`weights` ({"weight", "bias"}, e.g. from the trainer's gathered state dict) into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in weights.items()}, str(folder / WEIGHTS))
    description = {"kind": "linear value head", "in_features": int(weights["weight"].shape[1]), "out_features": 1,
                   "reads": "the policy's final hidden state after its last norm (hidden_states[-1]) at each position",
                   "value_of": "the state before the next token", "policy": "../final"}
    (folder / DESCRIPTION).write_text(json.dumps(description, indent=2) + "\n")


def load_value_head(folder: Path) -> ValueHead:
    """A `save_value_head` folder back as a `ValueHead`."""
    description = json.loads((Path(folder) / DESCRIPTION).read_text())
    head = ValueHead(description["in_features"])
    head.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    return head
