"""The suites of `pipeline eval` (its module docstring says what each measures) and where they read their data:
a run's datasets and config.yaml settings (`Data`, `data_for`), or a text file for bits per byte. A suite takes a
`Context` (model, tokenizer, data, and the reward model / reference / other policy when given) and returns its
numbers, or raises `Unavailable` saying what it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline.checkpoints import CAUSAL_LM, REWARD_MODEL, ModelFolder, device
from pipeline.errors import PipelineError

SUITES = {CAUSAL_LM: ("bpb", "exact_match", "reward_score", "win_rate", "samples"),
          REWARD_MODEL: ("reward_accuracy",)}
N_SAMPLES = 4


@dataclass
class Data:
    """What the suites score on, and with which settings (a run's config, or defaults)."""

    run: Path | None = None
    text_file: Path | None = None
    settings: dict = field(default_factory=dict)

    def dataset(self, name: str, split: str):
        if self.run is None:
            return None
        path = self.run / "data" / name
        if not (path / "dataset_dict.json").is_file():
            return None
        import datasets

        ds = datasets.load_from_disk(str(path), keep_in_memory=True)
        return ds[split] if split in ds else None


def data_for(target: ModelFolder, data_arg: str | None) -> Data:
    """Where the suites read their data: `--data` (a run folder or a .txt file), else the target's own run."""
    if data_arg:
        from pipeline.hub import local_folder

        path = local_folder(data_arg, repo_type="dataset")
        if path.is_file():
            return Data(text_file=path, settings=settings_of(target.run))
        if not (path / "config.yaml").is_file() or not (path / "data").is_dir():
            raise PipelineError(f"--data {data_arg}: expected a run folder (with config.yaml and data/) or a .txt file")
        return Data(run=path, settings=settings_of(path))
    return Data(run=target.run, settings=settings_of(target.run))


def settings_of(run: Path | None) -> dict:
    """The resolved recipe sections of a run (its config.yaml), or {}."""
    if run is None:
        return {}
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text()) or {}


def held_out_prompts(data: Data) -> list | None:
    """The PPO stage's held-out prompts: the prompts' eval split, plus the qa_eval questions when the run's ppo
    section scores them (`score_qa_prompts`)."""
    ppo = data.settings.get("ppo", {})
    split = data.dataset(ppo.get("dataset", "prompts"), ppo.get("eval_split", "test"))
    if split is None:
        return None
    prompts = list(split["prompt"])
    qa = data.dataset(ppo.get("eval_dataset") or "qa_eval", "test") if ppo.get("score_qa_prompts") else None
    return prompts + (list(qa["prompt"]) if qa is not None else [])



class Unavailable(Exception):
    """A suite that cannot run on what was given; the message says what it needs."""


@dataclass
class Context:
    """Everything a suite may use."""

    target: ModelFolder
    model: object
    tokenizer: object
    data: Data
    reward_model: object = None
    reference: object = None
    against: object = None

    def stage_setting(self, key: str, default):
        """A setting of the target's stage section (ppo's reply length for a ppo policy), else sft's, else default."""
        for section in (self.target.stage, "sft"):
            value = self.data.settings.get(section or "", {}).get(key)
            if value is not None:
                return value
        return default


def suite_bpb(ctx: Context) -> dict:
    import numpy as np

    from pipeline.data.packing import validation_stream
    from pipeline.metrics.lm import bits_per_byte, token_byte_lengths

    pretrain = ctx.data.settings.get("pretrain", {})
    if ctx.data.text_file is not None:
        texts, source = [ctx.data.text_file.read_text(encoding="utf-8")], str(ctx.data.text_file)
    else:
        dataset = pretrain.get("dataset", "corpus")
        split = ctx.data.dataset(dataset, "validation")
        if split is None:
            raise Unavailable("needs a text set: a run with a corpus validation split, or --data FILE.txt")
        texts, source = split["text"], f"{dataset} validation"
    block_size = pretrain.get("block_size") or ctx.model.config.max_position_embeddings
    stream, _ = validation_stream(texts, ctx.tokenizer)
    result = bits_per_byte(ctx.model, np.asarray(stream), token_byte_lengths(ctx.tokenizer), block_size,
                           pretrain.get("per_device_eval_batch_size", 8))
    return {**result, "text": source, "block_size": block_size}


