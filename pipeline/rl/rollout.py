"""PPO rollouts on a chat model: prompts -> sampled responses -> what one PPO update needs.

Ours (see `pipeline.rl`). A batch is laid out as TRL 1.12 did: `query_responses` (B, P + R) holds the prompts
left-padded to P tokens, then the responses right-padded to R tokens (every token after a response's first EOS
is pad). Position ids count from each row's first real token (`position_ids`), so left padding changes
nothing a model computes; the logits at column P - 1 + t predict response token t, and a value head's output
there is the value of the state before that token. Sampling logits are divided by the temperature, and so are
the logits every log-probability is taken from, so that the log-probabilities are those of the sampling
distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StaticCache

from pipeline.rl.ptx import causal_lm_loss
from pipeline.rl.responses import response_mask, truncate_after_eos


@dataclass
class Rollout:
    """One batch of episodes. Shapes: (B, P+R) for the sequences, (B, R) per response token, (B,) per response."""

    query_responses: torch.Tensor
    attention_mask: torch.Tensor
    prompt_width: int
    responses: torch.Tensor
    lengths: torch.Tensor       # response tokens up to and including the first EOS (or R when it has none)
    ended: torch.Tensor         # the response has an EOS
    logprobs: torch.Tensor      # policy log-probabilities of the sampled tokens (temperature-scaled)
    ref_logprobs: torch.Tensor  # the reference's, same scaling
    values: torch.Tensor        # value model, before each response token
    scores: torch.Tensor        # reward-model score of each whole response
    ref_likelihood: torch.Tensor | None = None  # Σ log p_reference(response) at temperature 1, when asked for

    @property
    def mask(self) -> torch.Tensor:
        return response_mask(self.lengths, self.responses.shape[1])

    def select(self, index: torch.Tensor) -> "Rollout":
        """The episodes at `index` (a mini-batch), without the columns that are padding in all of them
        (`trim`)."""
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        return Rollout(**{name: value[index] if isinstance(value, torch.Tensor) else value
                          for name, value in fields.items()}).trim()

    def trim(self) -> "Rollout":
        """The same episodes without the prompt columns left of the longest prompt and the response columns
        after the longest response. Only the work changes: those columns are padding in every row, and
        positions count from each row's first real token. Per-token tensors of the batch (advantages) are
        cut to `responses.shape[1]` to match."""
        first = int(self.attention_mask[:, : self.prompt_width].any(0).long().argmax())
        width = int(self.lengths.max())
        if first == 0 and width == self.responses.shape[1]:
            return self
        per_token = {name: getattr(self, name)[:, :width]
                     for name in ("responses", "logprobs", "ref_logprobs", "values")}
        end = self.prompt_width + width
        return Rollout(self.query_responses[:, first:end], self.attention_mask[:, first:end], self.prompt_width - first,
                       lengths=self.lengths, ended=self.ended, scores=self.scores, ref_likelihood=self.ref_likelihood,
                       **per_token)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... from each row's first real token (left padding gets 0)."""
    return (attention_mask.long().cumsum(1) - 1).clamp_min(0)


