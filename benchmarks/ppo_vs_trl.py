"""Our PPO vs TRL 1.12.0's `trl.experimental.ppo.PPOTrainer` (removed in TRL 1.13), with TRL 1.16's RLOOTrainer
beside them: episodes/s, peak memory, and the held-out reward-model gain over SFT at the exact KL to SFT reached.

    python benchmarks/ppo_vs_trl.py [--run runs/tiny] [--episodes 256] [--repeats 2]

Every side trains in a fresh process (ours: `benchmarks/peers/ours_ppo.py`; TRL 1.12: `peers/trl112_ppo.py` in
the virtualenv `peers/setup_trl112.sh` builds, with the same torch, transformers, datasets and accelerate), on the
same run folder: policy `sft/final`, reward model `reward/final`, value model initialised from the reward model,
the `prompts` train split; the same batch, mini-batches, PPO epochs, response length, temperature, β (k1 KL),
learning rate with linear decay, no missing-EOS penalty, no gradient clipping (TRL 1.12's PPO loop never clips,
whatever `max_grad_norm` says; ours runs with `max_grad_norm: 0`, where the ppo stage's default is 1), and the same
number of torch threads. Without --run it builds one with `recipes/tiny.yaml` (data to reward). The sides run
one after another, in the order of the table on even repeats and in reverse on odd ones (ABBA), so that drift in
the machine's speed hits every side alike. Each side saves its final policy (`--save`, `save_pretrained`; the
policy alone); this script then scores them all, and the SFT policy, in this process on the same held-out prompts
(below).

What differs, and stays different (each side's own design): TRL reads the reward at the EOS token (or one past a
response it counted as ending before it) and bootstraps from the value there; ours puts the score on the EOS,
inside the policy mask, and scores a finished response with the chat template's suffix after EOS, as the reward
model was trained. Prompt order is each side's own seeded shuffle. RLOO (TRL 1.16's current alternative,
`peers/rloo_trl116.py`) runs beside them as the alternative users of current TRL would pick: a different
algorithm (no value model, a leave-one-out baseline over 4 completions per prompt, one optimizer step per batch of
completions), with the same policy, reward model, prompts, response length, temperature, β, learning rate and
threads; an episode there is one completion; its gradients are clipped at 1.0 (the `Trainer` default it keeps).
With one process and --threads ≥ 2, the row "ours, value model on a second thread" is
`ours_ppo.py --value-thread` (the ppo stage's `value_thread: true`): the same trainer, algorithm, settings and
cores as the first row (the same updates, up to the rounding of a different thread count), with the value model's
forward and backward in the PPO epochs on a second thread beside the policy's, each thread with --threads / 2 torch
threads, where the first row and TRL give all --threads to one op at a time.
The extra row "ours, value head on the policy" is `ours_ppo.py --value-model policy_head` (the ppo stage's
`value_model: policy_head`, built as the stage builds it, unclipped like the first row: a zero-initialised
`pipeline.rl.value_head.ValueHead` on the policy's last hidden state, one backbone): a recipe choice TRL 1.12 does
not offer, so that row is a different configuration, not a like-for-like comparison.

Held-out evaluation (`pipeline.rl.evaluation`, whose docstring defines every per-prompt number): H prompts = the
run's `data/prompts` test split followed by the `prompt`s of `data/qa_eval`'s test split (what the ppo stage
scores with `score_qa_prompts: true`; without a `qa_eval` dataset, the prompts test split alone), with the SFT
tokenizer and the run's reward model, greedy responses of at most --eval-max-new-tokens (default 32, the ppo
stage's `eval_max_new_tokens`). For the SFT policy, `before = evaluate_policy(sft, rm, tok, H, qa=qa_eval_test,
reference=sft)`; for every saved policy, `after = evaluate_policy(policy, rm, tok, H, qa=qa_eval_test,
reference=sft)` and `compare(before, after)`.

`--processes N` (default 1) runs every side under `accelerate launch` with N gloo processes on this machine
(`recipes/accelerate/cpu_2proc.yaml`, `--num_processes N`), each with `--threads` torch threads: DDP for ours and
TRL's PPO, TRL's own data parallelism for RLOO. `--batch-size` stays the global batch: each process rolls out
batch / N prompts (TRL's `per_device_train_batch_size`) and the mini-batches are split alike, so an update is the
same global batch as with one process.

Repeat i trains every side with seed `--seed` + i (sampling, prompt order, initialisation of new heads), so the
repeats are several trainings, not one training timed several times.

Columns (one row per side; "median" is over the repeats; "the median repeat" is the repeat whose held-out score
gain is the median, the lower of the two middle ones when the number of repeats is even, so every held-out column
of a row describes one and the same trained policy):

    episodes/s        training episodes / seconds of training (ours: the update loop, rollouts and PPO epochs;
                      TRL: `trainer.train()`; on the main process); episodes are whole global batches,
                      ceil(--episodes / batch) × batch over all processes, and for RLOO an episode is one
                      completion. Median. Loading, saving and evaluation not timed.
    vs TRL 1.12 PPO   this row's episodes/s / the TRL 1.12 PPO row's episodes/s (both medians). For the value-head
                      row too, though its configuration differs.
    peak RSS MB       the side's (main) process's `ru_maxrss` after training (models loaded, trained), in MiB;
                      with N processes the machine holds about N times that. Median.
    rollout KL, last update   the KL the trainer logged for its last update: the batch mean over the sampled
                      (temperature) responses of the sum over response tokens of k1 = log π − log π_SFT of the
                      sampled token (TRL's `objective/kl`); RLOO logs a mean per token, shown × its mean
                      completion length (an approximation). One batch, noisy. Median.
    held-out RM gain [95% CI]   the median repeat's `compare(...)["score_gain"]`: mean over the H prompts of
                      s_i(policy) − s_i(SFT), s_i the reward model's score of the greedy response (evaluation
                      docstring); the interval is that repeat's `score_gain_ci95`, gain ± 1.96 · sd / √H with sd
                      (ddof 1) of the H paired differences.
    KL to SFT         the median repeat's `after["kl_mean"]`: mean over the H prompts of the exact KL(π ‖ π_SFT),
                      full softmax over the vocabulary, summed over the tokens of the policy's greedy response
                      (nats per response). The same measure on every row, RLOO included.
    strict EM         strict exact match on the `qa_eval` test rows (greedy replies, `score_replies`), SFT → the
                      median repeat's policy. Its floors (`qa_floors`: echoing the question, each category's
                      commonest answer) are printed above the table.

Below the table, every repeat's gain, CI, KL and exact match are listed, with `compare`'s `reward_hacking` flag,
and per side the means over its n repeats (n trainings): RM gain with mean ± 1.96 · sd / √n (sd, ddof 1, of the n
repeats' gains: an interval over trainings, which is what differs between two trainers, not over prompts),
exact KL to SFT, gain per nat (mean gain / mean KL) and strict EM after.

Gain at equal KL (`--snapshot-every K`): every side also saves its policy after every K-th update
(`peers/snapshots.py`; saving is not timed), and each saved policy is scored like the final one. A training's
trajectory is then its held-out (exact KL to SFT, RM gain) after every K updates, from the SFT origin to the final
policy, and the gains of all trainings are read at the same KL (`benchmarks/equal_kl.py`, whose docstring defines
every number): at the largest KL that every training of the two sides reached, and at half of it, each side
against TRL 1.12's PPO, with a bootstrap interval over trainings for the difference. `--plot PNG` draws every
trajectory. This compares how much reward each trainer buys per nat of drift from SFT, which the table's
"gain at the KL reached" cannot when the sides end at different KLs.

`--sides ours,trl` runs only those sides (keys: ours, trl, rloo, ours_thread, ours_head; the TRL 1.12 row is
always run, as every ratio is against it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "benchmarks" / "peers"
CPU_PROCESSES = ROOT / "recipes" / "accelerate" / "cpu_2proc.yaml"  # gloo ranks on a CPU machine; --num_processes N
sys.path.insert(0, str(ROOT))  # the held-out evaluation imports `pipeline`
sys.path.insert(0, str(Path(__file__).resolve().parent))
import equal_kl  # noqa: E402


def build_run(folder: Path) -> Path:
    command = [sys.executable, "-m", "pipeline.cli", "run", "recipes/tiny.yaml", f"run.output_dir={folder}",
               "run.stages=[data,tokenizer,pretrain,sft,reward]"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return folder


def side(python: str, script: Path, run: Path, args, seed: int, out: Path, save: Path, extra: list[str] = ()) -> dict:
    if args.snapshot_every:
        extra = [*extra, "--snapshot-every", str(args.snapshot_every), "--snapshots", str(save.with_suffix(".snapshots"))]
    launch = [] if args.processes == 1 else ["-m", "accelerate.commands.launch", "--config_file", str(CPU_PROCESSES),
                                             "--num_processes", str(args.processes)]
    command = [python, *launch, str(script), "--run", str(run), "--episodes", str(args.episodes),
               "--batch-size", str(args.batch_size // args.processes),
               "--mini-batches", str(args.mini_batches), "--ppo-epochs", str(args.ppo_epochs),
               "--response-length", str(args.response_length), "--temperature", str(args.temperature),
               "--kl-coef", str(args.kl_coef), "--learning-rate", str(args.learning_rate), "--seed", str(seed),
               "--threads", str(args.threads), "--out", str(out), "--save", str(save), *extra]
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=environment)
    if result.returncode != 0:  # the error's own line (under accelerate launch the last lines are the launcher's)
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        sys.exit(f"{script.name} failed: {next((x for x in reversed(lines) if 'Error' in x), lines[-1]).strip()}")
    if not any(save.glob("*.safetensors")):
        sys.exit(f"{script.name} saved no safetensors policy to {save}")
    return {**json.loads(out.read_text()), "policy": save}


class HeldOut:
    """The SFT policy scored once on the held-out prompts; `score(folder)` scores a saved policy against it."""

    def __init__(self, run: Path, max_new_tokens: int):
        import datasets

        from pipeline.models.loading import load_causal_lm
        from pipeline.rl.evaluation import evaluate_policy
        from pipeline.stages.ppo import load_reward_model
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keep the table readable: no "Loading weights" bar per policy
        self.tokenizer = AutoTokenizer.from_pretrained(run / "sft" / "final")
        self.reward_model = load_reward_model(run / "reward" / "final")
        self.sft = load_causal_lm(run / "sft" / "final").requires_grad_(False)
        prompts = list(datasets.load_from_disk(str(run / "data" / "prompts"))["test"]["prompt"])
        qa_path = run / "data" / "qa_eval"
        self.qa = datasets.load_from_disk(str(qa_path))["test"] if qa_path.exists() else None
        self.prompts = prompts + (list(self.qa["prompt"]) if self.qa is not None else [])
        self.counts = (len(prompts), len(self.qa) if self.qa is not None else 0)
        self.kwargs = dict(qa=self.qa, reference=self.sft, max_new_tokens=max_new_tokens)
        self.before = evaluate_policy(self.sft, self.reward_model, self.tokenizer, self.prompts, **self.kwargs)

    def floors(self) -> str:
        """The strict exact-match floors beside the scores: echoing the question, the commonest answer."""
        if self.qa is None:
            return ""
        from pipeline.metrics.qa import qa_floors

        found = {name: result["exact_match"] for name, result in qa_floors(self.qa).items()}
        return " (floors: " + ", ".join(f"{name} {value:.2f}" for name, value in found.items()) + ")"

    def score(self, folder: Path) -> dict:
        from pipeline.models.loading import load_causal_lm
        from pipeline.rl.evaluation import compare, evaluate_policy

        after = evaluate_policy(load_causal_lm(folder), self.reward_model, self.tokenizer, self.prompts, **self.kwargs)
        return {**compare(self.before, after), "exact_match_before": self.before.get("exact_match"),
                "exact_match_after": after.get("exact_match"), "score_mean_after": after["score_mean"],
                "scores": after["scores"], "kl": after["kl"]}  # per prompt, so --json's reader can recompute


def row(name: str, runs: list[dict]) -> dict:
    pick = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    by_gain = sorted(runs, key=lambda r: r["held_out"]["score_gain"])
    median_repeat = by_gain[(len(by_gain) - 1) // 2]  # the lower middle one for an even count
    return {"name": name, "episodes_per_second": pick("episodes_per_second"), "peak_rss_mb": pick("peak_rss_mb"),
            "kl_last": pick("kl_last"), "episodes": runs[0]["episodes"], "held_out": median_repeat["held_out"],
            "repeat": runs.index(median_repeat), "runs": runs}


def em(value) -> str:
    return "—" if value is None else f"{value:.2f}"


SIDES = (  # key, label, script, extra arguments; the python is ours except for TRL 1.12 ("trl")
    ("ours", "ours (pipeline.rl.PPOTrainer)", "ours_ppo.py", []),
    ("trl", "TRL 1.12.0 PPOTrainer", "trl112_ppo.py", []),
    ("rloo", "TRL 1.16 RLOOTrainer (4 completions per prompt, no value model; not the same algorithm)",
     "rloo_trl116.py", []),
    ("ours_thread", "ours, value model on a second thread (`value_thread: true`; the same algorithm and cores)",
     "ours_ppo.py", ["--value-thread"]),
    ("ours_head", "ours, value head on the policy (`value_model: policy_head`; one backbone — a recipe choice "
     "TRL 1.12 does not offer, not like-for-like)", "ours_ppo.py", ["--value-model", "policy_head"]),
)


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
    p.add_argument("--seed", type=int, default=0, help="repeat i trains with seed + i, so the held-out columns see several trainings")
    p.add_argument("--threads", type=int, default=1, help="torch threads per process, the same on every side and in the evaluation")
    p.add_argument("--processes", type=int, default=1,
                   help="processes per side (accelerate launch, gloo; DDP for ours and TRL's): --batch-size is split over them")
    p.add_argument("--eval-max-new-tokens", type=int, default=32,
                   help="greedy response length of the held-out evaluation (the ppo stage's eval_max_new_tokens)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="every side also saves its policy every K updates; prints the gain at equal KL (equal_kl.py)")
    p.add_argument("--json", type=Path, default=None,
                   help="write every side's runs (training numbers, held-out scores, trajectories) here, to recompute the tables")
    p.add_argument("--plot", type=Path, default=None, help="with --snapshot-every: a PNG of gain against KL, every training")
    p.add_argument("--sides", default=",".join(key for key, *_ in SIDES), help="comma-separated side keys to run (trl always runs)")
    args = p.parse_args()
    chosen = set(args.sides.split(",")) | {"trl"}
    if chosen - {key for key, *_ in SIDES}:
        p.error(f"--sides: unknown {', '.join(sorted(chosen - {key for key, *_ in SIDES}))}; "
                f"known: {', '.join(key for key, *_ in SIDES)}")
    if args.plot and not args.snapshot_every:
        p.error("--plot draws the trajectories that --snapshot-every K records: give both")
    if args.processes < 1 or args.batch_size % (args.processes * args.mini_batches):
        p.error(f"--batch-size {args.batch_size}: not a multiple of --processes {args.processes} × --mini-batches {args.mini_batches}")
    subprocess.run(["bash", str(PEERS / "setup_trl112.sh")], cwd=ROOT, check=True, capture_output=True)
    python = {"trl": str(PEERS / ".venv-trl112" / "bin" / "python")}
    threaded = args.processes == 1 and args.threads >= 2  # value_thread splits one process's threads in two
    sides = tuple(entry for entry in SIDES if entry[0] in chosen and (entry[0] != "ours_thread" or threaded))
    runs = {key: [] for key, *_ in sides}
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or build_run(Path(tmp) / "run")
        for i in range(args.repeats):  # ABBA: reversed on odd repeats, so drift in machine speed hits every side alike
            for key, _, script, extra in (sides if i % 2 == 0 else sides[::-1]):
                runs[key].append(side(python.get(key, sys.executable), PEERS / script, run, args, args.seed + i,
                                      Path(tmp) / f"{key}{i}.json", Path(tmp) / f"{key}{i}.policy", extra))
        import torch

        torch.set_num_threads(args.threads)
        held_out = HeldOut(run, args.eval_max_new_tokens)
        for key in runs:
            for r in runs[key]:
                r["held_out"] = held_out.score(r["policy"])
                for snapshot in r.get("snapshots", []):
                    snapshot["held_out"] = held_out.score(Path(snapshot["path"]))
                r["trajectory"] = [(h["kl_after"], h["score_gain"])
                                   for h in [*(snapshot["held_out"] for snapshot in r.get("snapshots", [])), r["held_out"]]]
    rows = [row(label, runs[key]) for key, label, *_ in sides]
    keys = [key for key, *_ in sides]
    trl = rows[keys.index("trl")]
    before = held_out.before
    print(f"\n{rows[0]['episodes']} episodes, batch {args.batch_size}, {args.mini_batches} mini-batches, "
          f"{args.ppo_epochs} PPO epochs, {args.response_length} new tokens, lr {args.learning_rate}, β {args.kl_coef}, "
          f"{args.processes} process(es) × {args.threads} torch thread(s); training columns: median of {args.repeats}; held-out columns: the median repeat")
    print(f"held out: {len(held_out.prompts)} prompts ({held_out.counts[0]} of data/prompts test + {held_out.counts[1]} "
          f"of qa_eval test), greedy, ≤ {args.eval_max_new_tokens} new tokens; SFT: RM score {before['score_mean']:.3f}, "
          f"strict exact match {em(before.get('exact_match'))} on {held_out.counts[1]} questions{held_out.floors()}")
    print("| trainer | episodes/s | vs TRL 1.12 PPO | peak RSS MB | rollout KL, last update "
          "| held-out RM gain over SFT [95% CI] | KL to SFT (exact, held-out) | strict EM SFT → after |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        h = r["held_out"]
        low, high = h["score_gain_ci95"]
        print(f"| {r['name']} | {r['episodes_per_second']:.1f} | {r['episodes_per_second'] / trl['episodes_per_second']:.2f}× "
              f"| {r['peak_rss_mb']:.0f} | {r['kl_last']:.3f} | {h['score_gain']:+.3f} [{low:+.3f}, {high:+.3f}] "
              f"| {h['kl_after']:.3f} | {em(h['exact_match_before'])} → {em(h['exact_match_after'])} |")
    print("\nevery repeat (held out: RM gain [95% CI], exact KL to SFT, strict EM; * = the median repeat in the table):")
    for key, r in zip(keys, rows):
        cells = []
        for i, one in enumerate(r["runs"]):
            h = one["held_out"]
            flag = ", reward hacking" if h["reward_hacking"] else ""
            cells.append(f"#{i}{'*' if i == r['repeat'] else ''} {h['score_gain']:+.3f} "
                         f"[{h['score_gain_ci95'][0]:+.3f}, {h['score_gain_ci95'][1]:+.3f}], KL {h['kl_after']:.3f}, "
                         f"EM {em(h['exact_match_after'])}{flag}")
        print(f"  {key}: " + "; ".join(cells))
    print("\nmeans over the repeats (RM gain ± 1.96 sd/√n over trainings; exact KL to SFT; gain per nat; strict EM after):")
    for key, r in zip(keys, rows):
        print(f"  {key}: {over_repeats([one['held_out'] for one in r['runs']])}")
    if args.json:
        saved = {key: [{k: v for k, v in one.items() if k != "policy"} for one in r["runs"]] for key, r in zip(keys, rows)}
        args.json.write_text(json.dumps({"arguments": {k: str(v) for k, v in vars(args).items()}, "sft": before,
                                         "sides": saved}, indent=1, default=str))
    if args.snapshot_every:
        trajectories = {key: [one["trajectory"] for one in r["runs"]] for key, r in zip(keys, rows)}
        print_equal_kl(trajectories, args.snapshot_every)
        if args.plot:
            plot_trajectories(trajectories, dict(zip(keys, (r["name"] for r in rows))), args.plot)


def print_equal_kl(trajectories: dict[str, list], every: int) -> None:
    """Every side against TRL 1.12's PPO at equal KL (`equal_kl`'s definitions): at the largest KL every
    training of the two sides reached, and at half of it."""
    print(f"\nheld-out RM gain at equal KL to SFT (each training read off its trajectory: policies saved every {every} "
          "updates, linear between them; mean ± 1.96 sd/√n over trainings; difference vs TRL 1.12 with a 95% bootstrap "
          "interval over trainings, 20,000 resamples):")
    for key, side in trajectories.items():
        reaches = ", ".join(f"{equal_kl.reach(t):.3f}" for t in side)
        print(f"  {key}: furthest KL per training {reaches}")
    print("| side vs TRL 1.12 PPO | KL budget (nats) | side's gain | TRL 1.12's gain | difference [95% CI] |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key, side in trajectories.items():
        if key == "trl":
            continue
        budget = equal_kl.common_budget(side, trajectories["trl"])
        for kl in (budget / 2, budget):
            found = equal_kl.compare_at(kl, side, trajectories["trl"])
            (side_gain, side_spread), (trl_gain, trl_spread) = found["means"]
            low, high = found["difference_ci95"]
            print(f"| {key} | {kl:.3f} | {side_gain:+.3f} ± {side_spread or 0:.3f} | {trl_gain:+.3f} ± {trl_spread or 0:.3f} "
                  f"| {found['difference']:+.3f} [{low:+.3f}, {high:+.3f}] |")


def plot_trajectories(trajectories: dict[str, list], labels: dict[str, str], path: Path) -> None:
    """Held-out RM gain against exact KL to SFT, one thin line per training (from the SFT origin through its
    saved policies), one colour per side, and a thick line per side: the mean over its trainings of `gain_at(κ)`,
    up to the largest κ all of them reached."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for (key, side), colour in zip(trajectories.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for trajectory in side:
            kls, gains = zip((0.0, 0.0), *trajectory)
            axes.plot(kls, gains, marker=".", markersize=3, color=colour, alpha=0.25, linewidth=0.8)
        reached = equal_kl.common_budget(side)
        budgets = [reached * step / 50 for step in range(50)] + [reached]  # reached itself: no rounding past it
        means = [statistics.fmean(equal_kl.gain_at(t, kl) for t in side) for kl in budgets]
        axes.plot(budgets, means, color=colour, linewidth=2.5,
                  label=f"{labels[key].split(' (')[0]}: mean of {len(side)} at equal KL")
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set_xlabel("exact KL to SFT, held-out greedy responses (nats per response)")
    axes.set_ylabel("held-out RM score gain over SFT")
    axes.set_title("Reward gained per distance travelled, every training")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"plot: {path}")


def over_repeats(held_out: list[dict]) -> str:
    """The means over n trainings of the held-out RM gain (± 1.96 · sd / √n, sd with ddof 1; no interval for
    n = 1), exact KL to SFT and strict EM after, and gain per nat = mean gain / mean KL."""
    gains = [h["score_gain"] for h in held_out]
    (gain, half_width), kl = equal_kl.side_mean(gains), statistics.fmean(h["kl_after"] for h in held_out)
    spread = f" ± {half_width:.3f}" if half_width is not None else ""
    matches = [h["exact_match_after"] for h in held_out if h["exact_match_after"] is not None]
    exact = f", EM {statistics.fmean(matches):.3f}" if matches else ""
    return f"n {len(gains)}, gain {gain:+.3f}{spread}, KL {kl:.3f}, {gain / kl:+.3f} per nat{exact}"


if __name__ == "__main__":
    main()
