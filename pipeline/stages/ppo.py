"""PPO: RLHF of the SFT policy against the reward model, with our trainer (`pipeline.rl`) on accelerate.

    pipeline stage ppo --run runs/tiny ppo.total_episodes=512
    accelerate launch --config_file recipes/accelerate/cpu_2proc.yaml -m pipeline.stages.ppo --run runs/tiny

Policy from `<run>/sft/final` (a full model, or a LoRA adapter trained further, whose adapter-disabled base is
the reference: no second copy); otherwise the reference is a frozen copy. Reward model from
`<run>/reward/final` (one label). Values (`value_model`): `reward`, a separate model that starts as a copy of
the reward model (as TRL did), or `policy_head`, a zero-initialised linear head on the policy's last hidden
state (`pipeline.rl.value_head`: no second backbone in memory). Prompts: the `prompt` column of the data stage's
`prompts` (any prompt-only dataset works the same), a seeded order per pass. PPO-ptx (`ptx_coef` > 0): the
policy's LM loss on the `text` of `ptx_dataset` (train split, packed into blocks of `ptx_block_size` tokens as
the pretrain stage packs them), weighted by `ptx_coef`, joins every micro-step's loss (`pipeline.rl.ptx`).
Checkpoints `<run>/ppo/checkpoint-<update>/` hold models, optimizer, scheduler, RNG states, KL controller and the
update count; a killed run resumes from the last one. Writes `<run>/ppo/final/` (the policy, loadable with
`AutoModelForCausalLM` or, for LoRA, `AutoPeftModelForCausalLM`) and `<run>/ppo/value/` (the value model, or
with `policy_head` the head alone: `value_head.safetensors` and `value_head.json`).

At the end, the SFT policy and the PPO policy are evaluated side by side on the held-out prompts (mean reward-
model score of greedy responses, exact KL to the reference along them) and on the world's held-out questions
(strict exact match, with its echo and majority floors); `reward_hacking` is true when the score rose while
strict exact match fell by more than its noise (`pipeline.rl.evaluation.compare`). With `likelihood_weight` w > 0
the score PPO optimises is the reward model's + w × the response's log-likelihood under the SFT policy (the
reference) at temperature 1, the SFT model's knowledge as a fact check the one-label reward head cannot make
(the reward stage reports that reward's accuracy with the same w); `score_gain` stays the reward model's alone,
`objective_gain` is the optimised score's and `likelihood_gain` the log-likelihood's.
"""

from __future__ import annotations

import copy
import random
import shutil
from dataclasses import dataclass, field
from typing import Literal

from accelerate import PartialState
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from pipeline import console
from pipeline.artifacts import RunDir, replace_dir
from pipeline.data.packing import pack
from pipeline.errors import PipelineError
from pipeline.metrics.qa import prompt_ids
from pipeline.models.loading import is_adapter, learned_positions, load_causal_lm
from pipeline.rl.ptx import PTXBlocks
from pipeline.rl.rollout import scoring_suffix
from pipeline.rl.trainer import PPOError, PPOSettings, PPOTrainer
from pipeline.rl.value_head import PolicyWithValueHead, ValueHead, save_value_head
from pipeline.interrupts import StageInterrupted, interrupt_requested
from pipeline.trainers import check_precision, resolve_precision

NAME, NEEDS = "ppo", ("data", "sft", "reward")
SAVES_ON_INTERRUPT = True  # Ctrl-C: checkpoint, then stop (pipeline.interrupts)
HEADLINE = ("score_gain", "kl_after", "exact_match_after", "exact_match_before", "episodes_per_second")
VALUE_MODELS = ("reward", "policy_head")


