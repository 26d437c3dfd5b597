"""`pipeline eval`: evaluate any checkpoint the pipeline wrote, with the stages' own metric code.

    pipeline eval runs/tiny                       # every stage's final model -> runs/tiny/eval/<stage>.json
    pipeline eval runs/tiny --checkpoints         # and every checkpoint-<step> -> eval/<stage>-<step>.json
    pipeline eval runs/tiny/sft/final --json      # one model, on its run's data with its run's settings
    pipeline eval me/tiny-sft --data runs/tiny    # a Hub id (or any folder), on a run's data
    pipeline eval runs/tiny/ppo/final --against runs/tiny/sft/final --reward-model runs/tiny/reward/final

What is given decides the suites (`pipeline.eval_suites`; `--suite` picks some; one that cannot run is an error):

    causal LM     bpb            bits per byte of the run's corpus validation split, or of `--data FILE.txt`
                                 (`pipeline.metrics.lm.bits_per_byte`, the pretrain stage's `val_bpb`)
                  exact_match    strict exact match and contains-answer on the qa_eval test questions, greedy,
                                 with the echo and majority floors (`pipeline.metrics.qa`, the sft stage's numbers)
                  reward_score   mean reward-model score of greedy replies to the held-out prompts, with KL to
                                 `--reference` when given (`pipeline.rl.evaluation.evaluate_policy`, the ppo
                                 stage's "after" numbers); needs a reward model (`--reward-model`, or the run's)
                  win_rate       `--against OTHER`: how often this model's reply outscores OTHER's on the held-out
                                 prompts by the reward model, Wilson 95% intervals (`win_rate` module); a prompt
                                 where both gave the same response (token ids) is a tie
                  samples        the first greedy replies, to read
    reward model  reward_accuracy  pairwise accuracy (per rejection kind), margin and ECE on the preference test
                                 split, tokenized as TRL's RewardTrainer does (the reward stage's numbers)
    word vectors  analogy        3CosAdd accuracy on `--analogies FILE` (questions-words.txt format; default: the
    (a word2vec                  run's world analogies), top 30k words, semantic/syntactic, questions skipped
    .txt or .bin)                (`pipeline.embeddings.evaluation`, gensim's numbers)
                  similarity     Spearman of cosines against each `--similarity FILE` (wordsim353, SimLex-999)
                  neighbours     nearest neighbours of the most frequent words, to read

Inside a run folder, every setting comes from the run's config.yaml (block size, reply lengths, the PPO
prompts; a policy's reply length is its stage section's `eval_max_new_tokens`, else the sft section's), so `pipeline eval` reproduces each stage's own metrics; the sft policy is the reference of the ppo
one. Evaluating a run folder writes `<run>/eval/`, so it holds the run's lock (`pipeline.run_lock`) while it
works: refused while another command writes the folder. Output: a table on stderr-free stdout, or with `--json`
exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path

from pipeline.artifacts import RunDir, write_json
from pipeline.checkpoints import (CAUSAL_LM, REWARD_MODEL, ModelFolder, identify, is_run_folder, load_model,
                                  load_tokenizer, require_causal_lm, run_models, stage_final)
from pipeline.errors import PipelineError
from pipeline.eval_suites import N_SAMPLES, SUITE_FUNCTIONS, SUITES, Context, Unavailable, data_for
from pipeline.run_lock import RunLock


# ------------------------------------------------------------------------------------------ models and data


def targets(path: Path, checkpoints: bool) -> list[ModelFolder]:
    """The models behind `path` (`pipeline.checkpoints`): a run folder's final models (and checkpoints), a stage
    folder's final model, or one model folder."""
    if is_run_folder(path):
        return [identify(folder) for folder in run_models(path, checkpoints)]
    return [identify(stage_final(path))]



def vectors_run(path: Path, data_arg: str | None) -> Path | None:
    """The run whose world analogies a vectors file is scored on: `--data RUN`, else the run folder above it."""
    if data_arg:
        return resolve(data_arg)
    return next((parent for parent in path.resolve().parents if is_run_folder(parent)), None)


