"""The markdown of `pipeline report`'s page (`pipeline.report`): the formatting helpers every part uses, and one
section per stage: pretrain, sft, reward, ppo (curves and tables from each stage's `metrics.json`, plots drawn by
`pipeline.report_plots`), regression (the stage's own `fits.png` and `results.md`) and embeddings (each method's
numeric metrics). Each section is "" when its stage has nothing to show. What each part holds:
`pipeline.report`'s docstring.
"""

from __future__ import annotations

import json

from pipeline.artifacts import RunDir
from pipeline.errors import PipelineError
from pipeline.report_plots import Plots, finite_number, history_points, pyplot, ppo_figure

DASH = "—"

# (history key, panel title, y-axis label) of the PPO per-update panels, drawn when the history has the key
PPO_PANELS = (
    ("score", "reward-model score of sampled responses", "score (RM logit)"),
    ("kl", "KL estimate to the reference (SFT) policy", "KL (nats/response)"),
    ("entropy", "policy entropy", "entropy (nats/token)"),
    ("response_length", "response length", "length (tokens)"),
    ("eos_share", "responses that end with EOS", "share of responses"),
    ("value_loss", "value loss", "loss (squared error)"),
)


# ---------------------------------------------------------------- formatting

def fmt(value, digits: int = 3, sign: bool = False) -> str:
    number = finite_number(value)
    if number is None:
        return DASH
    return f"{number:+.{digits}f}" if sign else f"{number:.{digits}f}"


def fmt_interval(interval) -> str:
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return ""
    return f"95% CI [{fmt(interval[0], sign=True)}, {fmt(interval[1], sign=True)}]"


