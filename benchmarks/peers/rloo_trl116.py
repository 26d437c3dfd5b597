"""Peer: TRL 1.16's `RLOOTrainer` (the current-TRL alternative to PPO) on a pipeline run folder, with the command
line and JSON output of `trl112_ppo.py`, for `benchmarks/ppo_vs_trl.py`. Runs in the project's own venv.

    python benchmarks/peers/rloo_trl116.py --run runs/tiny --episodes 256 --batch-size 16 --response-length 24 --out rloo.json

Same policy (`sft/final`), reward model (`reward/final`, via `reward_funcs`), prompts (`data/prompts` train),
response length, temperature, β and learning rate. What RLOO does differently, by design: no value model; each
prompt gets `--num-generations` sampled completions and each one's baseline is the mean reward of the others;
one optimizer step per batch of `--batch-size` completions (`--batch-size / --num-generations` prompts). An
episode here is one completion. RLOO logs KL as a mean per completion token: `kl_last` multiplies it by the mean
completion length to put it on the per-response scale of the PPO rows (an approximation). `--save DIR`: after
training, the policy (`trainer.model`, `save_pretrained`, safetensors) and the tokenizer. Under `accelerate
launch` with N processes, `--batch-size` is per process (`per_device_train_batch_size`: N × batch completions a
step) and the main process writes the JSON and the policy. `--snapshot-every K --snapshots DIR`: the policy after
every K-th optimizer step too (`peers/snapshots.py`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snapshots import Snapshots, add_snapshot_arguments  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--episodes", type=int, required=True, help="completions in all")
    p.add_argument("--batch-size", type=int, default=16, help="completions per optimizer step")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (>= 2)")
    p.add_argument("--response-length", type=int, default=24)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--learning-rate", type=float, default=3e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save", type=Path, default=None, help="save the trained policy (and the tokenizer) here")
    add_snapshot_arguments(p)
    p.add_argument("--mini-batches", type=int, default=None, help="ignored (PPO only)")
    p.add_argument("--ppo-epochs", type=int, default=None, help="ignored (PPO only)")
    return p.parse_known_args()[0]


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from trl import RLOOConfig, RLOOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.run / "sft" / "final", padding_side="left")
    reward_model = AutoModelForSequenceClassification.from_pretrained(args.run / "reward" / "final")
    prompts = datasets.load_from_disk(str(args.run / "data" / "prompts"))["train"].select_columns(["prompt"])
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # under accelerate launch: --batch-size is per process
    steps = math.ceil(args.episodes / (args.batch_size * processes))
    with_tmp = Path(args.out).with_suffix(".trainer")
    config = RLOOConfig(output_dir=str(with_tmp), use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                        logging_steps=1, seed=args.seed, max_steps=steps, per_device_train_batch_size=args.batch_size,
                        num_generations=args.num_generations, max_completion_length=args.response_length,
                        temperature=args.temperature, beta=args.kl_coef, learning_rate=args.learning_rate,
                        lr_scheduler_type="linear", disable_tqdm=True)
    trainer = RLOOTrainer(model=AutoModelForCausalLM.from_pretrained(args.run / "sft" / "final"), args=config,
                          reward_funcs=reward_model, reward_processing_classes=tokenizer, train_dataset=prompts,
                          processing_class=tokenizer)
    snapshots = Snapshots(args.snapshots, args.snapshot_every, steps, trainer.accelerator.is_main_process)
    trainer.add_callback(snapshots.callback(lambda model: model))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start - snapshots.seconds  # saving snapshots is not training
    logs = [h for h in trainer.state.log_history if "reward" in h]
    history = [{"score": h["reward"], "kl": h.get("kl", 0.0) * h.get("completions/mean_length", 1.0)} for h in logs]
    if not trainer.accelerator.is_main_process:  # the main process reports and saves
        return
    episodes = steps * args.batch_size * processes
    result = {"episodes": episodes, "updates": steps, "seconds": seconds, "processes": processes,
              "episodes_per_second": episodes / seconds,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak_rss_mb_before_train": rss_before,
              "score_first": history[0]["score"], "score_last": history[-1]["score"], "kl_last": history[-1]["kl"],
              "history": history, "snapshots": snapshots.saved, "snapshot_seconds": snapshots.seconds}
    if args.save:
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)
        result["saved"] = str(args.save)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
