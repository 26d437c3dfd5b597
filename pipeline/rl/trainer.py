"""PPO trainer for chat models on accelerate: rollout, advantages, several PPO epochs over mini-batches.

Ours: TRL removed `PPOTrainer` in 1.13 (and never supported resume). The update follows TRL 1.12 and "The N+
Implementation Details of RLHF with PPO" (Huang et al. 2024), built from the functions of `pipeline.rl`:

1. rollout (`pipeline.rl.rollout.collect`): a sampled response per prompt, its log-probabilities under the policy
   and the reference, the value model's values, the reward model's score;
2. score shaping: + `missing_eos_penalty` for a response without EOS, − `length_penalty` per response token,
   + `likelihood_weight` × the response's log-likelihood under the reference (the SFT policy) at temperature 1:
   the SFT model's knowledge as a fact check that a one-label reward head does not make (see the reward stage's
   `accuracy_with_likelihood`);
3. per-token rewards −β·KL(policy‖reference) (k1 or k3) plus the score on the last token; optional reward
   whitening; GAE (γ, λ); advantages whitened over the batch;
4. `ppo_epochs` passes over the batch in shuffled mini-batches (each `gradient_accumulation_steps` micro-batches):
   clipped policy loss + `vf_coef` × clipped value loss (+ `ptx_coef` × the policy's LM loss on as many rows of
   pretraining blocks: PPO-ptx, `pipeline.rl.ptx`), gradient clipping (`max_grad_norm`; 0: none, as TRL 1.12),
   one optimizer step per mini-batch;
5. β follows a fixed or adaptive KL controller (updated with the batch's mean KL per response).

The values come from a separate one-label sequence classifier (`PolicyAndValue`, the value model TRL initialised
from the reward model) or from a `ValueHead` on the policy's last hidden state (`PolicyWithValueHead`, one
backbone for both); pass a classifier or a `ValueHead` as `value_model`. With a separate value model on one CPU
process, `value_thread` runs its forward and backward in the PPO epochs on a second thread beside the policy's
(`pipeline.rl.side_thread`).

Metrics of an update (`step`). Over the batch of every process, means per episode of: `score` (the reward
model's score), `shaped_score` (after the EOS, length and likelihood terms), `ref_likelihood` (with
`likelihood_weight` > 0: Σ log p_reference(response) at temperature 1), `kl` (Σ over the response's tokens of the
per-token estimator, k1 or k3, at the sampling temperature), `response_length` (tokens up to and including the
EOS), `eos_share` (1 if the response has an EOS), `value_mean` (mean rollout value over its tokens). On this
process, means over all micro-batches of the update of: `policy_loss`, `value_loss` (`pipeline.rl.losses`),
`policy_clip_fraction`, `value_clip_fraction`, `approx_kl` (mean ½(log ratio)²), `ratio` and `entropy` (mean
per-token entropy of the temperature-scaled policy), each a token mean within its micro-batch; with ptx on,
`ptx_loss` (the policy's mean next-token cross-entropy in nats on the micro-batch's pretraining blocks, not
temperature-scaled, unweighted by `ptx_coef`). Also `kl_coef` (β after the update), `learning_rate` and
`episodes_per_second` (episodes of all processes / the step's wall time).

One `PPOTrainer.step(prompts)` is one such update on this process's prompts; under `accelerate launch` every
process runs it on its own prompts and DDP averages the gradients. `save`/`load` checkpoint everything a run
needs to continue exactly: models (a value head too), optimizer, scheduler, RNG states (accelerate), KL
controller and step. The pretraining rows of update u, micro-step k on process p are stream positions
((u·K + k)·processes + p)·rows onward (K micro-steps per update) of a `PTXBlocks` stream, a pure function of the
seed and those numbers: nothing more to save, and N processes together read what one process would.
Raises `PPOError` (a ValueError) when a number goes non-finite or KL passes `kl_limit`.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

from pipeline.rl.advantages import KL_ESTIMATORS, gae, kl_per_token, token_rewards
from pipeline.rl.kl_control import AdaptiveKLController, FixedKLController
from pipeline.rl.losses import policy_loss, value_loss
from pipeline.rl.masked import masked_entropy_from_logits, masked_whiten
from pipeline.rl.ptx import PTXBlocks
from pipeline.rl.responses import penalise_missing_eos
from pipeline.rl.rollout import (
    PolicyAndValue,
    Rollout,
    collect,
    encode_prompts,
    episode_generators,
    token_logprobs,
)
from pipeline.rl.side_thread import SideThread
from pipeline.rl.value_head import PolicyWithValueHead, ValueHead


class PPOError(ValueError):
    """A PPO update that must not continue: a non-finite number, or KL past its limit."""


@dataclass
class PPOSettings:
    rollout_batch_size: int = field(default=16, metadata={"help": "Prompts per process per PPO update (episodes = this × processes)."})
    mini_batch_size: int = field(default=8, metadata={"help": "Episodes per process per optimizer step; divides rollout_batch_size."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-batches per mini-batch; divides mini_batch_size."})
    ppo_epochs: int = field(default=2, metadata={"help": "Passes over each rollout batch."})
    max_new_tokens: int = field(default=24, metadata={"help": "Response length budget in tokens (> 0)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (log-probabilities use the same scaling)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})
    learning_rate: float = field(default=3e-5, metadata={"help": "AdamW learning rate (policy and value), decays linearly to 0."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (>= 0; 0 disables: TRL 1.12's PPO loop never clipped)."})
    kl_coef: float = field(default=0.05, metadata={"help": "β of the per-token KL penalty (initial value when adaptive)."})
    kl_estimator: str = field(default="k1", metadata={"help": "k1 (log p - log p_ref) or k3 ((r-1) - log r)."})
    kl_target: float | None = field(default=None, metadata={"help": "Adaptive KL controller target per response (null: fixed β)."})
    kl_horizon: int = field(default=10000, metadata={"help": "Adaptive KL controller horizon in episodes."})
    kl_limit: float | None = field(default=None, metadata={"help": "Stop with an error when the mean KL per response passes this (null: no limit)."})
    gamma: float = field(default=1.0, metadata={"help": "GAE discount."})
    lam: float = field(default=0.95, metadata={"help": "GAE λ."})
    clip_range: float = field(default=0.2, metadata={"help": "Policy ratio clip ε."})
    clip_range_value: float = field(default=0.2, metadata={"help": "Value clip ε."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    whiten_rewards: bool = field(default=False, metadata={"help": "Whiten the per-token rewards before GAE."})
    missing_eos_penalty: float = field(default=-1.0, metadata={"help": "Added to the score of a response with no EOS (<= 0; 0 disables)."})
    length_penalty: float = field(default=0.0, metadata={"help": "Subtracted from the score per response token (>= 0)."})
    ptx_coef: float = field(default=0.0, metadata={"help": "PPO-ptx: weight of the policy's pretraining LM loss added in every micro-step (>= 0; 0 disables)."})
    likelihood_weight: float = field(default=0.0, metadata={"help": "w: the score is the reward model's + w × Σ log p_reference(response) at temperature 1 (>= 0; 0 disables)."})
    value_thread: Literal[True, False, "auto"] = field(default=False, metadata={"help": "true: the PPO epochs run the value model's forward and backward on a second thread beside the policy's, each with half of torch's threads (one CPU process in fp32 with a separate value model; the same updates up to the rounding of a different thread count); auto: on where it can be and torch has >= 2 threads; false."})

    def check_ppo(self) -> None:
        positive = ("rollout_batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs", "max_new_tokens")
        for name in positive:
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        if self.rollout_batch_size % self.mini_batch_size:
            raise ValueError(f"mini_batch_size: {self.mini_batch_size} does not divide rollout_batch_size {self.rollout_batch_size}")
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise ValueError(f"gradient_accumulation_steps: {self.gradient_accumulation_steps} does not divide mini_batch_size {self.mini_batch_size}")
        if not (isinstance(self.value_thread, bool) or self.value_thread == "auto"):
            raise ValueError(f"value_thread: expected true, false or auto, got {self.value_thread!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator: expected one of {', '.join(KL_ESTIMATORS)}, got {self.kl_estimator!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: expected > 0, got {self.temperature}")
        if self.missing_eos_penalty > 0 or self.length_penalty < 0:
            raise ValueError("missing_eos_penalty: expected <= 0" if self.missing_eos_penalty > 0 else "length_penalty: expected >= 0")
        for name in ("ptx_coef", "likelihood_weight", "max_grad_norm"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0 (0 disables), got {value!r}")

    @property
    def micro_batch_size(self) -> int:
        return self.mini_batch_size // self.gradient_accumulation_steps

    @property
    def micro_steps_per_update(self) -> int:
        return self.ppo_epochs * self.rollout_batch_size // self.micro_batch_size


def shaped_scores(rollout: Rollout, settings: PPOSettings) -> torch.Tensor:
    """(B,) the score each episode's last token gets (module docstring, 2): the reward model's score,
    + `missing_eos_penalty` when the response has no EOS, − `length_penalty` × its tokens, + `likelihood_weight`
    × its log-likelihood under the reference (`Rollout.ref_likelihood`)."""
    s = settings
    scores = penalise_missing_eos(rollout.scores, rollout.ended, s.missing_eos_penalty) if s.missing_eos_penalty \
        else rollout.scores
    scores = scores - s.length_penalty * rollout.lengths.to(scores.dtype)
    if s.likelihood_weight > 0:
        if rollout.ref_likelihood is None:
            raise ValueError("likelihood_weight: > 0 needs rollouts collected with likelihood=True")
        scores = scores + s.likelihood_weight * rollout.ref_likelihood
    return scores


def episode_statistics(rollout: Rollout, shaped_scores: torch.Tensor, kl: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-episode numbers (B,) whose means over the batch of every process are an update's rollout metrics
    (see the module docstring)."""
    mask = rollout.mask
    likelihood = {} if rollout.ref_likelihood is None else {"ref_likelihood": rollout.ref_likelihood}
    return {"score": rollout.scores, "shaped_score": shaped_scores, **likelihood,
            "kl": torch.where(mask, kl, 0.0).sum(1), "response_length": rollout.lengths.float(),
            "eos_share": rollout.ended.float(),
            "value_mean": torch.where(mask, rollout.values, 0.0).sum(1) / rollout.lengths}