def encode_prompts(tokenizer, prompts: list[list[dict]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Chat-template token ids of conversational prompts (with the assistant header), left-padded."""
    rows = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids.to(device), mask.to(device)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] per position, in float32."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def response_forward(model, query_responses, attention_mask, response_width: int) -> torch.Tensor:
    """A causal LM's logits (B, R, V) at the R columns that predict the response tokens (P-1 .. P+R-2), not
    temperature-scaled. `logits_to_keep` spares the LM head the prompt columns."""
    out = model(input_ids=query_responses, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                logits_to_keep=response_width + 1)
    return out.logits[:, :-1]


def episode_generators(seed: int, episodes: list[int], device) -> list[torch.Generator]:
    """One random generator per episode, seeded by (run seed, the episode's index in the run)."""
    return [torch.Generator(device=device).manual_seed(seed * 1_000_003 + episode) for episode in episodes]


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """`probs` (B, V) with only the smallest set of most likely tokens whose mass reaches `top_p`, renormalised."""
    if top_p >= 1.0:
        return probs
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p  # the mass before a token already reaches top_p
    sorted_probs = sorted_probs.masked_fill(outside, 0.0)
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return kept / kept.sum(-1, keepdim=True)


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One token per row of `probs` (B, V), from `uniforms` (B,) in [0, 1): the first token whose cumulative
    probability exceeds u × the row's total, so token v is drawn with probability probs[v] / total and a token of
    probability 0 never. One batched search instead of a `torch.multinomial` call per row."""
    cumulative = probs.cumsum(-1)
    targets = (uniforms.to(cumulative.dtype) * cumulative[:, -1]).unsqueeze(1)
    return torch.searchsorted(cumulative, targets, right=True).squeeze(1).clamp_(max=probs.shape[1] - 1)


@torch.no_grad()
def sample_responses(policy, tokenizer, prompt_ids, prompt_mask, max_new_tokens: int, temperature: float,
                     top_p: float, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled responses (B, R = max_new_tokens), with the KV cache; rows that reached EOS continue as pad.
    Also the log-probability (B, R) of each sampled token under the temperature-scaled policy before the
    nucleus cut (what `token_logprobs(response_forward(...) / temperature, ...)` computes from a full forward pass, up to
    floating-point differences of the cached computation; 0 at pad).

    Each row draws its tokens from its own generator (`episode_generators`): its R uniforms up front, one per
    step, so a response depends on its prompt and its episode's seed only, not on the batch or the process it was
    sampled in: a run on N processes samples what one process would (up to the floating-point effects of a
    different padding). The cache is transformers' `StaticCache`, allocated once for P + R columns (a growing
    cache concatenates every layer's keys and values at every step); the prompt's forward computes the LM head
    at its last column only."""
    batch, width, pad, eos = len(prompt_ids), prompt_ids.shape[1], tokenizer.pad_token_id, tokenizer.eos_token_id
    device = prompt_ids.device
    uniforms = torch.stack([torch.rand(max_new_tokens, generator=generator, device=device) for generator in generators])
    mask = torch.cat([prompt_mask, prompt_mask.new_ones((batch, max_new_tokens))], dim=1)  # grows by one column a step
    positions = position_ids(prompt_mask)
    cache = StaticCache(config=policy.config, max_cache_len=width + max_new_tokens)
    out = policy(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=positions, cache=cache,
                 use_cache=True, logits_to_keep=1)
    positions = positions[:, -1:]
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    responses = torch.full((batch, max_new_tokens), pad, dtype=torch.long, device=device)
    logprobs = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)
    for step in range(max_new_tokens):
        log_probs = torch.log_softmax(out.logits[:, -1].float() / temperature, dim=-1)
        probs = nucleus(log_probs.exp(), top_p)
        tokens = inverse_cdf(probs, uniforms[:, step])
        logprobs[:, step] = torch.where(done, 0.0, log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1))
        tokens = torch.where(done, torch.full_like(tokens, pad), tokens)
        responses[:, step] = tokens
        done |= tokens == eos
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        positions = positions + 1
        out = policy(input_ids=tokens.unsqueeze(1), attention_mask=mask[:, : width + step + 1], position_ids=positions,
                     cache=cache, use_cache=True)
    return responses, logprobs


def scoring_suffix(tokenizer) -> list[int]:
    """The token ids the chat template writes after an assistant turn's EOS (ChatML: the newline after
    <|im_end|>). The reward model was trained on whole rendered conversations, so it read its score there; a
    finished response is scored with the same suffix."""
    turn = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    text = tokenizer.apply_chat_template(turn, tokenize=False)
    eos = tokenizer.eos_token
    tail = text[text.rindex(eos) + len(eos):] if eos in text else ""
    return tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []


def with_suffix(query_responses, attention_mask, prompt_width: int, lengths, ended, suffix: list[int], pad_id: int):
    """`query_responses` and mask with `suffix` written right after the EOS of every ended response."""
    if not suffix:
        return query_responses, attention_mask
    batch, extra = len(query_responses), len(suffix)
    ids = torch.cat([query_responses, query_responses.new_full((batch, extra), pad_id)], dim=1)
    mask = torch.cat([attention_mask, attention_mask.new_zeros((batch, extra))], dim=1)
    columns = prompt_width + lengths.unsqueeze(1) + torch.arange(extra, device=ids.device)
    rows = ended.nonzero().squeeze(1)
    suffix_ids = torch.tensor(suffix, dtype=ids.dtype, device=ids.device).expand(len(rows), extra)
    ids[rows.unsqueeze(1), columns[rows]] = suffix_ids
    mask[rows.unsqueeze(1), columns[rows]] = 1
    return ids, mask


def sequence_scores(reward_model, query_responses, attention_mask) -> torch.Tensor:
    """The reward model's scalar per sequence (its classifier reads the last non-pad token)."""
    out = reward_model(input_ids=query_responses, attention_mask=attention_mask,
                       position_ids=position_ids(attention_mask))
    return out.logits[:, 0].float()


@torch.no_grad()
def collect(policy_and_value, reference, reward_model, tokenizer, prompt_ids, prompt_mask, *, max_new_tokens: int,
            temperature: float, top_p: float, generators: list[torch.Generator], likelihood: bool = False) -> Rollout:
    """Sample a response per prompt and score it: log-probabilities under the policy (kept from sampling, as
    TRL 1.12 did) and the reference, values and the reward model's score; with `likelihood`, also each
    response's log-likelihood under the reference at temperature 1 (Σ over its tokens up to and including the
    EOS of log softmax(reference logits)[token]: `ref_likelihood`). The batch keeps the response
    columns up to its longest response (R <= max_new_tokens). `reference=None`: the policy is a peft model
    whose adapter-disabled base is the reference. `generators`: one per prompt (`episode_generators`).
    `policy_and_value`: a `PolicyAndValue` or a `pipeline.rl.value_head.PolicyWithValueHead`."""
    policy = policy_and_value.policy
    responses, logprobs = sample_responses(policy, tokenizer, prompt_ids, prompt_mask, max_new_tokens, temperature,
                                           top_p, generators)
    responses, lengths, ended = truncate_after_eos(responses, tokenizer.eos_token_id, tokenizer.pad_token_id)
    width = int(lengths.max())
    responses, logprobs = responses[:, :width], logprobs[:, :width]
    query_responses = torch.cat([prompt_ids, responses], dim=1)
    attention_mask = torch.cat([prompt_mask, response_mask(lengths, width).long()], dim=1)
    values = policy_and_value.values(query_responses, attention_mask, width)
    if reference is None:
        with policy.disable_adapter():
            ref_logits = response_forward(policy, query_responses, attention_mask, width)
    else:
        ref_logits = response_forward(reference, query_responses, attention_mask, width)
    ref_logprobs = token_logprobs(ref_logits / temperature, responses)
    ref_likelihood = (torch.where(response_mask(lengths, width), token_logprobs(ref_logits, responses), 0.0).sum(1)
                      if likelihood else None)
    scored_ids, scored_mask = with_suffix(query_responses, attention_mask, prompt_ids.shape[1], lengths, ended,
                                          scoring_suffix(tokenizer), tokenizer.pad_token_id)
    scores = sequence_scores(reward_model, scored_ids, scored_mask)
    logprobs = torch.where(response_mask(lengths, width), logprobs, 0.0)  # nothing after the EOS
    return Rollout(query_responses, attention_mask, prompt_ids.shape[1], responses, lengths, ended, logprobs,
                   ref_logprobs, values, scores, ref_likelihood)


class PolicyAndValue(torch.nn.Module):
    """The two trained models as one module, so one optimizer and one DDP wrapper cover both (as TRL did). This
    is the recipe's `value_model: reward`; `pipeline.rl.value_head.PolicyWithValueHead` is the same interface
    with the value as a head on the policy.

    `forward(query_responses, attention_mask, response_width, ptx_ids=None)` returns the policy's logits
    (B, R, V) and the values (B, R) at the R columns that predict the response tokens, and the policy's causal-LM
    loss on the packed blocks `ptx_ids` (`pipeline.rl.ptx`; None without them): inside one forward, so that one
    backward through the DDP-wrapped module covers all three. The value model is a sequence classifier with one
    label (initialised from the reward model) whose head is applied at each of those columns."""

    def __init__(self, policy, value_model):
        super().__init__()
        self.policy, self.value_model = policy, value_model
        if not hasattr(value_model, "score"):
            raise ValueError(f"value model {type(value_model).__name__} has no `score` head (a one-label "
                             "AutoModelForSequenceClassification is expected)")

    def forward(self, query_responses, attention_mask, response_width: int, ptx_ids=None):
        logits, ptx_loss = self.policy_outputs(query_responses, attention_mask, response_width, ptx_ids)
        return logits, self.values(query_responses, attention_mask, response_width), ptx_loss

    def policy_outputs(self, query_responses, attention_mask, response_width: int, ptx_ids=None):
        """The policy's half of `forward`: its logits (B, R, V) and its ptx loss (None without `ptx_ids`)."""
        logits = response_forward(self.policy, query_responses, attention_mask, response_width)
        return logits, causal_lm_loss(self.policy, ptx_ids) if ptx_ids is not None else None

    def values(self, query_responses, attention_mask, response_width: int) -> torch.Tensor:
        """The value (B, R) of the state before each response token."""
        backbone = getattr(self.value_model, self.value_model.base_model_prefix)
        hidden = backbone(input_ids=query_responses, attention_mask=attention_mask,
                          position_ids=position_ids(attention_mask)).last_hidden_state
        return self.value_model.score(hidden[:, -response_width - 1: -1]).squeeze(-1).float()
