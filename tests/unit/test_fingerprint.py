"""A stage's fingerprint ignores the TrainingArguments fields that cannot change its result (RESULT_NEUTRAL_FIELDS)
and nothing else: a rerun with only those changed is skipped."""

import dataclasses
import json
from pathlib import Path

import pytest
from transformers import TrainingArguments

from pipeline.config import BEST_MODEL_FIELDS, RESULT_NEUTRAL_FIELDS, load_recipe, result_neutral
from tests.conftest import make_run, stage

TRAINER_STAGES = ("pretrain", "sft", "reward")  # TrainingArguments, trl.SFTConfig, trl.RewardConfig
BASE = {name: {"dataloader_num_workers": 1} for name in TRAINER_STAGES}  # so that prefetch_factor may be set

# A valid new value for every result-neutral field (the recipe default differs from each).
CHANGES = {
    "logging_strategy": "epoch", "logging_steps": 3, "logging_first_step": True, "log_on_each_node": False,
    "log_level": "info", "log_level_replica": "error",
    "disable_tqdm": True, "report_to": "tensorboard", "run_name": "another", "project": "elsewhere",
    "trackio_space_id": "me/space", "trackio_bucket_id": "me/bucket", "trackio_static_space_id": "me/static",
    "save_strategy": "no", "save_steps": 7, "save_total_limit": 5,
    "push_to_hub": True, "hub_token": "hf_x", "hub_private_repo": True, "hub_model_id": "me/model",
    "hub_strategy": "end", "hub_always_push": True, "hub_revision": "dev",
    "dataloader_num_workers": 3, "dataloader_pin_memory": False, "dataloader_prefetch_factor": 4,
    "output_dir": "/elsewhere",
}


def recipe(tmp_path, *overrides, sections=BASE):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(dict(sections)))
    return load_recipe(path, list(overrides))


def fingerprints(r) -> dict[str, str]:
    return {name: r.fingerprint(name) for name in TRAINER_STAGES}


def test_every_neutral_field_is_a_training_arguments_field():
    fields = {f.name for f in dataclasses.fields(TrainingArguments) if f.init}
    assert not set(RESULT_NEUTRAL_FIELDS) - fields  # a typo would silently leave a field in the hash
    assert len(set(RESULT_NEUTRAL_FIELDS)) == len(RESULT_NEUTRAL_FIELDS)
    assert set(BEST_MODEL_FIELDS) <= set(RESULT_NEUTRAL_FIELDS)
    assert set(CHANGES) == set(RESULT_NEUTRAL_FIELDS)  # each one is exercised below


@pytest.mark.parametrize("name", RESULT_NEUTRAL_FIELDS)
def test_changing_a_neutral_field_keeps_the_fingerprint(tmp_path, name):
    before = recipe(tmp_path)
    after = recipe(tmp_path, *(f"{s}.{name}={CHANGES[name]}" for s in TRAINER_STAGES))
    for s in TRAINER_STAGES:  # the override did take effect
        assert dataclasses.asdict(after.sections[s])[name] != dataclasses.asdict(before.sections[s])[name], (s, name)
    assert fingerprints(after) == fingerprints(before)


@pytest.mark.parametrize("override", ["learning_rate=0.1234", "max_steps=77", "eval_steps=9", "seed=5",
                                      "logging_nan_inf_filter=false", "save_only_model=true",
                                      "dataloader_persistent_workers=true", "dataloader_drop_last=true"])
def test_changing_a_result_field_changes_the_fingerprint(tmp_path, override):
    before = fingerprints(recipe(tmp_path))
    after = fingerprints(recipe(tmp_path, *(f"{s}.{override}" for s in TRAINER_STAGES)))
    changed = [s for s in TRAINER_STAGES if before[s] != after[s]]
    if override == "dataloader_drop_last=true":  # pretrain already drops the last partial batch
        assert changed == ["sft", "reward"]
    else:
        assert changed == list(TRAINER_STAGES)


