"""Our PPO (`pipeline.rl.PPOTrainer`) with the command line and JSON output of `trl112_ppo.py`, so that
`benchmarks/ppo_vs_trl.py` runs both sides the same way: a fresh process each, the same run folder (policy
`sft/final`, reward model and value init `reward/final`, prompts `data/prompts` train), the same settings.

    python benchmarks/peers/ours_ppo.py --run runs/tiny --episodes 256 --batch-size 16 --mini-batches 2 \
        --ppo-epochs 2 --response-length 24 --out ours.json [--save DIR] [--value-model policy_head]

`--value-model` is the ppo stage's `value_model`, built the same way: `reward` (default; like TRL 1.12) a separate
value model, a copy of the reward model; `policy_head` a zero-initialised `pipeline.rl.value_head.ValueHead` on the
policy's last hidden state (one backbone), which TRL 1.12 does not offer. `--value-thread`: the stage's
`value_thread` (one process, `value_model: reward`): the value model's forward and backward on a second thread
beside the policy's, each with half of `--threads` torch threads. `--save DIR`: after training, the final
policy alone (`save_pretrained`, safetensors; no value model or head) and the SFT tokenizer, as the ppo stage
writes `ppo/final/`.

`--snapshot-every K --snapshots DIR`: the policy after every K-th update too (`benchmarks/peers/snapshots.py`).

Timed: the update loop only (rollouts and PPO epochs), as the peer times `trainer.train()`. Episodes are whole
batches: ceil(episodes / (batch size × processes)) updates, as TRL 1.12 counts them.

Under `accelerate launch` (N processes), `--batch-size` is per process, as TRL's `per_device_train_batch_size`:
each update, process p answers prompts (update · N + p) · batch onward of the seeded order, as the ppo stage
does, and only the main process writes the JSON (its own peak RSS) and the policy.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pipeline.rl.trainer import PPOSettings, PPOTrainer  # noqa: E402
from pipeline.rl.value_head import ValueHead  # noqa: E402
from pipeline.runner import distributed_state  # noqa: E402
from pipeline.stages.ppo import VALUE_MODELS, PromptOrder, load_policy, load_reward_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshots import Snapshots, add_snapshot_arguments  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--episodes", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mini-batches", type=int, default=1)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--response-length", type=int, default=53)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--learning-rate", type=float, default=3e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--max-grad-norm", type=float, default=0.0,
                   help="gradient clipping (0: none, as TRL 1.12's PPO loop, which never clips; the ppo stage's default is 1)")
    p.add_argument("--value-model", choices=VALUE_MODELS, default="reward",
                   help="reward: a copy of the reward model (as TRL 1.12); policy_head: a value head on the policy")
    p.add_argument("--value-thread", action="store_true",
                   help="the ppo stage's value_thread: the value model on a second thread, each side with half of --threads")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save", type=Path, default=None, help="save the trained policy (and the tokenizer) here")
    add_snapshot_arguments(p)
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    import copy

    import datasets
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.run / "sft" / "final")
    policy, reference = load_policy(args.run / "sft" / "final")
    reward_model = load_reward_model(args.run / "reward" / "final")
    prompts = list(datasets.load_from_disk(str(args.run / "data" / "prompts"))["train"]["prompt"])
    state = distributed_state()  # N launched CPU processes join one gloo group
    processes, rank = state.num_processes, state.process_index
    settings = PPOSettings(rollout_batch_size=args.batch_size, mini_batch_size=args.batch_size // args.mini_batches,
                           ppo_epochs=args.ppo_epochs, max_new_tokens=args.response_length, temperature=args.temperature,
                           kl_coef=args.kl_coef, learning_rate=args.learning_rate, missing_eos_penalty=0.0,
                           max_grad_norm=args.max_grad_norm, value_thread=args.value_thread)
    updates = math.ceil(args.episodes / (args.batch_size * processes))
    # as pipeline.stages.ppo.run builds it
    value_model = copy.deepcopy(reward_model) if args.value_model == "reward" else ValueHead.for_policy(policy)
    trainer = PPOTrainer(settings, policy, value_model, reward_model, tokenizer, reference=reference,
                         total_updates=updates, seed=args.seed)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    order, history = PromptOrder(len(prompts), args.seed), []
    snapshots = Snapshots(args.snapshots, args.snapshot_every, updates, state.is_main_process)
    start = time.perf_counter()
    for update in range(updates):
        first = (update * processes + rank) * args.batch_size  # this process's first episode of the update
        history.append(trainer.step([prompts[i] for i in order.take(first, args.batch_size)],
                                    list(range(first, first + args.batch_size))))
        snapshots.save(trainer.unwrapped.policy, update + 1)
    seconds = time.perf_counter() - start - snapshots.seconds  # saving snapshots is not training
    episodes = updates * args.batch_size * processes
    result = {"episodes": episodes, "updates": updates, "seconds": round(seconds, 3), "processes": processes,
              "episodes_per_second": episodes / seconds,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss_mb_before_train": rss_before,
              "score_first": history[0]["score"], "score_last": history[-1]["score"], "kl_last": history[-1]["kl"],
              "value_model": args.value_model, "value_thread": args.value_thread, "torch_version": torch.__version__, "torch_threads": torch.get_num_threads(),
              "history": [{k: h[k] for k in ("score", "kl", "entropy", "response_length")} for h in history],
              "snapshots": snapshots.saved, "snapshot_seconds": snapshots.seconds}
    if not state.is_main_process:
        return
    if args.save:  # the policy alone: PolicyAndValue / PolicyWithValueHead keep the value side apart
        trainer.unwrapped.policy.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)
        result["saved"] = str(args.save)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
