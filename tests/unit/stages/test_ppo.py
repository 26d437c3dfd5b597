"""The ppo stage on a nano SFT policy and reward model: artifacts that reload, resume after SIGKILL, guard rails,
bad input as one line; the recipe options PPO-ptx and the value head on the policy."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from pipeline.cli import main
from tests.conftest import kill_when, make_run, stage

ROOT = Path(__file__).resolve().parents[3]
PRETRAIN = {"model_size": "nano", "block_size": 64, "max_steps": 30, "per_device_train_batch_size": 8,
            "learning_rate": 0.005, "eval_steps": 30, "save_steps": 30, "n_samples": 0}
SFT = {"max_steps": 10, "per_device_train_batch_size": 8, "eval_max_new_tokens": 8, "learning_rate": 0.002}
REWARD = {"max_steps": 10, "per_device_train_batch_size": 8, "learning_rate": 0.001}
PPO = {"rollout_batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 6, "total_episodes": 16,
       "save_steps": 2, "save_total_limit": 5, "eval_max_new_tokens": 4, "eval_dataset": ""}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("run") / "r", pretrain=PRETRAIN, sft=SFT, reward=REWARD, ppo=PPO)
    for name in ("data", "tokenizer", "pretrain", "sft", "reward"):
        stage(name, folder)
    return folder


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("ppo"))
    return target


def test_ppo_writes_models_that_reload_and_metrics(tuned, tmp_path):
    folder = copy_run(tuned, tmp_path / "r")
    stage("ppo", folder, "ppo.eval_steps=2", "ppo.n_samples=2", "run.report_to=[tensorboard]")
    out = folder / "ppo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["updates"] == 4 and metrics["episodes"] == 16 and len(metrics["history"]) == 4
    assert ["held_out_score" in h for h in metrics["history"]] == [False, True, False, True]
    assert len(metrics["samples"]) == 2 and set(metrics["samples"][0]) == {"prompt", "sft", "ppo"}
    assert list((out / "runs").glob("events.out.tfevents.*"))
    for key in ("score", "kl", "entropy", "policy_clip_fraction", "value_clip_fraction", "value_loss", "approx_kl",
                "ratio", "response_length", "eos_share", "episodes_per_second", "kl_coef"):
        assert all(key in h for h in metrics["history"]), key
    assert {"score_gain", "score_gain_ci95", "kl_after", "score_mean_before", "score_mean_after"} <= set(metrics)
    assert "exact_match_after" not in metrics and "floor_majority" not in metrics  # eval_dataset '' skips the questions
    assert metrics["value_thread"] is (torch.get_num_threads() >= 2)  # value_thread: auto, the stage's default
    policy = AutoModelForCausalLM.from_pretrained(out / "final")
    value = AutoModelForSequenceClassification.from_pretrained(out / "value")
    assert value.config.num_labels == 1
    sft = load_file(folder / "sft" / "final" / "model.safetensors")
    ppo = load_file(out / "final" / "model.safetensors")
    assert any(not torch.equal(sft[k], ppo[k]) for k in sft), "PPO changed no weight"
    assert policy.config.vocab_size == AutoModelForCausalLM.from_pretrained(folder / "sft" / "final").config.vocab_size
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]


def launch(folder: Path) -> subprocess.Popen:
    log = open(folder.parent / f"{folder.name}.log", "a")
    return subprocess.Popen([sys.executable, "-m", "pipeline.stages.ppo", "--run", str(folder)], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=log, stderr=subprocess.STDOUT)


def test_sft_side_of_the_evaluation_matches_the_sft_stage(tuned, tmp_path):
    """The PPO stage's "before" exact match and its floors are the SFT stage's own numbers on the same questions."""
    folder = copy_run(tuned, tmp_path / "r")
    stage("ppo", folder, "ppo.eval_dataset=qa_eval", "ppo.eval_max_new_tokens=8", "ppo.total_episodes=4",
          "ppo.rollout_batch_size=4", "ppo.mini_batch_size=4", "ppo.score_qa_prompts=true")
    ppo = json.loads((folder / "ppo" / "metrics.json").read_text())
    sft = json.loads((folder / "sft" / "metrics.json").read_text())
    held_out = datasets.load_from_disk(str(folder / "data" / "prompts"))["test"]
    assert ppo["prompts"] == len(held_out) + sft["qa_rows"]  # the reward model scored the questions too
    assert SFT["eval_max_new_tokens"] == 8
    for key in ("exact_match", "contains_answer"):
        assert ppo[f"{key}_before"] == sft[key], key
    assert (ppo["floor_echo"], ppo["floor_majority"]) == (sft["floor_echo"], sft["floor_majority"])
    assert ppo["qa_rows"] == sft["qa_rows"] and isinstance(ppo["reward_hacking"], bool)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tuned, tmp_path):
    base, killed = copy_run(tuned, tmp_path / "base"), copy_run(tuned, tmp_path / "killed")
    kill_when(launch(killed), killed / "ppo" / "checkpoint-2" / "trainer_state.json")
    assert not (killed / "ppo" / "_SUCCESS").exists(), "the run finished before it could be killed"
    for folder in (killed, base):
        proc = launch(folder)
        assert proc.wait(timeout=600) == 0, (folder.parent / f"{folder.name}.log").read_text()[-3000:]
    assert "ppo (resuming)" in (tmp_path / "killed.log").read_text()
    a = json.loads((base / "ppo" / "metrics.json").read_text())
    b = json.loads((killed / "ppo" / "metrics.json").read_text())
    assert len(a["history"]) == len(b["history"]) == 4
    for before, after in zip(a["history"], b["history"]):
        for key in before.keys() - {"episodes_per_second"}:  # wall-clock
            assert after[key] == pytest.approx(before[key], rel=1e-5, abs=1e-7), (before["step"], key)
    wa, wb = load_file(base / "ppo" / "final" / "model.safetensors"), load_file(killed / "ppo" / "final" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_nan_reward_stops_with_the_step_named(tuned, tmp_path, monkeypatch, capsys):
    from pipeline.rl import rollout

    folder = copy_run(tuned, tmp_path / "r")
    calls = {"n": 0}
    real = rollout.sequence_scores

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        scores = real(*args, **kwargs)
        return scores * float("nan") if calls["n"] == 3 else scores

    monkeypatch.setattr(rollout, "sequence_scores", poisoned)
    assert main(["stage", "ppo", "--run", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "step 3" in err and "non-finite" in err
    assert (folder / "ppo" / "checkpoint-2" / "trainer_state.json").is_file()  # the last good checkpoint stays
    assert not (folder / "ppo" / "_SUCCESS").exists()


@pytest.mark.parametrize("overrides, message", [
    ("ppo.max_new_tokens=0", "max_new_tokens"),
    ("ppo.mini_batch_size=3", "mini_batch_size"),
    ("ppo.dataset=corpus", "has no `prompt` column"),
    ("ppo.kl_estimator=k2", "kl_estimator"),
    ("ppo.ptx_coef=-0.5", "ppo.ptx_coef: expected a finite number >= 0"),
    ("ppo.ptx_coef=0.5 ppo.ptx_dataset=prompts", "ppo.ptx_dataset: 'prompts' has no `text` column"),
    ("ppo.ptx_coef=0.5 ppo.ptx_block_size=100000", "ppo.ptx_dataset: the train split of 'corpus' is shorter than one block"),
    ("ppo.value_model=shared", "ppo.value_model: expected one of reward, policy_head, got 'shared'"),
    ("ppo.score_qa_prompts=true", "ppo.score_qa_prompts: needs an eval_dataset"),
    ("ppo.likelihood_weight=-1", "ppo.likelihood_weight: expected a finite number >= 0"),
    ("ppo.max_grad_norm=-1", "ppo.max_grad_norm: expected a finite number >= 0 (0 disables)"),
    ("ppo.value_thread=true ppo.value_model=policy_head", "ppo.value_thread: needs value_model: reward"),
    ("ppo.value_thread=sometimes", "ppo.value_thread: expected one of True, False, 'auto', got 'sometimes'"),
])
def test_bad_input_is_one_line(tuned, tmp_path, capsys, overrides, message):
    folder = copy_run(tuned, tmp_path / "r")
    assert main(["stage", "ppo", "--run", str(folder), *overrides.split()]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any(message in line for line in err), err
    assert not (folder / "ppo" / "_SUCCESS").exists()


def test_reward_model_with_two_labels_is_refused(tuned, tmp_path, capsys):
    folder = copy_run(tuned, tmp_path / "r")
    config = json.loads((folder / "reward" / "final" / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    config["label2id"] = {"a": 0, "b": 1}
    (folder / "reward" / "final" / "config.json").write_text(json.dumps(config))
    assert main(["stage", "ppo", "--run", str(folder)]) == 2
    assert "2 labels" in capsys.readouterr().err


def test_missing_sft_is_refused(tuned, tmp_path, capsys):
    folder = copy_run(tuned, tmp_path / "r")
    shutil.rmtree(folder / "sft" / "final")
    assert main(["stage", "ppo", "--run", str(folder)]) == 2
    assert "sft" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_make_the_same_first_update_as_one(tuned, tmp_path):
    """2 ranks x 2 prompts = 1 rank x 4 prompts: the same episodes (sampling is seeded per episode, not per rank),
    advantages whitened over both ranks, the loss a token mean over the global mini-batch; so the same model."""
    one, two = copy_run(tuned, tmp_path / "one"), copy_run(tuned, tmp_path / "two")
    update = ["ppo.ppo_epochs=1", "ppo.total_episodes=4", "ppo.save_steps=0", "ppo.eval_dataset="]
    stage("ppo", one, "ppo.rollout_batch_size=4", "ppo.mini_batch_size=4", *update)
    result = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                             "recipes/accelerate/cpu_2proc.yaml", "-m", "pipeline.stages.ppo", "--run", str(two),
                             "ppo.rollout_batch_size=2", "ppo.mini_batch_size=2", *update],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a = json.loads((one / "ppo" / "metrics.json").read_text())
    b = json.loads((two / "ppo" / "metrics.json").read_text())
    assert (a["num_processes"], b["num_processes"]) == (1, 2) and a["episodes"] == b["episodes"] == 4
    for key in ("score", "kl", "response_length", "eos_share", "value_mean"):  # gathered over the ranks
        assert b["history"][0][key] == pytest.approx(a["history"][0][key], rel=1e-4, abs=1e-5), key
    wa, wb = load_file(one / "ppo" / "final" / "model.safetensors"), load_file(two / "ppo" / "final" / "model.safetensors")
    assert all(torch.allclose(wa[k], wb[k], rtol=1e-4, atol=1e-6) for k in wa)
    sft = load_file(one / "sft" / "final" / "model.safetensors")
    assert any(not torch.equal(sft[k], wa[k]) for k in sft)  # the update did change the policy


def test_ptx_logs_a_finite_lm_loss_every_update(tuned, tmp_path):
    folder = copy_run(tuned, tmp_path / "r")
    stage("ppo", folder, "ppo.ptx_coef=0.5", "ppo.ptx_block_size=32", "ppo.total_episodes=8", "ppo.save_steps=0")
    history = json.loads((folder / "ppo" / "metrics.json").read_text())["history"]
    assert len(history) == 2
    for h in history:  # next-token cross-entropy in nats: above 0, and a trained model beats uniform (ln 512)
        assert math.isfinite(h["ptx_loss"]) and 0 < h["ptx_loss"] < math.log(512)


def test_likelihood_weight_adds_the_sft_log_likelihood_to_the_score(tuned, tmp_path):
    folder = copy_run(tuned, tmp_path / "r")
    stage("ppo", folder, "ppo.likelihood_weight=0.5", "ppo.total_episodes=8", "ppo.save_steps=0")
    metrics = json.loads((folder / "ppo" / "metrics.json").read_text())
    for h in metrics["history"]:  # shaped = score + 0.5 x L (missing_eos_penalty -1 on responses without EOS)
        assert h["ref_likelihood"] < 0
        eos_term = -1.0 * (1 - h["eos_share"])
        assert h["shaped_score"] == pytest.approx(h["score"] + 0.5 * h["ref_likelihood"] + eos_term, rel=1e-5)
    # the optimised score's gain = the reward model's gain + 0.5 x the likelihood's (paired means over prompts)
    assert metrics["objective_gain"] == pytest.approx(metrics["score_gain"] + 0.5 * metrics["likelihood_gain"])
    assert metrics["likelihood_mean_before"] < 0 and "likelihood_gain_ci95" in metrics


def test_value_head_on_the_policy_leaves_a_vanilla_final_model(tuned, tmp_path):
    from pipeline.rl.value_head import load_value_head

    folder = copy_run(tuned, tmp_path / "r")
    stage("ppo", folder, "ppo.value_model=policy_head", "ppo.total_episodes=8", "ppo.save_steps=0")
    out = folder / "ppo"
    policy = AutoModelForCausalLM.from_pretrained(out / "final")
    ppo, sft = load_file(out / "final" / "model.safetensors"), load_file(folder / "sft" / "final" / "model.safetensors")
    assert ppo.keys() == sft.keys() and not [k for k in ppo if "value" in k]
    assert any(not torch.equal(sft[k], ppo[k]) for k in sft), "PPO changed no weight"
    assert sorted(p.name for p in (out / "value").iterdir()) == ["value_head.json", "value_head.safetensors"]
    head = load_value_head(out / "value")
    assert head.in_features == policy.config.hidden_size and head.weight.any()  # zero at the start, trained since
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert history[0]["value_mean"] == 0.0 and "ptx_loss" not in history[0]  # the first rollout: a zero head
