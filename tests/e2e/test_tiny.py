"""`pipeline run recipes/tiny.yaml` end to end through the console script: artifact tree, rerun skips."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def pipeline(*args, cwd=ROOT):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_tiny_recipe_end_to_end(tmp_path):
    out = tmp_path / "tiny"
    fast = "pretrain.max_steps=300"  # the artifact tree and the skips do not need the recipe's 1,200 steps
    first = pipeline("run", "recipes/tiny.yaml", f"run.output_dir={out}", fast)
    assert first.returncode == 0, first.stderr[-3000:]
    files = tree(out)
    for stage in ("data", "tokenizer", "pretrain", "sft", "reward", "ppo", "regression"):
        assert f"{stage}/_SUCCESS" in files and f"{stage}/metrics.json" in files
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert f"ppo/final/{name}" in files and f"ppo/value/{name}" in files
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert f"pretrain/final/{name}" in files
    assert "tokenizer/final/tokenizer.json" in files
    assert {"config.yaml", "env.json", "data/manifest.json", "data/analogies/questions-words.txt"} <= set(files)
    for name in ("corpus", "dialogue", "preferences", "prompts", "qa_eval", "analogies", "regression"):
        assert f"data/{name}/README.md" in files and f"data/{name}/dataset_dict.json" in files
    assert not [f for f in files if ".tmp" in f]
    marker = json.loads((out / "data" / "_SUCCESS").read_text())

    second = pipeline("run", "recipes/tiny.yaml", f"run.output_dir={out}", fast)
    assert second.returncode == 0, second.stderr[-3000:]
    for stage in ("data", "tokenizer", "pretrain"):
        assert f"{stage}: up to date, skipped" in second.stderr
    assert json.loads((out / "data" / "_SUCCESS").read_text())["id"] == marker["id"]
    metrics = json.loads((out / "pretrain" / "metrics.json").read_text())
    assert metrics["eval_loss"] < 2.5 and metrics["samples"]  # the world is learnable in a minute


def test_bad_override_exits_2_with_one_line(tmp_path):
    result = pipeline("run", "recipes/tiny.yaml", f"run.output_dir={tmp_path / 'x'}", "data.world.n_people=many")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: recipes/tiny.yaml: data.world.n_people: expected int, got 'many'"
    assert not (tmp_path / "x").exists()