@dataclass
class Config(PPOSettings):
    dataset: str = field(default="prompts", metadata={"help": "Prompt-only dataset (column `prompt`) built by the data stage."})
    eval_split: str = field(default="test", metadata={"help": "Split of `dataset` with held-out prompts for the final evaluation."})
    eval_dataset: str = field(default="qa_eval", metadata={"help": "Questions with known answers, scored by strict exact match ('' skips)."})
    score_qa_prompts: bool = field(default=False, metadata={"help": "Also score the reward model on eval_dataset's questions (held out too), not only on eval_split: more prompts, a tighter interval."})
    eval_max_new_tokens: int = field(default=32, metadata={"help": "Greedy response length in the final evaluation."})
    eval_steps: int = field(default=0, metadata={"help": "Also score the policy on the held-out prompts every N updates (0: only at the end)."})
    n_samples: int = field(default=4, metadata={"help": "Held-out prompts whose SFT and PPO responses go to metrics.json (and TensorBoard)."})
    total_episodes: int = field(default=256, metadata={"help": "Episodes (prompts answered) over the whole run, all processes together."})
    save_steps: int = field(default=10, metadata={"help": "Checkpoint every N PPO updates (0: only at the end)."})
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last N checkpoints."})
    logging_steps: int = field(default=1, metadata={"help": "Print a progress line every N updates."})
    precision: str = field(default="auto", metadata={"help": "auto: bf16 on a GPU that has it, else fp32; or fp32, bf16, fp16."})
    value_model: str = field(default="reward", metadata={"help": "reward: a separate value model, a copy of the reward model; policy_head: a linear head on the policy (one backbone)."})
    value_thread: Literal[True, False, "auto"] = field(default="auto", metadata={"help": "auto (the stage's default): the value model's forward and backward beside the policy's on a second thread where that works (one CPU process, fp32, value_model: reward, >= 2 torch threads); true (refused elsewhere) or false."})
    ptx_dataset: str = field(default="corpus", metadata={"help": "With ptx_coef > 0: the data stage's dataset whose `text` (train split) the pretraining loss reads."})
    ptx_block_size: int = field(default=128, metadata={"help": "Tokens per packed pretraining block of the ptx loss (>= 2)."})
    # progress lines and checkpoint cadence change neither the policy nor the metrics: no rerun for them
    RESULT_NEUTRAL = ("logging_steps", "save_steps", "save_total_limit")

    def __post_init__(self):
        try:
            self.check_ppo()
        except ValueError as e:
            raise ValueError(str(e)) from None
        check_precision(self.precision)
        if self.total_episodes < 1 or self.eval_max_new_tokens < 1:
            raise ValueError("total_episodes: expected >= 1" if self.total_episodes < 1 else "eval_max_new_tokens: expected >= 1")
        if self.value_model not in VALUE_MODELS:
            raise ValueError(f"value_model: expected one of {', '.join(VALUE_MODELS)}, got {self.value_model!r}")
        if self.value_thread is True and self.value_model != "reward":
            raise ValueError(f"value_thread: needs value_model: reward (a separate value model), got {self.value_model!r}")
        if self.ptx_block_size < 2:
            raise ValueError(f"ptx_block_size: expected >= 2 (a block predicts its tokens after the first), got {self.ptx_block_size}")


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    prompts, held_out, qa = load_prompts(cfg, run)
    policy_path, reward_path = run.final("sft"), run.final("reward")
    tokenizer = AutoTokenizer.from_pretrained(policy_path)
    ptx = load_ptx_blocks(cfg, run, tokenizer) if cfg.ptx_coef > 0 else None
    reward_model = load_reward_model(reward_path)
    check_positions(cfg, tokenizer, reward_model.config, [*prompts, *held_out])
    policy, reference = load_policy(policy_path)
    value_model = copy.deepcopy(reward_model) if cfg.value_model == "reward" else ValueHead.for_policy(policy)
    per_update = cfg.rollout_batch_size * state.num_processes
    total_updates = max(1, cfg.total_episodes // per_update)
    precision = resolve_precision(cfg.precision)
    trainer = PPOTrainer(cfg, policy, value_model, reward_model, tokenizer, reference=reference,
                         total_updates=total_updates, mixed_precision="no" if precision == "fp32" else precision,
                         seed=run.seed, ptx=ptx)
    out = run.stage_dir(NAME)
    history = resume(trainer, run)
    order = PromptOrder(len(prompts), run.seed)
    board = tensorboard(run, out) if state.is_main_process else None
    try:
        while trainer.step_count < total_updates:
            start = (trainer.step_count * state.num_processes + state.process_index) * cfg.rollout_batch_size
            episodes = list(range(start, start + cfg.rollout_batch_size))
            stats = trainer.step([prompts[i] for i in order.take(start, cfg.rollout_batch_size)], episodes)
            if cfg.eval_steps and trainer.step_count % cfg.eval_steps == 0:
                stats.update(held_out_scores(cfg, trainer, reward_model, tokenizer, held_out))
            history.append(stats)
            log(board, stats)
            console.update(trainer.step_count, total_updates, score=stats["score"], kl=stats["kl"])
            if state.is_main_process and trainer.step_count % cfg.logging_steps == 0:
                print(progress_line(stats, total_updates), flush=True)
            due = cfg.save_steps and trainer.step_count % cfg.save_steps == 0
            stop = interrupt_requested()  # every rank asks, once per update
            if (due or stop) and trainer.step_count < total_updates:
                checkpoint(trainer, out, history, cfg.save_total_limit)
            if stop and trainer.step_count < total_updates:
                raise StageInterrupted(f"ppo: interrupted at update {trainer.step_count}; checkpoint saved in "
                                       f"{out}/checkpoint-{trainer.step_count}; the same command resumes it")
    except PPOError as e:
        raise PipelineError(f"ppo: {e} (the last good checkpoint stays in {out})") from None
    save_models(trainer, tokenizer, out)
    metrics = {"updates": trainer.step_count, "episodes": trainer.step_count * per_update, "history": history,
               "episodes_per_second": sum(h["episodes_per_second"] for h in history[-10:]) / max(len(history[-10:]), 1),
               "value_thread": trainer.side is not None}
    if state.is_main_process:
        metrics.update(final_evaluation(cfg, run, tokenizer, reward_model, held_out, qa, out))
        if board is not None:
            board.add_text("ppo/samples", samples_table(metrics["samples"]), trainer.step_count)
            board.close()
    state.wait_for_everyone()
    return metrics


def tensorboard(run: RunDir, out):
    """A TensorBoard writer into `<run>/ppo/runs/` when the run reports to tensorboard, else None."""
    if "tensorboard" not in run.report_to:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(out / "runs"))