def suite_exact_match(ctx: Context) -> dict:
    from pipeline.metrics.qa import qa_floors, score_qa

    qa = ctx.data.dataset(ctx.data.settings.get("sft", {}).get("eval_dataset") or "qa_eval", "test")
    if qa is None:
        raise Unavailable("needs the qa_eval questions of a run (give --data RUN)")
    scored = score_qa(ctx.model, ctx.tokenizer, qa, ctx.stage_setting("eval_max_new_tokens", 32))
    floors = {name: result["exact_match"] for name, result in qa_floors(qa).items()}
    return {**scored, "floors": floors}


def suite_reward_score(ctx: Context) -> dict:
    from pipeline.rl.evaluation import evaluate_policy

    prompts = held_out_prompts(ctx.data)
    if ctx.reward_model is None or not prompts:
        raise Unavailable("needs a reward model (--reward-model, or a run that has one) and held-out prompts")
    result = evaluate_policy(ctx.model, ctx.reward_model, ctx.tokenizer, prompts, reference=ctx.reference,
                             max_new_tokens=ctx.stage_setting("eval_max_new_tokens", 32))
    keep = ("score_mean", "score_std", "kl_mean", "response_length_mean", "eos_share")
    return {"prompts": len(prompts), **{k: result[k] for k in keep if k in result}}


def suite_win_rate(ctx: Context) -> dict:
    from pipeline.metrics.modules import load
    from pipeline.rl.evaluation import evaluate_policy

    prompts = held_out_prompts(ctx.data)
    if ctx.against is None or ctx.reward_model is None or not prompts:
        raise Unavailable("needs --against OTHER, a reward model and held-out prompts")
    length = ctx.stage_setting("eval_max_new_tokens", 32)
    mine = evaluate_policy(ctx.model, ctx.reward_model, ctx.tokenizer, prompts, max_new_tokens=length)
    theirs = evaluate_policy(ctx.against, ctx.reward_model, ctx.tokenizer, prompts, max_new_tokens=length)
    # the same response is a tie: its two scores come from differently padded batches and may differ in the
    # 7th digit, which must not decide a win
    other = [own if a == b else score for own, score, a, b in
             zip(mine["scores"], theirs["scores"], mine["responses"], theirs["responses"])]
    return load("win_rate").compute(scores=mine["scores"], other_scores=other)


def suite_samples(ctx: Context) -> dict:
    from pipeline.metrics.qa import generate_replies

    prompts = (held_out_prompts(ctx.data) or [])[:N_SAMPLES]
    if not prompts:
        raise Unavailable("needs held-out prompts (a run's prompts test split)")
    replies = generate_replies(ctx.model, ctx.tokenizer, prompts, ctx.stage_setting("eval_max_new_tokens", 32))
    return {"samples": [{"prompt": p[-1]["content"], "reply": r} for p, r in zip(prompts, replies)]}


def suite_reward_accuracy(ctx: Context) -> dict:
    import tempfile

    from trl import RewardConfig, RewardTrainer

    from pipeline.metrics.reward import held_out_pairs, pair_metrics, score_pairs

    section = ctx.data.settings.get("reward", {})
    test = ctx.data.dataset(section.get("dataset", "preferences"), section.get("eval_split", "test"))
    if test is None:
        raise Unavailable("needs preference pairs: a run with a preferences test split (give --data RUN)")
    columns = [c for c in ("prompt", "chosen", "rejected", "kind") if c in test.column_names]
    with tempfile.TemporaryDirectory() as scratch:  # TRL's own preprocessing, as in the reward stage
        args = RewardConfig(output_dir=scratch, report_to=[], bf16=False, max_length=section.get("max_length", 1024),
                            use_cpu=device().type == "cpu")
        trainer = RewardTrainer(model=ctx.model, args=args, processing_class=ctx.tokenizer,
                                train_dataset=test.select(range(1)).select_columns(columns[:3]))
        pairs, skipped = held_out_pairs(trainer, test.select_columns(columns))
    chosen, rejected = score_pairs(ctx.model, pairs)
    return pair_metrics(chosen, rejected, pairs["kind"] if "kind" in pairs.column_names else None, skipped)


SUITE_FUNCTIONS = {"bpb": suite_bpb, "exact_match": suite_exact_match, "reward_score": suite_reward_score,
                   "win_rate": suite_win_rate, "samples": suite_samples, "reward_accuracy": suite_reward_accuracy}
