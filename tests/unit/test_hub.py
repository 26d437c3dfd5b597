"""`pipeline push` against a local server that speaks the Hub API (tests/hub_server.py), with the real client.

A finished nano run is pushed; its repos come back with `snapshot_download` and load with vanilla
`from_pretrained` / `load_dataset`, giving the same logits and rows as the run folder; the model cards parse
with `ModelCard` and their model-index holds the numbers of metrics.json. Every failure is one line on stderr,
exit status 2, with the run folder unchanged byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import pytest
import torch

from pipeline.cli import main
from tests.conftest import make_run, stage
from tests.hub_server import FakeHub

TOKEN = "hf_FakeTokenForTheseTests0123456789"
MODEL_STAGES = {"pretrain": "AutoModelForCausalLM", "sft": "AutoModelForCausalLM",
                "reward": "AutoModelForSequenceClassification", "ppo": "AutoModelForCausalLM"}
DATASETS = ("analogies", "corpus", "dialogue", "preferences", "prompts", "qa_eval", "regression")


def serve(monkeypatch, hub: FakeHub, home: Path) -> None:
    """Point the client at `hub` with TOKEN, undoing the offline mode tests/conftest.py sets. huggingface_hub
    reads some settings once at import: those are patched in `constants` too."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with FakeHub(TOKEN) as server:
        serve(monkeypatch, server, tmp_path / "hf_home")
        yield server


@pytest.fixture(scope="module")
def pushed(nano_run, tmp_path_factory):
    """The nano run pushed once with `pipeline push RUN --repo-id me/nano`: (hub, stdout, download cache)."""
    home = tmp_path_factory.mktemp("hf_home")
    with FakeHub(TOKEN) as server, pytest.MonkeyPatch.context() as monkeypatch:
        serve(monkeypatch, server, home)
        before = tree_hash(nano_run)
        stdout = run_cli(["push", str(nano_run), "--repo-id", "me/nano"], expect=0)[0]
        assert tree_hash(nano_run) == before
        yield server, stdout, home / "downloads"


def run_cli(argv: list[str], expect: int) -> tuple[str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(argv) == expect, err.getvalue()
    return out.getvalue(), err.getvalue()


def tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def download(repo_id: str, cache: Path, repo_type: str = "model", revision: str | None = None) -> Path:
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, repo_type=repo_type, revision=revision, cache_dir=cache))


def logits(folder: Path, auto_class: str) -> torch.Tensor:
    import transformers

    model = getattr(transformers, auto_class).from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.tensor([[5, 17, 42, 9, 3, 11]])).logits


# ---------------------------------------------------------------------------------------------------------------
# A whole run, and back


def test_push_prints_one_url_per_repo(pushed):
    server, stdout, _ = pushed
    expected = [f"pushed {server.url}/datasets/me/nano-{name}" for name in DATASETS]
    expected += [f"pushed {server.url}/me/nano-{name}" for name in MODEL_STAGES]
    assert stdout.splitlines() == expected
    assert sorted(server.repos) == sorted([("dataset", f"me/nano-{n}") for n in DATASETS]
                                          + [("model", f"me/nano-{n}") for n in MODEL_STAGES])


@pytest.mark.parametrize("name", MODEL_STAGES)
def test_model_downloads_and_gives_the_same_logits(pushed, nano_run, name):
    _, _, cache = pushed
    folder = download(f"me/nano-{name}", cache)
    assert (folder / "model.safetensors").is_file() and not list(folder.rglob("*.bin"))
    torch.testing.assert_close(logits(folder, MODEL_STAGES[name]), logits(nano_run / name / "final", MODEL_STAGES[name]),
                               rtol=0, atol=0)
    assert (folder / "config.yaml").read_text() == (nano_run / "config.yaml").read_text()
    if name == "ppo":  # the value model travels with the policy
        torch.testing.assert_close(logits(folder / "value", "AutoModelForSequenceClassification"),
                                   logits(nano_run / "ppo" / "value", "AutoModelForSequenceClassification"), rtol=0, atol=0)


