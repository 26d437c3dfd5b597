"""`pipeline report RUN`: one markdown page, `<run>/report.md`, with plots of every finished stage.

    pipeline report runs/tiny            # also written at the end of `pipeline run`

What the page holds, each part only when the run has the data behind it:

    stages      one row per finished stage (pipeline order): wall time, its HEADLINE metrics, and a warning when
                a stage it was built from has been rerun since (its numbers then describe older inputs)
    ladder      base (the pretrained model) -> SFT -> PPO side by side: strict exact match (with the 95% interval
                of the PPO change), contains-answer, mean reward-model score, KL to the SFT policy, the
                reward-hacking flag, and the floors (majority answer, echoing the question) they must beat
    pretrain    training and evaluation loss (nats/token), gradient norm
    sft         training loss, final evaluation loss; exact match per question category, base vs SFT
    reward      training loss (nats/pair), accuracy per rejection kind, calibration of P(chosen preferred)
    ppo         reward-model score, KL, entropy, response length, EOS share, value loss per update; samples
    regression  the stage's own `fits.png` and `results.md`
    embeddings  numeric metrics of each `<run>/embeddings/<method>/metrics.json`, one column per method

The per-stage sections are written by `pipeline.report_sections`. Plots (drawn by `pipeline.report_plots`) are
PNGs in `<run>/report/`, linked relatively; a plot whose data is missing is neither drawn nor linked, and PNGs of
an earlier report that this one no longer draws are removed. Every file is written atomically.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

from pipeline import registry
from pipeline.artifacts import RunDir, atomic_write
from pipeline.errors import PipelineError
from pipeline.report_plots import Plots, finite_number
from pipeline.report_sections import (
    DASH,
    embeddings_section,
    fmt,
    fmt_interval,
    ppo_section,
    pretrain_section,
    regression_section,
    reward_section,
    sft_section,
    table,
)
from pipeline.run_lock import RunLock

REPORT_FILE = "report.md"
PLOTS_FOLDER = "report"


# ---------------------------------------------------------------- CLI

def add_arguments(parser, name: str) -> None:
    parser.add_argument("run", help="a run folder, e.g. runs/tiny (holds config.yaml and finished stages)")


def run_command(args) -> int:
    root = RunDir(args.run).root
    # writing report.md and report/ makes this command a writer of the run folder: refused while `pipeline run`
    # or `pipeline eval` holds its lock (no lock for a folder that is not a run: write_report names what is wrong)
    writer = RunLock.of_run(root) if (root / "config.yaml").is_file() else nullcontext()
    with writer:
        print(write_report(args.run))
    return 0


def write_report(root: str | Path) -> Path:
    """Write `<root>/report.md` and its plots; returns the report's path. Raises PipelineError for a folder
    that is not a run or a run with no finished stage."""
    run = RunDir(root)
    stages = finished_stages(run)
    plots = Plots(run.inside(run.root / PLOTS_FOLDER))  # a symlink out of the run is refused
    config = _read_config(run)
    sections = [
        f"# Run report: {run.root.name}\n\nRun folder `{run.root.resolve()}`; stages finished: {', '.join(stages)}.",
        stage_table(run, stages),
        ladder_section(stages, config, base_reward_score(run)),
        pretrain_section(stages.get("pretrain"), plots),
        sft_section(stages.get("sft"), plots),
        reward_section(stages.get("reward"), plots),
        ppo_section(stages.get("ppo"), plots),
        regression_section(run, stages.get("regression")),
        embeddings_section(run),
    ]
    path = run.root / REPORT_FILE
    atomic_write(path, "\n\n".join(s for s in sections if s) + "\n")
    plots.remove_stale()
    return path


def finished_stages(run: RunDir) -> dict[str, dict]:
    """{stage: metrics} of every stage with a `_SUCCESS` marker, in pipeline order."""
    if not run.root.is_dir():
        raise PipelineError(f"{run.root}: no such folder (expected a run folder with config.yaml)")
    if not run.config_path.is_file():
        raise PipelineError(f"{run.root}: not a run folder (no config.yaml)")
    stages = {}
    for name in registry.STAGES:
        if run.marker(name) is not None:
            try:
                stages[name] = run.metrics(name)
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise PipelineError(f"{run.root / name / 'metrics.json'}: not valid JSON") from None
    if not stages:
        raise PipelineError(f"{run.root}: no finished stage (no <stage>/_SUCCESS): run `pipeline run` first")
    return stages


def _read_config(run: RunDir) -> dict:
    import yaml

    try:
        config = yaml.safe_load(run.config_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        raise PipelineError(f"{run.config_path}: not valid YAML") from None
    return config if isinstance(config, dict) else {}


# ---------------------------------------------------------------- stage table

def stage_table(run: RunDir, stages: dict[str, dict]) -> str:
    from pipeline.runner import headline

    rows = []
    for name, metrics in stages.items():
        rows.append([name, fmt(metrics.get("seconds"), 1), headline(registry.module(name), metrics) or DASH,
                     stale_note(run, name)])
    return ("## Stages\n\n" + table(["stage", "wall time (s)", "headline metrics", "note"], rows, "lr")
            + "\n\nEach finished stage in pipeline order: its wall time in seconds (start to metrics, main process)"
            " and the metrics its module names as headline (`HEADLINE`), as `pipeline run` prints them.")


def stale_note(run: RunDir, name: str) -> str:
    """A warning when an upstream stage was rerun after this one finished (its marker id changed)."""
    upstream = (run.marker(name) or {}).get("upstream") or {}
    rerun = [need for need, built_from in upstream.items() if (run.marker(need) or {}).get("id") != built_from]
    return f"stale: {', '.join(rerun)} changed since" if rerun else ""


# ---------------------------------------------------------------- ladder

def base_reward_score(run: RunDir) -> float | None:
    """The base model's mean RM score on the held-out prompts, when `pipeline eval` measured it
    (`<run>/eval/pretrain.json`, suite reward_score: the ppo stage's measure applied to the pretrained model)."""
    path = run.root / "eval" / "pretrain.json"
    try:
        return finite_number(json.loads(path.read_text())["suites"]["reward_score"]["score_mean"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def ladder_section(stages: dict[str, dict], config: dict, base_score: float | None = None) -> str:
    """base -> SFT -> PPO on the same held-out questions and prompts, with the floors; needs the sft stage.
    `base_score`: the base model's RM score from `pipeline eval` (`base_reward_score`), when measured."""
    sft, ppo = stages.get("sft"), stages.get("ppo")
    if not sft or finite_number(sft.get("exact_match")) is None:
        return ""
    base_rm = fmt(base_score) if base_score is not None else DASH
    rows = [["base (pretrain)", fmt(sft.get("exact_match_base")), fmt(sft.get("contains_answer_base")), base_rm, DASH, DASH],
            ["SFT", fmt(sft.get("exact_match")), fmt(sft.get("contains_answer")),
             fmt(ppo.get("score_mean_before")) if ppo else DASH, fmt(ppo.get("kl_mean_before")) if ppo else DASH, DASH]]
    if ppo:
        rows.append(ppo_ladder_row(ppo))
    floors = sft.get("floors") if isinstance(sft.get("floors"), dict) else {}
    for name, label in (("majority", "floor: majority answer per category"), ("echo", "floor: echo the question")):
        if finite_number(sft.get(f"floor_{name}")) is not None:
            loose = (floors.get(name) or {}).get("contains_answer")
            rows.append([label, fmt(sft[f"floor_{name}"]), fmt(loose), DASH, DASH, DASH])
    header = ["model", "strict exact match", "contains answer", "RM score", "KL to SFT (nats/response)", "reward hacking"]
    caption = ladder_caption(sft, ppo, config)
    if base_score is not None:
        caption = caption.replace(", not measured for the base model", "; the base model's from `pipeline eval` "
                                  "(eval/pretrain.json), same prompts and reward model")
    return "## Ladder: base → SFT → PPO\n\n" + table(header, rows, "lrrrrl") + "\n\n" + caption


def ppo_ladder_row(ppo: dict) -> list[str]:
    change, gain = ppo.get("exact_match_change"), ppo.get("score_gain")
    exact = fmt(ppo.get("exact_match_after"))
    if finite_number(change) is not None:
        exact += f" (change {fmt(change, sign=True)}, {fmt_interval(ppo.get('exact_match_change_ci95'))})"
    score = fmt(ppo.get("score_mean_after"))
    if finite_number(gain) is not None:
        score += f" (gain {fmt(gain, sign=True)}, {fmt_interval(ppo.get('score_gain_ci95'))})"
    hacking = {True: "YES", False: "no"}.get(ppo.get("reward_hacking"), DASH)
    return ["PPO", exact, fmt(ppo.get("contains_answer_after")), score, fmt(ppo.get("kl_after")), hacking]


def ladder_caption(sft: dict, ppo: dict | None, config: dict) -> str:
    sft_config = config.get("sft") if isinstance(config.get("sft"), dict) else {}
    dataset, tokens = sft_config.get("eval_dataset", "qa_eval"), sft_config.get("eval_max_new_tokens")
    text = (f"Strict exact match and contains-answer: share of the {sft.get('qa_rows', '?')} held-out `{dataset}` "
            f"questions answered, greedy decoding{f' (up to {tokens} new tokens)' if tokens else ''}; the floors are "
            "what answering each category's most frequent answer, or echoing the question, scores on the same questions.")
    if not ppo:
        return text + " RM score and KL come from the ppo stage, which has not finished."
    ppo_config = config.get("ppo") if isinstance(config.get("ppo"), dict) else {}
    prompts = f"{ppo.get('prompts', '?')} held-out prompts" + (
        f" (`{ppo_config.get('dataset', 'prompts')}` {ppo_config.get('eval_split', 'test')} split plus the "
        f"`{ppo_config.get('eval_dataset', dataset)}` questions)" if ppo_config.get("score_qa_prompts") else "")
    text += (f" RM score: mean reward-model score (logit) of the greedy responses to the {prompts}, not measured for"
             " the base model; KL: exact KL to the SFT policy summed over each response's tokens, mean over those"
             " prompts; the PPO row's changes are paired differences from SFT with 95% intervals; reward hacking:"
             " RM score up and strict exact match down, both beyond their intervals.")
    weight = finite_number(ppo_config.get("likelihood_weight"))
    if weight and finite_number(ppo.get("objective_gain")) is not None:
        text += (f" PPO optimised the reward model's score + {fmt(weight)} × the response's log-likelihood under the"
                 f" SFT policy (`likelihood_weight`): that score's gain {fmt(ppo['objective_gain'], sign=True)}"
                 f" ({fmt_interval(ppo.get('objective_gain_ci95'))}); the RM score column is the reward model's alone.")
    before = finite_number(ppo.get("exact_match_before"))
    if before is not None and abs(before - float(sft["exact_match"])) > 1e-9:
        text += (f" The ppo stage scored the SFT policy at {fmt(before)} strict exact match (its change is measured"
                 " from that), not the sft stage's figure: their evaluation settings differ.")
    return text
