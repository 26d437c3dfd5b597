"""Our PPO vs TRL 1.12.0's `trl.experimental.ppo.PPOTrainer` (removed in TRL 1.13), with TRL 1.16's RLOOTrainer
beside them: episodes/s, peak memory, reward gain per 1,000 episodes and the KL it was reached at.

    python benchmarks/ppo_vs_trl.py [--run runs/tiny] [--episodes 256] [--repeats 2]

Both sides run in a fresh process each (ours: `benchmarks/peers/ours_ppo.py`; TRL 1.12: `peers/trl112_ppo.py` in
the virtualenv `peers/setup_trl112.sh` builds, with the same torch, transformers, datasets and accelerate), on the
same run folder: policy `sft/final`, reward model `reward/final`, value model initialised from the reward model,
the `prompts` train split; the same batch, mini-batches, PPO epochs, response length, temperature, β (k1 KL),
learning rate with linear decay, no missing-EOS penalty, and the same number of torch threads. Without --run it
builds one with `recipes/tiny.yaml` (data to reward). Alternating repeats; the median is reported.

What differs, and stays different (each side's own design): TRL reads the reward at the EOS token (or one past a
response it counted as ending before it) and bootstraps from the value there; ours puts the score on the EOS,
inside the policy mask, and scores a finished response with the chat template's suffix after EOS, as the reward
model was trained. Prompt order is each side's own seeded shuffle. KL is the batch mean of the per-response sum of
k1 over response tokens on both sides (TRL's `objective/kl`). Score gain: `gain_per_1000` (rollout scores of the
last quarter of updates against the first quarter's); noisy on few updates. RLOO (TRL 1.16's current alternative,
`peers/rloo_trl116.py`) runs beside them as the alternative users of current TRL would pick: a different
algorithm (no value model, a leave-one-out baseline over 4 completions per prompt, one optimizer step per batch of
completions), with the same policy, reward model, prompts, response length, temperature, β, learning rate and
threads; an episode there is one completion, and its KL is its per-token KL × mean completion length.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"


def build_run(folder: Path) -> Path:
    command = [sys.executable, "-m", "pipeline.cli", "run", "recipes/tiny.yaml", f"run.output_dir={folder}",
               "run.stages=[data,tokenizer,pretrain,sft,reward]"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return folder


def side(python: str, script: Path, run: Path, args, out: Path) -> dict:
    command = [python, str(script), "--run", str(run), "--episodes", str(args.episodes), "--batch-size", str(args.batch_size),
               "--mini-batches", str(args.mini_batches), "--ppo-epochs", str(args.ppo_epochs),
               "--response-length", str(args.response_length), "--temperature", str(args.temperature),
               "--kl-coef", str(args.kl_coef), "--learning-rate", str(args.learning_rate), "--seed", str(args.seed),
               "--threads", str(args.threads), "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{script.name} failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}")
    return json.loads(out.read_text())


def gain_per_1000(result: dict) -> float:
    """(mean rollout score of the last quarter of updates − the first quarter's) / the episodes between the two
    quarters' centres (3/4 of the run) × 1,000."""
    scores = [h.get("score", h.get("scores")) for h in result["history"]]
    quarter = max(1, len(scores) // 4)
    rise = statistics.mean(scores[-quarter:]) - statistics.mean(scores[:quarter])
    return rise / (result["episodes"] * (len(scores) - quarter) / len(scores)) * 1000


def row(name: str, runs: list[dict]) -> dict:
    pick = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    gain = statistics.median(gain_per_1000(r) for r in runs)
    return {"name": name, "episodes_per_second": pick("episodes_per_second"), "peak_rss_mb": pick("peak_rss_mb"),
            "gain": gain, "kl_last": pick("kl_last"), "episodes": runs[0]["episodes"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="a run folder with sft/ and reward/ (default: build the tiny one)")
    p.add_argument("--episodes", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mini-batches", type=int, default=2)
    p.add_argument("--ppo-epochs", type=int, default=2)
    p.add_argument("--response-length", type=int, default=24)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--learning-rate", type=float, default=3e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads, the same on both sides")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    subprocess.run(["bash", str(PEERS / "setup_trl112.sh")], cwd=ROOT, check=True, capture_output=True)
    peer_python = str(PEERS / ".venv-trl112" / "bin" / "python")
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or build_run(Path(tmp) / "run")
        ours, trl, rloo = [], [], []
        for i in range(args.repeats):  # alternating, so drift in machine load hits every side alike
            ours.append(side(sys.executable, PEERS / "ours_ppo.py", run, args, Path(tmp) / f"ours{i}.json"))
            trl.append(side(peer_python, PEERS / "trl112_ppo.py", run, args, Path(tmp) / f"trl{i}.json"))
            rloo.append(side(sys.executable, PEERS / "rloo_trl116.py", run, args, Path(tmp) / f"rloo{i}.json"))
    rows = [row("ours (pipeline.rl.PPOTrainer)", ours), row("TRL 1.12.0 PPOTrainer", trl),
            row("TRL 1.16 RLOOTrainer (4 completions per prompt, no value model; not the same algorithm)", rloo)]
    print(f"\n{rows[0]['episodes']} episodes, batch {args.batch_size}, {args.mini_batches} mini-batches, "
          f"{args.ppo_epochs} PPO epochs, {args.response_length} new tokens, lr {args.learning_rate}, β {args.kl_coef}, "
          f"{args.threads} torch thread(s), median of {args.repeats}")
    print("| trainer | episodes/s | vs TRL 1.12 PPO | peak RSS MB | score gain / 1k episodes | KL at the end |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['name']} | {r['episodes_per_second']:.1f} | {r['episodes_per_second'] / rows[1]['episodes_per_second']:.2f}× "
              f"| {r['peak_rss_mb']:.0f} | {r['gain']:+.2f} | {r['kl_last']:.3f} |")


if __name__ == "__main__":
    main()