def log(board, stats: dict) -> None:
    if board is not None:
        for key, value in stats.items():
            if isinstance(value, (int, float)) and key != "step":
                board.add_scalar(f"ppo/{key}", value, stats["step"])


def held_out_scores(cfg: Config, trainer: PPOTrainer, reward_model, tokenizer, held_out) -> dict:
    """Mean reward-model score of the policy's greedy responses to the held-out prompts, on every process (each
    scores the same prompts; cheap next to an update)."""
    from pipeline.rl.evaluation import greedy_responses, reward_scores

    policy = trainer.unwrapped.policy
    responses = greedy_responses(policy, tokenizer, held_out, cfg.eval_max_new_tokens)
    return {"held_out_score": float(reward_scores(reward_model, tokenizer, held_out, responses).mean())}


def samples_table(samples: list[dict]) -> str:
    rows = ["| prompt | SFT | PPO |", "| --- | --- | --- |"]
    rows += [f"| {s['prompt']} | {s['sft']} | {s['ppo']} |".replace("\n", " ") for s in samples]
    return "\n".join(rows)


def load_prompts(cfg: Config, run: RunDir):
    ds = run.dataset(cfg.dataset, where="ppo.dataset")
    if "train" not in ds or "prompt" not in ds["train"].column_names:
        columns = ", ".join(ds["train"].column_names) if "train" in ds else "no train split"
        raise PipelineError(f"ppo.dataset: {cfg.dataset!r} has no `prompt` column in its train split ({columns})")
    if cfg.eval_split not in ds:
        raise PipelineError(f"ppo.eval_split: {cfg.dataset!r} has no split {cfg.eval_split!r} (splits: {', '.join(ds)})")
    qa = run.dataset(cfg.eval_dataset, where="ppo.eval_dataset")["test"] if cfg.eval_dataset else None
    if cfg.score_qa_prompts and qa is None:
        raise PipelineError("ppo.score_qa_prompts: needs an eval_dataset (it is '')")
    held_out = list(ds[cfg.eval_split]["prompt"]) + (list(qa["prompt"]) if cfg.score_qa_prompts else [])
    return list(ds["train"]["prompt"]), held_out, qa