class PPOTrainer:
    """Policy + value model trained with PPO against a frozen reward model (see the module docstring).
    `value_model`: a one-label sequence classifier, or a `ValueHead` on the policy. `ptx`: the pretraining blocks
    that `settings.ptx_coef` weighs (required when it is > 0)."""

    def __init__(self, settings: PPOSettings, policy, value_model, reward_model, tokenizer, reference=None,
                 total_updates: int = 1, mixed_precision: str = "no", seed: int = 0, ptx: PTXBlocks | None = None):
        from accelerate import Accelerator

        settings.check_ppo()
        if settings.ptx_coef > 0 and ptx is None:
            raise ValueError("ptx_coef: > 0 needs the pretraining blocks (ptx=PTXBlocks(...))")
        accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision,
                                  gradient_accumulation_steps=settings.gradient_accumulation_steps)
        self.settings, self.accelerator, self.tokenizer, self.seed = settings, accelerator, tokenizer, seed
        self.side = self.side_thread(settings, accelerator, value_model, mixed_precision)
        self.ptx = ptx if settings.ptx_coef > 0 else None
        model = (PolicyWithValueHead(policy, value_model) if isinstance(value_model, ValueHead)
                 else PolicyAndValue(policy, value_model))
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate,
                                      weight_decay=0.0, fused=True)  # transformers' defaults (TRL 1.12 too): eps 1e-8, no decay; one fused kernel
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(total_updates, 1)))
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        # not prepared: accelerate would step it once per process. Not registered for accelerate's checkpointing
        # either, which would pickle it and read it back as a full pickle: its state goes into our JSON.
        self.scheduler = scheduler
        self.reward_model = reward_model.to(accelerator.device).eval()
        self.reference = reference.to(accelerator.device).eval() if reference is not None else None
        self.kl_control = (AdaptiveKLController(settings.kl_coef, settings.kl_target, settings.kl_horizon)
                           if settings.kl_target is not None else FixedKLController(settings.kl_coef))
        self.step_count = 0

    @staticmethod
    def side_thread(settings: PPOSettings, accelerator, value_model, mixed_precision: str) -> SideThread | None:
        """The thread the value model runs on with `value_thread` (None without it). It cannot work with a value
        head (which shares the policy's backbone), several processes (DDP needs one forward and backward of the
        wrapped module), mixed precision (autocast does not reach a second thread) or a GPU (one stream anyway):
        `true` is refused there, `auto` is off there and with fewer than 2 torch threads to split."""
        if settings.value_thread is False:
            return None
        problem = ("a value head on the policy has no separate model to run beside it" if isinstance(value_model, ValueHead)
                   else f"{accelerator.num_processes} processes: one process only" if accelerator.num_processes > 1
                   else f"device {accelerator.device.type}: CPU only" if accelerator.device.type != "cpu"
                   else f"mixed precision {mixed_precision}: fp32 only" if mixed_precision != "no" else None)
        if settings.value_thread == "auto":
            return SideThread() if problem is None and torch.get_num_threads() >= 2 else None
        if problem:
            raise ValueError(f"value_thread: {problem}")
        return SideThread()

    @property
    def unwrapped(self) -> PolicyAndValue | PolicyWithValueHead:
        return self.accelerator.unwrap_model(self.model)

    def step(self, prompts: list[list[dict]], episodes: list[int]) -> dict:
        """One PPO update on this process's `prompts`, whose indices in the run (over all processes) are
        `episodes` (they seed the sampling); returns the update's metrics (also checked for sanity)."""
        start = time.perf_counter()
        rollout = self.rollout(prompts, episodes)
        advantages, returns, stats = self.advantages(rollout)
        stats.update(self.update(rollout, advantages, returns))
        self.kl_control.update(stats["kl"], n_steps=len(prompts) * self.accelerator.num_processes)
        self.step_count += 1
        stats.update(step=self.step_count, kl_coef=self.kl_control.value, learning_rate=self.scheduler.get_last_lr()[0],
                     episodes_per_second=len(prompts) * self.accelerator.num_processes / (time.perf_counter() - start))
        self.check(stats)
        return stats

    def rollout(self, prompts: list[list[dict]], episodes: list[int]) -> Rollout:
        ids, mask = encode_prompts(self.tokenizer, prompts, self.accelerator.device)
        self.unwrapped.eval()
        s = self.settings
        return collect(self.unwrapped, self.reference, self.reward_model, self.tokenizer, ids, mask,
                       max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                       generators=episode_generators(self.seed, episodes, self.accelerator.device),
                       likelihood=s.likelihood_weight > 0)

    def advantages(self, rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Shaped scores, per-token rewards, GAE; plus the rollout's statistics (gathered over processes)."""
        s, mask = self.settings, rollout.mask
        scores = shaped_scores(rollout, s)
        kl = kl_per_token(rollout.logprobs, rollout.ref_logprobs, s.kl_estimator)
        rewards = token_rewards(scores, kl, self.kl_control.value, rollout.lengths)
        everywhere = self.all_reduce  # statistics over the whole batch, all processes together
        if s.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False, all_reduce=everywhere)
        advantages, returns = gae(rewards, rollout.values, mask, s.gamma, s.lam)
        advantages = masked_whiten(advantages, mask, all_reduce=everywhere)
        per_episode = episode_statistics(rollout, scores, kl)
        gathered = self.accelerator.gather(torch.stack(list(per_episode.values())))  # (processes × names, B)
        gathered = gathered.reshape(self.accelerator.num_processes, len(per_episode), -1).transpose(0, 1)
        return advantages, returns, {name: float(row.mean()) for name, row in zip(per_episode, gathered)}

    def update(self, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> dict:
        """`ppo_epochs` passes of shuffled mini-batches; means of the per-micro-batch statistics."""
        s, totals, micro_steps = self.settings, {}, 0
        self.model.train()
        for _ in range(s.ppo_epochs):
            order = torch.randperm(len(rollout.responses), device=rollout.responses.device)
            for first in range(0, len(order), s.mini_batch_size):
                mini_batch = order[first: first + s.mini_batch_size]
                tokens = self.all_reduce(rollout.lengths[mini_batch].sum().float())  # of the global mini-batch
                for part in mini_batch.split(s.micro_batch_size):
                    batch = rollout.select(part)
                    width = batch.responses.shape[1]
                    ptx_ids = self.ptx_rows(micro_steps, len(part)) if self.ptx is not None else None
                    with self.accelerator.accumulate(self.model):
                        stats = self.micro_step(batch, advantages[part, :width], returns[part, :width], tokens, ptx_ids)
                    for key, value in stats.items():
                        totals[key] = totals.get(key, 0.0) + value
                    micro_steps += 1
        self.scheduler.step()
        return {key: value / micro_steps for key, value in totals.items()}

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of `tensor` over all processes."""
        return self.accelerator.reduce(tensor, reduction="sum") if self.accelerator.num_processes > 1 else tensor

    def ptx_rows(self, micro_step: int, rows: int) -> torch.Tensor:
        """The pretraining blocks of micro-step `micro_step` of this update on this process: a pure function of
        (seed, update, micro-step, process), see the module docstring."""
        s, processes = self.settings, self.accelerator.num_processes
        index = (self.step_count * s.micro_steps_per_update + micro_step) * processes + self.accelerator.process_index
        return self.ptx.rows(index * rows, rows).to(self.accelerator.device)

    def micro_step(self, batch: Rollout, advantages, returns, mini_batch_tokens: torch.Tensor, ptx_ids=None) -> dict:
        """Forward, loss and backward on one micro-batch, then the optimizer step when the mini-batch is complete.
        One forward of `self.model` and one backward (`micro_loss`), or with `value_thread` the policy's forward
        and backward here and the value model's on the side thread: the same gradients, as the two models share
        no parameter and the loss is the sum of their terms."""
        s = self.settings
        if self.side is None:
            loss, stats = self.micro_loss(batch, advantages, returns, mini_batch_tokens, ptx_ids)
            self.accelerator.backward(loss)
        else:
            share, model = self.token_share(batch, mini_batch_tokens), self.unwrapped
            inputs = (batch.query_responses, batch.attention_mask, batch.responses.shape[1])

            def policy_side():
                loss, stats = self.policy_objective(*model.policy_outputs(*inputs, ptx_ids), batch, advantages, share)
                self.accelerator.backward(loss)
                return stats

            def value_side():
                loss, stats = self.value_objective(model.values(*inputs), batch, returns, share)
                self.accelerator.backward(loss)
                return stats

            policy_stats, value_stats = self.side.run(policy_side, value_side)
            stats = {**policy_stats, **value_stats}
        if self.accelerator.sync_gradients and s.max_grad_norm > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), s.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()
        return stats

    def token_share(self, batch: Rollout, mini_batch_tokens: torch.Tensor) -> torch.Tensor:
        """The micro-batch's share of the global mini-batch's response tokens, × processes × micro-batches (which
        DDP and accumulation divide out again): the weight of its token-mean PPO losses."""
        s = self.settings
        return batch.lengths.sum() * self.accelerator.num_processes * s.gradient_accumulation_steps / mini_batch_tokens

    def micro_loss(self, batch: Rollout, advantages, returns, mini_batch_tokens: torch.Tensor, ptx_ids=None):
        """The loss to backpropagate for one micro-batch, and its statistics. The PPO losses are token means;
        each is weighted by its share of the global mini-batch's tokens (`token_share`), so the gradient is the
        token mean over the whole mini-batch whatever its split. With `ptx_ids` (as many rows of pretraining
        blocks), + `ptx_coef` × the policy's LM loss on them, unweighted: every micro-batch has the same rows and
        tokens, so the division by processes × micro-batches leaves the mean over the mini-batch's blocks. All
        from one forward of `self.model`."""
        logits, values, ptx_loss = self.model(batch.query_responses, batch.attention_mask, batch.responses.shape[1],
                                              ptx_ids)
        share = self.token_share(batch, mini_batch_tokens)
        policy_term, policy_stats = self.policy_objective(logits, ptx_loss, batch, advantages, share)
        value_term, value_stats = self.value_objective(values, batch, returns, share)
        return policy_term + value_term, {**policy_stats, **value_stats}

    def policy_objective(self, logits, ptx_loss, batch: Rollout, advantages, share):
        """The policy's term of the micro-batch loss (clipped PPO loss × `share`, + `ptx_coef` × `ptx_loss`) and
        its statistics; `logits` are the policy's at the response columns, not temperature-scaled."""
        s, mask = self.settings, batch.mask
        logits = logits / s.temperature
        policy = policy_loss(token_logprobs(logits, batch.responses), batch.logprobs, advantages, mask, s.clip_range)
        with torch.no_grad():
            entropy = masked_entropy_from_logits(logits, mask)
        stats = {"policy_loss": policy["loss"].item(), "policy_clip_fraction": float(policy["clip_fraction"]),
                 "approx_kl": float(policy["approx_kl"]), "ratio": float(policy["ratio_mean"]), "entropy": float(entropy)}
        loss = policy["loss"] * share
        if ptx_loss is not None:
            loss = loss + s.ptx_coef * ptx_loss
            stats["ptx_loss"] = ptx_loss.item()
        return loss, stats

    def value_objective(self, values, batch: Rollout, returns, share):
        """The value model's term of the micro-batch loss (`vf_coef` × clipped value loss × `share`) and its
        statistics."""
        s = self.settings
        value = value_loss(values, batch.values, returns, batch.mask, s.clip_range_value)
        return s.vf_coef * value["loss"] * share, {"value_loss": value["loss"].item(),
                                                   "value_clip_fraction": float(value["clip_fraction"])}

    def check(self, stats: dict) -> None:
        bad = sorted(k for k, v in stats.items() if isinstance(v, float) and not math.isfinite(v))
        if bad:
            raise PPOError(f"step {self.step_count}: non-finite {', '.join(bad)}")
        limit = self.settings.kl_limit
        if limit is not None and stats["kl"] > limit:
            raise PPOError(f"step {self.step_count}: KL {stats['kl']:.4g} per response passed kl_limit {limit}")

    def save(self, folder: Path, extra: dict | None = None) -> None:
        """A checkpoint to continue from: accelerate state (models, optimizer, scheduler, RNG states of every
        process) and ours in `trainer_state.json`, written last (a folder without it is incomplete). Call it on
        every process; `extra` (e.g. the metrics history) is stored with our state."""
        self.accelerator.save_state(str(folder))
        if self.accelerator.is_main_process:
            state = {"step": self.step_count, "kl_control": self.kl_control.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "settings": asdict(self.settings), **(extra or {})}
            partial = Path(folder) / ".trainer_state.json.tmp"  # renamed into place: never half a trainer_state
            partial.write_text(json.dumps(state))
            os.replace(partial, Path(folder) / "trainer_state.json")
        self.accelerator.wait_for_everyone()

    def load(self, folder: Path) -> dict:
        """Continue from a `save`d checkpoint; returns its state (with the `extra` it was saved with)."""
        self.accelerator.load_state(str(folder))
        state = json.loads((Path(folder) / "trainer_state.json").read_text())
        self.step_count = state["step"]
        self.kl_control.load_state_dict(state["kl_control"])
        self.scheduler.load_state_dict(state["scheduler"])
        return state