def test_with_load_best_model_at_end_the_saved_steps_count(tmp_path):
    best = {name: {"load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "steps",
                   "eval_steps": 10, "save_steps": 10} for name in TRAINER_STAGES}
    before = fingerprints(recipe(tmp_path, sections=best))
    assert fingerprints(recipe(tmp_path, *(f"{s}.save_steps=20" for s in TRAINER_STAGES), sections=best)) != before
    assert fingerprints(recipe(tmp_path, *(f"{s}.logging_steps=3" for s in TRAINER_STAGES), sections=best)) == before


def test_sections_that_are_not_training_arguments_keep_every_field(tmp_path):
    r = recipe(tmp_path)
    assert result_neutral(r.sections["data"]) == () and result_neutral(r.run) == ()
    assert result_neutral(r.sections["pretrain"]) == RESULT_NEUTRAL_FIELDS


def test_data_order_does_not_depend_on_the_loading_fields(tmp_path):
    """The Trainer's sampler runs in the main process: workers, pinning and prefetching only change speed."""
    import datasets
    from transformers import AutoModelForCausalLM, Trainer, default_data_collator, set_seed

    from pipeline.models.sizes import build_config

    model = AutoModelForCausalLM.from_config(build_config("nano", "llama", vocab_size=64, max_position_embeddings=8))
    rows = datasets.Dataset.from_dict({"input_ids": [[i % 64] * 4 for i in range(40)],
                                       "labels": [[i % 64] * 4 for i in range(40)]})

    def order(**loading):
        args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, use_cpu=True,
                                 report_to=[], seed=3, data_seed=3, **loading)
        trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=default_data_collator)
        set_seed(3)
        loader = trainer.get_train_dataloader()
        return [batch["input_ids"][:, 0].tolist() for _ in range(2) for batch in loader]  # two epochs

    plain = order(dataloader_num_workers=0)
    assert plain != sorted(plain)  # shuffled
    assert order(dataloader_num_workers=2, dataloader_pin_memory=False, dataloader_prefetch_factor=4) == plain


def test_rerun_with_only_logging_steps_changed_is_skipped(tmp_path, capsys):
    folder = make_run(tmp_path / "r",
                      pretrain={"model_size": "nano", "block_size": 32, "max_steps": 2, "logging_steps": 1,
                                "per_device_train_batch_size": 4, "eval_steps": 2, "save_steps": 2, "n_samples": 0})
    for name in ("data", "tokenizer", "pretrain"):
        stage(name, folder)
    marker = json.loads((folder / "pretrain" / "_SUCCESS").read_text())
    capsys.readouterr()
    stage("pretrain", folder, "pretrain.logging_steps=5", "pretrain.save_steps=7", "pretrain.disable_tqdm=true")
    assert "pretrain: up to date, skipped" in capsys.readouterr().err
    assert json.loads((folder / "pretrain" / "_SUCCESS").read_text()) == marker  # not rerun: same id
    assert "logging_steps: 5" in (folder / "config.yaml").read_text()  # the run's config records the new value

    stage("pretrain", folder, "pretrain.learning_rate=0.01")  # a field that matters does rerun it
    assert json.loads((folder / "pretrain" / "_SUCCESS").read_text())["id"] != marker["id"]


def test_a_section_can_declare_its_own_neutral_fields():
    root = Path(__file__).resolve().parents[2]
    base = load_recipe(root / "recipes" / "tiny.yaml")
    for override in ("ppo.logging_steps=7", "ppo.save_steps=3", "ppo.save_total_limit=9"):
        assert load_recipe(root / "recipes" / "tiny.yaml", [override]).fingerprint("ppo") == base.fingerprint("ppo")
    assert load_recipe(root / "recipes" / "tiny.yaml", ["ppo.kl_coef=0.1"]).fingerprint("ppo") != base.fingerprint("ppo")


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[2].joinpath("recipes").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_config_yaml_gives_back_every_stage_fingerprint(path, tmp_path):
    """A run's config.yaml (what `pipeline stage X --run` reads) fingerprints every stage as its recipe did, so
    finished stages stay up to date (0 for a float field came back as 0.0 and reran pretrain, sft and reward)."""
    from pipeline.config import dump_yaml, load_recipe

    recipe = load_recipe(path)
    written = tmp_path / "config.yaml"
    written.write_text(dump_yaml(recipe))
    again = load_recipe(written)
    for stage in recipe.sections:
        assert again.fingerprint(stage) == recipe.fingerprint(stage), stage