def load_ptx_blocks(cfg: Config, run: RunDir, tokenizer) -> PTXBlocks:
    """The `text` of `ptx_dataset`'s train split packed as the pretrain stage packs it (documents joined by
    <|endoftext|>, the pretraining separator, cut into full blocks): the pretraining distribution ptx holds on to.
    Every process packs the same blocks and reads them in the same seeded order."""
    ds = run.dataset(cfg.ptx_dataset, where="ppo.ptx_dataset")
    if "train" not in ds or "text" not in ds["train"].column_names:
        columns = ", ".join(ds["train"].column_names) if "train" in ds else "no train split"
        raise PipelineError(f"ppo.ptx_dataset: {cfg.ptx_dataset!r} has no `text` column in its train split ({columns})")
    blocks, _ = pack(ds["train"]["text"], tokenizer, cfg.ptx_block_size)
    if len(blocks) == 0:
        raise PipelineError(f"ppo.ptx_dataset: the train split of {cfg.ptx_dataset!r} is shorter than one block of "
                            f"ptx_block_size {cfg.ptx_block_size} tokens")
    return PTXBlocks(blocks, seed=run.seed)


def load_reward_model(path):
    labels = AutoConfig.from_pretrained(str(path)).num_labels
    if labels != 1:
        raise PipelineError(f"ppo: the reward model at {path} has {labels} labels; PPO needs one scalar (num_labels 1)")
    return AutoModelForSequenceClassification.from_pretrained(str(path), use_safetensors=True)


def check_positions(cfg: Config, tokenizer, config, prompts: list) -> None:
    """The longest prompt, a whole response (`max_new_tokens`, or `eval_max_new_tokens` at the end) and the
    template's suffix fit the positions a model with learned position embeddings has (GPT-2): one line otherwise.
    Policy, value and reward models share the pretrained model's positions."""
    limit = learned_positions(config)
    if limit is None or not prompts:
        return
    longest = max(len(prompt_ids(tokenizer, prompt)) for prompt in prompts)
    needed = longest + max(cfg.max_new_tokens, cfg.eval_max_new_tokens) + len(scoring_suffix(tokenizer))
    if needed > limit:
        raise PipelineError(f"ppo.max_new_tokens: the longest prompt ({longest} tokens) and a response of "
                            f"{max(cfg.max_new_tokens, cfg.eval_max_new_tokens)} need {needed} positions, but the "
                            f"{config.model_type} models learned {limit} (pretrain.block_size)")


def load_policy(path):
    """(policy, reference): a LoRA adapter stays trainable and its disabled base is the reference (None)."""
    if is_adapter(path):
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(str(path), is_trainable=True, use_safetensors=True), None
    policy = AutoModelForCausalLM.from_pretrained(str(path), use_safetensors=True)
    reference = copy.deepcopy(policy).requires_grad_(False)
    return policy, reference