def evaluate_vectors(path: Path, options) -> dict:
    """The word-vector suites on a word2vec text or binary file (module docstring)."""
    from pipeline.embeddings import evaluation as words
    from pipeline.embeddings.vectors import VectorsError, read_vectors

    chosen = options.suite or VECTOR_SUITES
    wrong = [s for s in chosen if s not in VECTOR_SUITES]
    if wrong:
        raise PipelineError(f"--suite {wrong[0]}: not a suite for word vectors (valid: {', '.join(VECTOR_SUITES)})")
    run = vectors_run(path, options.data)
    analogies = options.analogies or (run / "data" / "analogies" / "questions-words.txt" if run else None)
    results, skipped = {}, {}
    try:
        vectors = read_vectors(path)
        if "analogy" in chosen and analogies and Path(analogies).is_file():
            results["analogy"] = {**words.analogy_accuracy(vectors, words.read_analogies(analogies)),
                                  "questions_file": str(analogies)}
        elif "analogy" in chosen:
            skipped["analogy"] = "needs --analogies FILE (or vectors inside a run with world analogies)"
        if "similarity" in chosen and options.similarity:
            results["similarity"] = {Path(f).name: words.similarity_spearman(vectors, words.read_similarity(f))
                                     for f in options.similarity}
        elif "similarity" in chosen:
            skipped["similarity"] = "needs --similarity FILE (wordsim353.tsv, simlex999.txt)"
        if "neighbours" in chosen:
            results["neighbours"] = words.nearest_neighbours(vectors, vectors.words[:N_SAMPLES], k=5)
    except VectorsError as e:
        raise PipelineError(str(e)) from None
    if options.suite and skipped:
        suite, why = next(iter(skipped.items()))
        raise PipelineError(f"--suite {suite}: {why} ({path})")
    return {"model": str(path), "kind": "word_vectors", "stage": None, "step": None, "data": str(analogies or ""),
            "suites": results, "skipped": skipped}


VECTOR_SUITES = ("analogy", "similarity", "neighbours")


# ------------------------------------------------------------------------------------------- the command


def resolve(path_or_id: str | None) -> Path | None:
    from pipeline.hub import local_folder

    return local_folder(path_or_id) if path_or_id else None


def load_reward_model(folder: Path):
    if identify(folder).kind != REWARD_MODEL:
        raise PipelineError(f"--reward-model {folder}: not a reward model (a *ForSequenceClassification folder)")
    model = load_model(folder, REWARD_MODEL)
    if model.config.num_labels != 1:
        raise PipelineError(f"--reward-model {folder}: has {model.config.num_labels} labels; a reward is one scalar")
    return model


def load_other_policy(folder: Path, option: str):
    """The causal LM given to --reference or --against; a one-line error saying what the folder is otherwise."""
    try:
        require_causal_lm(folder)
    except PipelineError as e:
        raise PipelineError(f"{option} {e}") from None
    return load_model(folder, CAUSAL_LM)


def context(target: ModelFolder, options) -> Context:
    """Model, tokenizer, data and the models the suites compare with: the given ones, else the run's own (its
    reward model; for a ppo policy, the sft policy as the reference, as the ppo stage measured KL)."""
    data = data_for(target, options.data)
    ctx = Context(target, load_model(target.folder, target.kind), load_tokenizer(target.folder), data)
    if target.kind != CAUSAL_LM:
        return ctx
    reward = resolve(options.reward_model) or (data.run / "reward" / "final" if data.run is not None and
                                               (data.run / "reward" / "_SUCCESS").is_file() else None)
    reference = resolve(options.reference) or (target.run / "sft" / "final" if target.stage == "ppo" else None)
    ctx.reward_model = load_reward_model(reward) if reward else None
    ctx.reference = load_other_policy(reference, "--reference") if reference else None
    ctx.against = load_other_policy(resolve(options.against), "--against") if options.against else None
    return ctx


def evaluate_target(target: ModelFolder, options, progress=None) -> dict:
    """{"model", "kind", "stage", "step", "data", "suites": {suite: numbers}, "skipped": {suite: why}}."""
    chosen = options.suite or SUITES[target.kind]
    wrong = [s for s in chosen if s not in SUITES[target.kind]]
    if wrong:
        raise PipelineError(f"--suite {wrong[0]}: not a suite for a {target.kind.replace('_', ' ')} at {target.folder} "
                            f"(valid: {', '.join(SUITES[target.kind])})")
    ctx = context(target, options)
    results, skipped = {}, {}
    for suite in chosen:
        if progress is not None:
            progress.update(progress.task_ids[0], description=f"{target.label}: {suite}")
        try:
            results[suite] = SUITE_FUNCTIONS[suite](ctx)
        except Unavailable as why:
            if options.suite:
                raise PipelineError(f"--suite {suite}: {why} ({target.folder})") from None
            skipped[suite] = str(why)
    data = str(ctx.data.text_file or ctx.data.run or "")
    return {"model": str(target.folder), "kind": target.kind, "stage": target.stage, "step": target.step,
            "data": data, "suites": results, "skipped": skipped}


