"""PPO peer: TRL 1.12.0's trl.experimental.ppo.PPOTrainer on a pipeline run folder.

Run with the peer virtualenv's python (benchmarks/peers/setup_trl112.sh makes it); this script must not import
`pipeline`, which that venv does not have:

    benchmarks/peers/.venv-trl112/bin/python benchmarks/peers/trl112_ppo.py --run runs/tiny \\
        --episodes 128 --batch-size 16 --mini-batches 2 --ppo-epochs 2 --response-length 24 --out ppo_trl112.json

Reads <run>/sft/final (policy + tokenizer), <run>/reward/final (reward model, and the value model's init: a second
copy), and the train split of <run>/data/prompts (column `prompt`: a conversational list of messages, rendered with the
tokenizer's chat template and add_generation_prompt=True). Writes one JSON object to --out. With --save DIR, after
training, the trained policy alone goes to DIR the way TRL 1.12 saves it: `PPOTrainer.save_model` swaps its
`PolicyAndValueWrapper` for `.policy` ("save only the policy for inference") and `Trainer._save` writes it with
`save_pretrained` (safetensors) and the tokenizer; the script then checks that the saved weights are the policy's.

With --snapshot-every K --snapshots DIR, the policy after every K-th update too, saved from a `TrainerCallback`'s
`on_step_end` (`peers/snapshots.py`; its seconds are taken out of the timed ones).

How TRL 1.12 counts: one update = one rollout of --batch-size prompts per process (one completion each;
`per_device_train_batch_size`); it runs ceil(episodes / (batch_size × processes)) updates, so it trains on a
whole number of batches (`episodes` in the JSON is the count it actually ran; the peak RSS is the main
process's). Each update does --ppo-epochs passes over --mini-batches minibatches, one optimizer step each, with no
gradient clipping (TRL 1.12's loop never calls `clip_grad_norm_`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshots import Snapshots, add_snapshot_arguments  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="pipeline run folder (sft/final, reward/final, data/prompts)")
    p.add_argument("--episodes", type=int, required=True, help="total episodes (rounded up to whole batches)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per rollout/update")
    p.add_argument("--mini-batches", type=int, default=1, help="minibatches per PPO epoch (must divide batch size)")
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--response-length", type=int, default=53, help="max new tokens per completion")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--missing-eos-penalty", type=float, default=None, help="subtracted from the score without EOS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="where to write the result JSON")
    p.add_argument("--save", type=Path, default=None, help="save the trained policy (and the tokenizer) here")
    add_snapshot_arguments(p)
    # The remaining knobs default to TRL 1.12's own defaults; the benchmark sets them to match our trainer.
    p.add_argument("--learning-rate", type=float, default=3e-6)
    p.add_argument("--lr-scheduler-type", default="linear", help="TrainingArguments lr_scheduler_type")
    p.add_argument("--kl-estimator", choices=["k1", "k3"], default="k1")
    p.add_argument("--cliprange", type=float, default=0.2)
    p.add_argument("--cliprange-value", type=float, default=0.2)
    p.add_argument("--vf-coef", type=float, default=0.1)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--lam", type=float, default=0.95)
    p.add_argument("--whiten-rewards", action="store_true")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="TRL's configs turn it on by default; off here unless asked")
    p.add_argument("--rollout-forward-batch-size", type=int, default=64,
                   help="local_rollout_forward_batch_size (no-grad generation/scoring chunk)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; give ours the same. On a loaded 2-core machine 2 threads ran "
                   "this 14x slower than 1 (OpenMP threads fighting other processes)")
    return p.parse_args(argv)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def save_policy(trainer, folder: Path) -> None:
    """TRL 1.12's own save (policy only, see the module docstring), checked: the safetensors in `folder` hold the
    policy's weights under the policy's own names, none of the value model's, none prefixed by the wrapper."""
    from safetensors import safe_open

    if trainer.accelerator.num_processes == 1:
        trainer.save_model(str(folder))
    elif trainer.accelerator.is_main_process:
        # Under DDP TRL 1.12's save_model writes the whole wrapper (value model too) on the main process and
        # fails on the others (transformers 5.24's Trainer has no `is_distributed_loading_by_transformers` for
        # it): save what it means to save, the unwrapped policy, the same way (save_pretrained, safetensors).
        trainer.accelerator.unwrap_model(trainer.model).policy.save_pretrained(str(folder))
        trainer.processing_class.save_pretrained(str(folder))
    if not trainer.accelerator.is_main_process:
        return
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        sys.exit(f"TRL 1.12's save_model wrote no safetensors to {folder}")
    saved = set()
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            saved |= set(handle.keys())
    state = trainer.accelerator.unwrap_model(trainer.model).policy.state_dict()
    kept = {state[k].data_ptr() for k in saved if k in state}
    missing = [k for k in state if k not in saved and state[k].data_ptr() not in kept]  # tied weights are saved once
    if not saved <= set(state) or missing:
        sys.exit(f"{folder} does not hold the policy alone: not policy weights {sorted(saved - set(state))[:5]}, "
                 f"policy weights missing {missing[:5]}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.batch_size % args.mini_batches:
        sys.exit(f"--batch-size {args.batch_size} must be a multiple of --mini-batches {args.mini_batches}")

    import torch
    import transformers
    import trl
    from datasets import load_from_disk
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)

    sft_dir, rm_dir = args.run / "sft" / "final", args.run / "reward" / "final"
    # PPOTrainer generates from left-padded query batches (its collator pads with the tokenizer's padding side).
    tokenizer = AutoTokenizer.from_pretrained(sft_dir, padding_side="left")
    if tokenizer.pad_token_id is None:
        sys.exit("the SFT tokenizer has no pad token; TRL 1.12's PPO masks by pad_token_id")
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        print("warning: pad == eos: TRL 1.12's PPO masks every EOS as padding", file=sys.stderr)
    rm_tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    if rm_tokenizer.get_vocab() != tokenizer.get_vocab():
        # PPOTrainer scores the policy's token ids with the reward model directly: the vocabularies must agree.
        sys.exit("reward model tokenizer differs from the policy's; TRL 1.12's PPO feeds policy token ids to the RM")

    policy = AutoModelForCausalLM.from_pretrained(sft_dir, dtype=torch.float32)
    reward_model = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1, dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1, dtype=torch.float32)
    for name, m in (("reward model", reward_model), ("value model", value_model)):
        # TRL 1.12 calls getattr(m, m.base_model_prefix)(...) and m.score(hidden_states[-1]).
        if not hasattr(m, m.base_model_prefix) or not hasattr(m, "score"):
            sys.exit(f"{name} {type(m).__name__} lacks .{m.base_model_prefix} / .score, which TRL 1.12's PPO needs")

    prompts = load_from_disk(str(args.run / "data" / "prompts"))["train"]

    def tokenize(example):
        text = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
        # The template already writes every special token it wants: do not let the tokenizer add more.
        return {"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}

    train_dataset = prompts.map(tokenize, remove_columns=prompts.column_names)
    if len(train_dataset) < args.batch_size:
        sys.exit(f"{len(train_dataset)} prompts < --batch-size {args.batch_size} (the dataloader drops the last batch)")

    out_dir = tempfile.mkdtemp(prefix="trl112_ppo_")
    config = PPOConfig(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        fp16=False,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        logging_steps=1,
        num_sample_generations=0,  # no eval dataset: no sample tables
        seed=args.seed,
        data_seed=args.seed,
        total_episodes=args.episodes,
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=args.mini_batches,
        num_ppo_epochs=args.ppo_epochs,
        response_length=args.response_length,
        temperature=args.temperature,
        kl_coef=args.kl_coef,
        kl_estimator=args.kl_estimator,
        missing_eos_penalty=args.missing_eos_penalty,
        stop_token="eos",
        learning_rate=args.learning_rate,
        lr_scheduler_type=args.lr_scheduler_type,
        cliprange=args.cliprange,
        cliprange_value=args.cliprange_value,
        vf_coef=args.vf_coef,
        gamma=args.gamma,
        lam=args.lam,
        whiten_rewards=args.whiten_rewards,
        gradient_checkpointing=args.gradient_checkpointing,
        local_rollout_forward_batch_size=args.rollout_forward_batch_size,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,  # TRL deep-copies the policy
        reward_model=reward_model,
        train_dataset=train_dataset,
        value_model=value_model,
    )
    # Keep stdout for the JSON summary: PrinterCallback would print every update's logs there.
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)
    updates = -(-args.episodes // (args.batch_size * trainer.accelerator.num_processes))  # TRL's num_total_batches
    snapshots = Snapshots(args.snapshots, args.snapshot_every, updates, trainer.accelerator.is_main_process)
    trainer.add_callback(snapshots.callback(lambda wrapper: wrapper.policy))  # PolicyAndValueWrapper's policy

    rss_before = peak_rss_mb()
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start - snapshots.seconds  # saving snapshots is not training

    if args.save:
        save_policy(trainer, args.save)

    logs = [h for h in trainer.state.log_history if "objective/scores" in h]
    if not logs:
        sys.exit("TRL 1.12's PPOTrainer logged no objective/scores")
    episodes = int(trainer.state.episode)
    result = {
        "episodes": episodes,
        "episodes_requested": args.episodes,
        "updates": len(logs),
        "seconds": seconds,
        "episodes_per_second": episodes / seconds,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_before_train": rss_before,
        # objective/scores is the mean RM score after TRL subtracts missing_eos_penalty (when one is set).
        "score_first": logs[0]["objective/scores"],
        "score_last": logs[-1]["objective/scores"],
        "kl_last": logs[-1]["objective/kl"],
        "scores_include_missing_eos_penalty": args.missing_eos_penalty is not None,
        "saved": str(args.save) if args.save else None,
        "snapshots": snapshots.saved,
        "snapshot_seconds": snapshots.seconds,
        "trl_version": trl.__version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "history": [
            {
                "episode": h["episode"],
                "scores": h["objective/scores"],
                "kl": h["objective/kl"],
                "entropy": h["objective/entropy"],
                "rlhf_reward": h["objective/rlhf_reward"],
                "num_eos_tokens": h["val/num_eos_tokens"],
            }
            for h in logs
        ],
        "config": {
            "total_episodes": config.total_episodes,
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "num_mini_batches": config.num_mini_batches,
            "num_ppo_epochs": config.num_ppo_epochs,
            "response_length": config.response_length,
            "temperature": config.temperature,
            "kl_coef": config.kl_coef,
            "kl_estimator": config.kl_estimator,
            "missing_eos_penalty": config.missing_eos_penalty,
            "stop_token": config.stop_token,
            "learning_rate": config.learning_rate,
            "lr_scheduler_type": getattr(config.lr_scheduler_type, "value", config.lr_scheduler_type),
            "cliprange": config.cliprange,
            "cliprange_value": config.cliprange_value,
            "vf_coef": config.vf_coef,
            "gamma": config.gamma,
            "lam": config.lam,
            "whiten_rewards": config.whiten_rewards,
            "gradient_checkpointing": config.gradient_checkpointing,
            "seed": config.seed,
            "num_prompts": len(train_dataset),
            "torch_threads": torch.get_num_threads(),
        },
    }
    if not trainer.accelerator.is_main_process:  # under accelerate launch: the main process reports
        return result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("episodes", "seconds", "episodes_per_second", "peak_rss_mb",
                                      "score_first", "score_last", "kl_last", "trl_version")}
    print(json.dumps(summary))
    return result


if __name__ == "__main__":
    main()