class PromptOrder:
    """A seeded permutation of the prompts per pass; position k of the run is `take(k, 1)`, so a resumed run
    (which knows only its update count) continues with exactly the prompts it would have seen."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._passes = n, seed, {}

    def _pass(self, index: int) -> list[int]:
        if index not in self._passes:
            self._passes[index] = random.Random(f"ppo-prompts:{self.seed}:{index}").sample(range(self.n), self.n)
        return self._passes[index]

    def take(self, start: int, count: int) -> list[int]:
        return [self._pass(k // self.n)[k % self.n] for k in range(start, start + count)]


def resume(trainer: PPOTrainer, run: RunDir) -> list[dict]:
    last = run.last_checkpoint(NAME)
    if last is None:
        return []
    return trainer.load(last).get("history", [])


def checkpoint(trainer: PPOTrainer, out, history: list[dict], keep: int) -> None:
    trainer.save(out / f"checkpoint-{trainer.step_count}", extra={"history": history})
    if trainer.accelerator.is_main_process and keep > 0:
        folders = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        for old in folders[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def save_models(trainer: PPOTrainer, tokenizer, out) -> None:
    """final/ (policy) and value/ (value model, or the value head alone), gathered on every process, written by
    the main one. The head's weights are not the policy's: final/ stays a vanilla causal LM."""
    accelerator = trainer.accelerator
    weights = accelerator.get_state_dict(trainer.model)
    model = trainer.unwrapped

    def part(prefix: str) -> dict:
        return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}

    if accelerator.is_main_process:
        models = [("final", model.policy, "policy.")]
        if isinstance(model, PolicyWithValueHead):
            save_value_head(out / ".value.tmp", part("value_head."))
            replace_dir(out / ".value.tmp", out / "value")
        else:
            models.append(("value", model.value_model, "value_model."))
        for name, module, prefix in models:
            module.save_pretrained(out / f".{name}.tmp", state_dict=part(prefix))
            tokenizer.save_pretrained(out / f".{name}.tmp")
            replace_dir(out / f".{name}.tmp", out / name)
    accelerator.wait_for_everyone()


def progress_line(stats: dict, total: int) -> str:
    return (f"ppo {stats['step']}/{total}  score {stats['score']:.3f}  kl {stats['kl']:.3f}  "
            f"entropy {stats['entropy']:.3f}  length {stats['response_length']:.1f}  eos {stats['eos_share']:.2f}  "
            f"clip {stats['policy_clip_fraction']:.3f}  {stats['episodes_per_second']:.1f} episodes/s")


def final_evaluation(cfg: Config, run: RunDir, tokenizer, reward_model, held_out, qa, out) -> dict:
    """The SFT and the PPO policy side by side (pipeline.rl.evaluation), on the main process."""
    from pipeline.metrics.qa import qa_floors
    from pipeline.rl.evaluation import compare, evaluate_policy, weighted_gain

    sft = load_causal_lm(run.final("sft")).to(reward_model.device)
    ppo = load_causal_lm(out / "final").to(reward_model.device)
    kwargs = dict(qa=qa, max_new_tokens=cfg.eval_max_new_tokens)
    before = evaluate_policy(sft, reward_model, tokenizer, held_out, reference=sft, **kwargs)
    after = evaluate_policy(ppo, reward_model, tokenizer, held_out, reference=sft, **kwargs)
    comparison = compare(before, after)
    if cfg.likelihood_weight > 0:  # the score PPO optimised: the reward model's + w × log p_SFT(response)
        comparison.update(weighted_gain(before, after, cfg.likelihood_weight))
    samples = [{"prompt": p[-1]["content"], "sft": tokenizer.decode(a, skip_special_tokens=True),
                "ppo": tokenizer.decode(b, skip_special_tokens=True)}
               for p, a, b in zip(held_out[: cfg.n_samples], before["responses"], after["responses"])]
    summary = {f"{key}_{when}": result[key] for when, result in (("before", before), ("after", after))
               for key in ("score_mean", "kl_mean", "likelihood_mean", "exact_match", "contains_answer",
                           "response_length_mean", "eos_share")
               if key in result}
    floors = {}
    if qa is not None:  # what echoing the question or the commonest answer per category would score
        floors = {f"floor_{name}": result["exact_match"] for name, result in qa_floors(qa).items()}
    return {**summary, **comparison, **floors, "samples": samples}


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