@pytest.mark.parametrize("name, metrics, dataset, split", [
    ("pretrain", {"bits_per_byte": "val_bpb"}, "corpus", "validation"),
    ("sft", {"exact_match": "exact_match", "contains_answer": "contains_answer"}, "qa_eval", "test"),
    ("reward", {"accuracy": "accuracy"}, "preferences", "test"),
    ("ppo", {"exact_match": "exact_match_after", "reward_score": "score_mean_after", "kl_divergence": "kl_after"},
     None, "test"),
])
def test_model_card_holds_the_evaluated_results(pushed, nano_run, name, metrics, dataset, split):
    from huggingface_hub import ModelCard

    _, _, cache = pushed
    card = ModelCard.load(download(f"me/nano-{name}", cache) / "README.md")
    recorded = json.loads((nano_run / name / "metrics.json").read_text())
    results = {r.metric_type: r for r in card.data.eval_results}
    assert {t: r.metric_value for t, r in results.items()} == {t: recorded[key] for t, key in metrics.items()}
    assert {r.dataset_split for r in results.values()} == {split}
    if dataset:
        assert {r.dataset_type for r in results.values()} == {f"me/nano-{dataset}"}
    assert card.data.license == "apache-2.0"
    assert card.data.base_model == {"pretrain": None, "sft": "me/nano-pretrain", "reward": "me/nano-sft",
                                    "ppo": "me/nano-sft"}[name]
    assert card.data.pipeline_tag == ("text-classification" if name == "reward" else "text-generation")
    assert card.data.library_name == "transformers" and name in card.data.tags
    assert all(d.startswith("me/nano-") and d.removeprefix("me/nano-") in DATASETS for d in card.data.datasets)
    usage = card.text.split("## How to use")[1].split("\n## ")[0]
    assert f'{MODEL_STAGES[name]}.from_pretrained("me/nano-{name}")' in usage
    assert "trust_remote_code=" not in usage


@pytest.mark.parametrize("name", DATASETS)
def test_dataset_downloads_and_loads_the_same_rows(pushed, nano_run, name):
    import datasets
    from huggingface_hub import DatasetCard

    _, _, cache = pushed
    folder = download(f"me/nano-{name}", cache, repo_type="dataset")
    remote = datasets.load_dataset(str(folder))
    local = datasets.load_from_disk(str(nano_run / "data" / name))
    assert sorted(remote) == sorted(local)
    for split in local:
        assert remote[split].to_list() == local[split].to_list()
    card = DatasetCard.load(folder / "README.md")
    assert card.text == DatasetCard.load(nano_run / "data" / name / "README.md").text
    assert card.data.configs[0]["data_files"] == [{"split": s, "path": f"data/{s}-*"} for s in local]


def test_eval_of_a_pushed_repo_id_gives_the_local_numbers(pushed, nano_run):
    """`pipeline eval me/nano-sft` downloads the repo and scores it exactly as the run's own folder."""
    suites = ["--suite", "bpb", "--suite", "exact_match", "--suite", "reward_score", "--data", str(nano_run), "--json"]
    remote = json.loads(run_cli(["eval", "me/nano-sft", *suites], expect=0)[0])
    local = json.loads(run_cli(["eval", str(nano_run / "sft" / "final"), *suites], expect=0)[0])
    assert remote["suites"] == local["suites"]
    assert remote["suites"]["exact_match"]["exact_match"] == json.loads((nano_run / "sft" / "metrics.json").read_text())[
        "exact_match"]  # and the sft stage's own number
    assert remote["model"] != local["model"]  # it was scored from the download, not the run folder


def test_the_token_is_never_written(pushed, nano_run):
    server, stdout, _ = pushed
    assert TOKEN not in stdout
    assert all(TOKEN.encode() not in content for key in server.repos for content in server.files(*key).values())
    assert all(TOKEN.encode() not in path.read_bytes() for path in nano_run.rglob("*") if path.is_file())


# ---------------------------------------------------------------------------------------------------------------
# Options


def test_private_and_revision_reach_the_hub(hub, nano_run, tmp_path):
    stdout, _ = run_cli(["push", str(nano_run), "--repo-id", "me/rev", "--stage", "reward", "--private",
                         "--revision", "dev"], expect=0)
    assert stdout.splitlines() == [f"pushed {hub.url}/me/rev-reward/tree/dev"]
    assert hub.created == [{"name": "rev-reward", "organization": "me", "visibility": "private", "type": "model"}]
    assert "model.safetensors" in hub.files("model", "me/rev-reward", "dev")
    assert "model.safetensors" not in hub.files("model", "me/rev-reward", "main")
    folder = download("me/rev-reward", tmp_path / "cache", revision="dev")
    torch.testing.assert_close(logits(folder, "AutoModelForSequenceClassification"),
                               logits(nano_run / "reward" / "final", "AutoModelForSequenceClassification"), rtol=0, atol=0)


def test_a_model_folder_pushes_to_the_repo_id_itself(hub, nano_run):
    stdout, _ = run_cli(["push", str(nano_run / "sft" / "final"), "--repo-id", "me/chat"], expect=0)
    assert stdout.splitlines() == [f"pushed {hub.url}/me/chat"]
    files = hub.files("model", "me/chat")
    assert files["model.safetensors"] == (nano_run / "sft" / "final" / "model.safetensors").read_bytes()
    assert b"model-index" in files["README.md"]  # a run's final/ folder still knows its stage's metrics


def test_a_token_in_the_recipe_is_redacted(hub, nano_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(nano_run, run, ignore=shutil.ignore_patterns("checkpoint-*", "packed"))
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("  hub_token: null", f"  hub_token: {TOKEN}", 1))
    run_cli(["push", str(run), "--repo-id", "me/red", "--stage", "pretrain"], expect=0)
    files = hub.files("model", "me/red-pretrain")
    assert TOKEN.encode() not in files["config.yaml"] and TOKEN.encode() not in files["README.md"]
    assert files["config.yaml"].count(b"hub_token: null") == config.read_text().count("hub_token:")