def table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A markdown table; `align` has one letter per column (l or r), default l."""
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")
    rules = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(map(cell, header)) + " |", "| " + " | ".join(rules) + " |"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def image(title: str, link: str | None) -> str:
    return f"![{title}]({link})" if link else ""


# ---------------------------------------------------------------- trainer stages

def pretrain_section(metrics: dict | None, plots: Plots) -> str:
    if not metrics:
        return ""
    bpb = f" (final validation {fmt(metrics.get('val_bpb'))} bits/byte)" if finite_number(metrics.get("val_bpb")) is not None else ""
    loss = plots.curves("pretrain_loss", "pretrain: next-token loss" + bpb, "loss (nats/token)",
                        {"training loss": metrics.get("loss_history"), "validation loss": metrics.get("eval_history")})
    grad = plots.curves("pretrain_grad_norm", "pretrain: gradient norm before clipping", "L2 norm",
                        {"gradient norm": metrics.get("grad_norm_history")})
    body = [image("pretrain loss", loss), image("pretrain gradient norm", grad)]
    facts = [f"{label} {fmt(metrics.get(key), digits)}" for key, label, digits in
             (("eval_loss", "validation loss (nats/token)", 4), ("val_bpb", "validation bits/byte", 4),
              ("tokens_per_second", "training tokens/s", 0), ("params", "parameters", 0))
             if finite_number(metrics.get(key)) is not None]
    if facts:
        body.append("Final: " + ", ".join(facts) + ". Losses are mean cross-entropy per predicted token of the "
                    "training and validation streams.")
    return _section("Pretrain", body)


def sft_section(metrics: dict | None, plots: Plots) -> str:
    if not metrics:
        return ""
    series = {"training loss": metrics.get("loss_history")}
    last_step = (history_points(metrics.get("loss_history")) or [(None, None)])[-1][0]
    if last_step is not None and finite_number(metrics.get("eval_loss")) is not None:
        series["validation loss (end)"] = [[last_step, metrics["eval_loss"]]]
    loss = plots.curves("sft_loss", "sft: loss on assistant tokens", "loss (nats/token)", series)
    categories = by_category_plot(metrics, plots)
    body = [image("sft loss", loss), image("exact match by category", categories)]
    if categories:
        body.append("Strict exact match per question category on the held-out questions, pretrained base vs SFT.")
    return _section("SFT", body)


def by_category_plot(metrics: dict, plots: Plots) -> str | None:
    sft, base = metrics.get("by_category"), metrics.get("by_category_base")
    if not isinstance(sft, dict) or not sft:
        return None
    names = sorted(sft)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(names) + 2), 3.8))
    width = 0.4
    models = [("base (pretrain)", base), ("SFT", sft)] if isinstance(base, dict) else [("SFT", sft)]
    for i, (label, scores) in enumerate(models):
        values = [finite_number((scores.get(n) or {}).get("exact_match")) or 0.0 for n in names]
        ax.bar([x + (i - (len(models) - 1) / 2) * width for x in range(len(names))], values, width, label=label)
    labels = [f"{n} (n={(sft[n] or {}).get('rows', '?')})" for n in names]
    ax.set_xticks(range(len(names)), labels, rotation=30, ha="right")
    ax.set(title="sft: strict exact match by question category", xlabel="question category",
           ylabel="share answered exactly", ylim=(0, 1.05))
    ax.legend()
    fig.tight_layout()
    return plots.figure("sft_exact_match_by_category", fig)


def reward_section(metrics: dict | None, plots: Plots) -> str:
    if not metrics:
        return ""
    from pipeline.metrics.reward import plot_calibration

    loss = plots.curves("reward_loss", "reward: pairwise loss −log σ(r_chosen − r_rejected)", "loss (nats/pair)",
                        {"training loss": metrics.get("loss_history")})
    calibration = None
    if isinstance(metrics.get("calibration"), dict) and metrics["calibration"].get("bins") and "accuracy" in metrics:
        calibration = plots.save("reward_calibration", lambda tmp: plot_calibration(metrics, tmp))
    body = [image("reward loss", loss), image("reward calibration", calibration)]
    if calibration:
        body.append("Calibration on the held-out pairs: predicted P(chosen preferred) = σ(r_chosen − r_rejected) "
                    "against how often it was, in bins (each pair counted in both orders).")
    kinds = metrics.get("accuracy_by_kind")
    if isinstance(kinds, dict) and kinds:
        weight = finite_number(metrics.get("likelihood_weight"))
        columns = [("accuracy", "accuracy_by_kind", "accuracy")]
        if weight is not None:
            columns += [(f"+ {fmt(weight)} × log p_SFT", "accuracy_by_kind_with_likelihood", "accuracy_with_likelihood"),
                        ("log p_SFT alone", "accuracy_by_kind_likelihood_alone", "accuracy_likelihood_alone")]
        columns += [("floor: shorter reply", "floor_shorter_reply_by_kind", "floor_shorter_reply")]
        columns = [c for c in columns if isinstance(metrics.get(c[1]), dict)]
        rows = [[kind] + [fmt(metrics[by_kind].get(kind)) for _, by_kind, _ in columns] for kind in sorted(kinds)]
        rows.append(["all"] + [fmt(metrics.get(overall)) for _, _, overall in columns])
        text = (f"Pairwise accuracy (r_chosen > r_rejected, ties wrong) on the {metrics.get('pairs', '?')} held-out "
                f"preference pairs, by how the rejected reply was made; mean margin {fmt(metrics.get('margin_mean'))}.")
        if weight is not None:
            text += (f" With `likelihood_weight` {fmt(weight)} the reward is r + {fmt(weight)} × the reply's "
                     "log-likelihood under the SFT model (the reward ppo optimises with the same weight); "
                     "\"log p_SFT alone\" ranks by that likelihood only.")
        if any(by_kind == "floor_shorter_reply_by_kind" for _, by_kind, _ in columns):
            text += " Floor: preferring the shorter reply."
        body.append(table(["rejected reply kind", *(name for name, _, _ in columns)], rows, "l" + "r" * len(columns))
                    + "\n\n" + text)
    return _section("Reward model", body)


def ppo_section(metrics: dict | None, plots: Plots) -> str:
    if not metrics:
        return ""
    history = [h for h in metrics.get("history") or [] if isinstance(h, dict)]
    panels = [p for p in PPO_PANELS if any(finite_number(h.get(p[0])) is not None for h in history)]
    body = []
    if panels:
        body.append(image("ppo training", plots.figure("ppo_training", ppo_figure(history, panels))))
        body.append(f"Per PPO update ({len(history)} updates): means over the update's sampled episodes "
                    "(score, KL, length, EOS share) or its micro-batches (entropy, value loss).")
    samples = [s for s in metrics.get("samples") or [] if isinstance(s, dict)]
    if samples:
        rows = [[s.get("prompt", ""), s.get("sft", ""), s.get("ppo", "")] for s in samples]
        body.append(table(["held-out prompt", "SFT reply", "PPO reply"], rows) + "\n\nGreedy replies of the SFT "
                    "and the PPO policy to the first held-out prompts.")
    return _section("PPO", body)


# ---------------------------------------------------------------- regression, embeddings

def regression_section(run: RunDir, metrics: dict | None) -> str:
    if metrics is None:
        return ""
    folder = run.root / "regression"
    body = []
    if (folder / "fits.png").is_file():
        body.append(image("regression fits", "regression/fits.png") + "\n\nEach curve of the world's regression "
                    "data: the points, the true curve and each method's fit, with residual panels (drawn by the "
                    "regression stage).")
    if (folder / "results.md").is_file():
        body.append("Every (curve, method) fit with estimates, standard errors and errors against the truth: "
                    "[regression/results.md](regression/results.md).")
    return _section("Regression", body)


def embeddings_section(run: RunDir) -> str:
    """Numeric top-level metrics of each `<run>/embeddings/<method>/metrics.json`, one column per method."""
    methods = {}
    for path in sorted((run.root / "embeddings").glob("*/metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise PipelineError(f"{path}: not valid JSON") from None
        if isinstance(metrics, dict):
            methods[path.parent.name] = {k: v for k, v in metrics.items() if finite_number(v) is not None}
    keys = sorted({key for metrics in methods.values() for key in metrics})
    if not keys:
        return ""
    rows = [[key] + [_fmt_any(methods[m].get(key)) for m in methods] for key in keys]
    return ("## Embeddings\n\n" + table(["metric", *methods], rows, "l" + "r" * len(methods))
            + "\n\nThe numeric metrics each embedding method's `metrics.json` reports (— where a method has none).")


def _fmt_any(value) -> str:
    number = finite_number(value)
    if number is None:
        return DASH
    return str(int(number)) if number.is_integer() and abs(number) < 1e15 else f"{number:.4g}"


def _section(title: str, parts: list[str]) -> str:
    parts = [p for p in parts if p]
    return f"## {title}\n\n" + "\n\n".join(parts) if parts else ""