def add_arguments(parser, name: str) -> None:
    parser.description = __doc__.split("\n\n")[0]
    parser.add_argument("path", help="a model folder, checkpoint-<step>, stage folder (its final/), run folder or "
                                      "Hub id")
    parser.add_argument("--suite", action="append", metavar="NAME",
                        help=f"run only these suites (repeatable: {', '.join(SUITE_FUNCTIONS)}); default: all that fit")
    parser.add_argument("--data", help="a run folder whose datasets to use, or a .txt file for bits per byte")
    parser.add_argument("--reward-model", help="reward model for reward_score and win_rate (default: the run's)")
    parser.add_argument("--reference", help="reference policy for the KL (default: a ppo policy's sft model)")
    parser.add_argument("--against", help="another policy: win rate of this one over it, judged by the reward model")
    parser.add_argument("--analogies", help="word vectors: a questions-words.txt-format file (default: the run's)")
    parser.add_argument("--similarity", action="append", help="word vectors: a word-pair file (wordsim353.tsv, "
                        "simlex999.txt); repeatable")
    parser.add_argument("--checkpoints", action="store_true", help="with a run folder: every checkpoint-<step> too")
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")


def run_command(args) -> int:
    from rich.progress import Progress

    import datasets
    import transformers

    from pipeline.hub import local_folder

    transformers.utils.logging.disable_progress_bar()  # weight loading; ours shows the suites
    datasets.disable_progress_bars()
    path = local_folder(args.path)
    unknown = [s for s in args.suite or [] if s not in SUITE_FUNCTIONS and s not in VECTOR_SUITES]
    if unknown:
        valid = ", ".join([*SUITE_FUNCTIONS, *VECTOR_SUITES])
        raise PipelineError(f"--suite {unknown[0]}: no such suite (valid: {valid})")
    if path.is_file():  # a word-vector file
        return print_results(args, {path.name: evaluate_vectors(path, args)}, None)
    found = targets(path, args.checkpoints)
    is_run = len(found) > 1 or is_run_folder(path)
    eval_folder = RunDir(path).inside(RunDir(path).root / "eval") if is_run else None  # never a symlink out
    # writing <run>/eval/ makes this command a writer of the run folder: refused while `pipeline run` (which
    # may be rewriting the models read here) or another eval holds it, as the runner refuses a second run
    writer = RunLock.of_run(RunDir(path).root) if is_run else nullcontext()
    results = {}
    with writer, Progress(transient=True, console=_stderr()) as progress:
        progress.add_task("evaluating", total=len(found))
        for target in found:
            results[target.label] = evaluate_target(target, args, progress)
            if is_run:
                write_json(eval_folder / f"{target.label}.json", results[target.label])
            progress.advance(progress.task_ids[0])
    return print_results(args, results, path if is_run else None)


def print_results(args, results: dict, run: Path | None) -> int:
    """One JSON object on stdout (`--json`: the run's results, or the one result), else a table per result."""
    output = {"run": str(run), "results": results} if run else next(iter(results.values()))
    if args.json:
        sys.stdout.write(json.dumps(output, default=str) + "\n")
    else:
        for label, result in results.items():
            _stdout().print(table(label, result))
    return 0


def table(label: str, result: dict):
    """A rich table of a result's scalar numbers, one row per (suite, metric), floors included."""
    from rich.table import Table

    out = Table(title=f"{label}  ({result['model']})")
    for column in ("suite", "metric", "value"):
        out.add_column(column, justify="right" if column == "value" else "left")
    for suite, numbers in result["suites"].items():
        intervals = {k: v for k, v in numbers.items() if k.endswith("ci95") and isinstance(v, list)}
        flat = {**{k: v for k, v in numbers.items() if not isinstance(v, (list, dict))},
                **{f"floor_{k}": v for k, v in numbers.get("floors", {}).items()}}
        for key, value in flat.items():
            out.add_row(suite, key, f"{value:.4f}" if isinstance(value, float) else str(value))
        for key, (low, high) in intervals.items():
            out.add_row(suite, key, f"[{low:.4f}, {high:.4f}]")
        for word, neighbours in (numbers.items() if suite == "neighbours" else []):
            out.add_row(suite, word, ", ".join(f"{n} {c:.2f}" for n, c in neighbours))
        for name, inner in (numbers.items() if suite == "similarity" else []):
            out.add_row(suite, f"{name} spearman", f"{inner['spearman']:.4f} ({inner['pairs']} pairs)")
        for sample in numbers.get("samples", []):
            out.add_row(suite, sample["prompt"][:40], sample["reply"][:60])
    for suite, why in result["skipped"].items():
        out.add_row(suite, "skipped", why)
    return out


def _stderr():
    from rich.console import Console

    return Console(stderr=True)


def _stdout():
    from rich.console import Console

    return Console()