def test_push_to_hub_pushes_each_stage_as_it_finishes(hub, tmp_path):
    folder = make_run(tmp_path / "run")
    stage("data", folder, "run.push_to_hub=true", "run.hub_repo_prefix=me/x")
    built = sorted(p.parent.name for p in (folder / "data").glob("*/dataset_dict.json"))
    assert built and sorted(hub.repos) == [("dataset", f"me/x-{name}") for name in built]
    assert all("README.md" in hub.files("dataset", f"me/x-{name}") for name in built)


def test_push_to_hub_needs_a_prefix(tmp_path):
    folder = make_run(tmp_path / "run")
    _, stderr = run_cli(["stage", "data", "--run", str(folder), "run.push_to_hub=true"], expect=2)
    assert stderr.startswith("error: ") and "hub_repo_prefix" in stderr and stderr.count("\n") == 1
    assert not (folder / "data").exists()


# ---------------------------------------------------------------------------------------------------------------
# Failures: one line, exit 2, nothing local changed


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_token(monkeypatch, hub):  # nor a cached login: HF_TOKEN_PATH is in an empty HF_HOME (see `serve`)
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)


def unreachable(monkeypatch, hub):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")


def refusing(monkeypatch, hub):
    hub.refuse_commits = True


@pytest.mark.parametrize("setup, args, message", [
    (no_token, [], r"error: no Hugging Face token: log in with `hf auth login` or set HF_TOKEN .*"),
    (None, ["--repo-id", "not a repo"], r"error: --repo-id: 'not a repo' is not a valid Hub repo id .*"),
    (None, ["--repo-id", "me/" + "n" * 90], r"error: --repo-id me/n+: 'me/n+-\w+' is not a valid Hub repo id .*"),
    (unreachable, [], r"error: me/e-analogies: cannot reach the Hub at http://127\.0\.0\.1:\d+ .*"),
    (refusing, [], r"error: me/e-analogies: the Hub at http://127\.0\.0\.1:\d+ refused the upload \(HTTP 403\): "
                   r"You don't have the rights to create a commit in this repo"),
    (None, ["--stage", "regression"], r"error: .*/run: --stage regression: not a finished stage of this run .*"
                                      r"\(finished: data, pretrain, sft, reward, ppo\)"),
])
def test_failures_are_one_line_and_change_nothing(hub, nano_run, monkeypatch, capsys, setup, args, message):
    import re

    if setup:
        setup(monkeypatch, hub)
    before = tree_hash(nano_run)
    argv = ["push", str(nano_run), *(args if "--repo-id" in args else ["--repo-id", "me/e", *args])]
    capsys.readouterr()
    assert main(argv) == 2
    stdout, stderr = capsys.readouterr()
    assert stdout == "" and stderr.count("\n") == 1 and re.fullmatch(message, stderr.strip()), stderr
    assert TOKEN not in stderr
    assert tree_hash(nano_run) == before
    if setup is not refusing:
        assert not hub.repos


def test_a_folder_that_is_neither_a_run_nor_a_model(hub, tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    assert main(["push", str(tmp_path / "notes"), "--repo-id", "me/notes"]) == 2
    stderr = capsys.readouterr().err
    assert stderr == (f"error: {tmp_path / 'notes'}: not a run folder (config.yaml), a model folder (config.json or "
                      "adapter_config.json) nor a dataset folder (dataset_dict.json)\n")
    assert not hub.repos and (tmp_path / "notes" / "a.txt").read_text() == "hello"


def test_a_lora_adapter_names_its_pushed_base_model(hub, nano_run, tmp_path):
    from peft import AutoPeftModelForCausalLM, LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    shutil.copytree(nano_run, run, ignore=shutil.ignore_patterns("checkpoint-*", "packed", "final", "value"))
    shutil.copytree(nano_run / "pretrain" / "final", run / "pretrain" / "final")
    base = AutoModelForCausalLM.from_pretrained(run / "pretrain" / "final")
    adapter = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    adapter.save_pretrained(run / "sft" / "final")
    run_cli(["push", str(run), "--repo-id", "me/lora", "--stage", "pretrain"], expect=0)
    run_cli(["push", str(run), "--repo-id", "me/lora", "--stage", "sft"], expect=0)
    folder = download("me/lora-sft", tmp_path / "cache")
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "me/lora-pretrain"
    assert "AutoPeftModelForCausalLM.from_pretrained" in (folder / "README.md").read_text()
    loaded = AutoPeftModelForCausalLM.from_pretrained(folder, cache_dir=tmp_path / "cache").eval()
    tokens = torch.tensor([[5, 17, 42, 9]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens).logits, adapter.eval()(tokens).logits, rtol=0, atol=0)
