"""`pipeline eval` reproduces every stage's own metrics on the same checkpoint and data, and rejects bad input
with one line."""

import json
import shutil

import pytest

from pipeline.cli import main
from pipeline.run_lock import RunLock


@pytest.fixture(scope="module")
def evaluated(nano_run, tmp_path_factory):
    """A copy of the nano run, evaluated whole with --checkpoints (writes eval/ into the copy)."""
    folder = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(nano_run, folder)
    assert main(["eval", str(folder), "--checkpoints", "--json"]) == 0
    return folder


def metrics(folder, stage):
    return json.loads((folder / stage / "metrics.json").read_text())


def result(folder, label):
    return json.loads((folder / "eval" / f"{label}.json").read_text())["suites"]


def test_run_folder_reproduces_each_stage_to_the_last_digit(evaluated):
    pretrain, sft, reward, ppo = (metrics(evaluated, s) for s in ("pretrain", "sft", "reward", "ppo"))
    assert result(evaluated, "pretrain")["bpb"]["bits_per_byte"] == pretrain["val_bpb"]
    assert result(evaluated, "pretrain")["bpb"]["nats_per_token"] == pretrain["eval_loss"]
    assert result(evaluated, "pretrain")["exact_match"]["exact_match"] == sft["exact_match_base"]
    assert result(evaluated, "sft")["exact_match"]["exact_match"] == sft["exact_match"]
    assert result(evaluated, "sft")["exact_match"]["floors"] == {"echo": sft["floor_echo"], "majority": sft["floor_majority"]}
    assert result(evaluated, "sft")["exact_match"]["rows"] == sft["qa_rows"]
    scored = result(evaluated, "reward")["reward_accuracy"]
    for key in ("accuracy", "margin_mean", "margin_std", "pairs", "pairs_skipped", "accuracy_by_kind"):
        assert scored[key] == reward[key], key
    assert scored["calibration"]["ece"] == reward["ece"]
    after = result(evaluated, "ppo")
    assert after["reward_score"]["score_mean"] == ppo["score_mean_after"]
    assert after["reward_score"]["kl_mean"] == ppo["kl_after"]          # KL to the sft policy, as the stage measured
    assert after["reward_score"]["prompts"] == ppo["prompts"]
    assert after["exact_match"]["exact_match"] == ppo["exact_match_after"]
    assert result(evaluated, "sft")["reward_score"]["score_mean"] == ppo["score_mean_before"]
    assert len(after["samples"]["samples"]) == 4 and all(s["prompt"] for s in after["samples"]["samples"])


def test_checkpoints_are_evaluated_too(evaluated):
    # sft ran 10 steps and saved at step 10: the checkpoint is the final model
    assert result(evaluated, "sft-10")["exact_match"] == result(evaluated, "sft")["exact_match"]
    assert result(evaluated, "sft-10")["bpb"] == result(evaluated, "sft")["bpb"]
    assert result(evaluated, "reward-10")["reward_accuracy"]["accuracy"] == metrics(evaluated, "reward")["accuracy"]


def test_one_model_as_json_on_stdout_and_bits_per_byte_of_a_text_file(nano_run, tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("Mara lives in Lisbon. Ünïcode counts in bytes.\n", encoding="utf-8")
    assert main(["eval", str(nano_run / "sft" / "final"), "--data", str(text), "--suite", "bpb", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # the whole of stdout is one JSON object
    assert out["kind"] == "causal_lm" and out["stage"] == "sft" and list(out["suites"]) == ["bpb"]
    assert out["suites"]["bpb"]["bytes"] == len(text.read_text(encoding="utf-8").encode("utf-8"))


def test_win_rate_against_itself_is_all_ties(nano_run, capsys):
    policy = str(nano_run / "ppo" / "final")
    assert main(["eval", policy, "--against", policy, "--suite", "win_rate", "--json"]) == 0
    win = json.loads(capsys.readouterr().out)["suites"]["win_rate"]
    assert (win["ties"], win["wins"], win["losses"]) == (win["prompts"], 0, 0) and win["decisive_win_rate"] is None


def test_win_rate_counts_add_up_against_another_policy(nano_run, capsys):
    assert main(["eval", str(nano_run / "ppo" / "final"), "--against", str(nano_run / "sft" / "final"),
                 "--suite", "win_rate", "--json"]) == 0
    win = json.loads(capsys.readouterr().out)["suites"]["win_rate"]
    assert win["wins"] + win["ties"] + win["losses"] == win["prompts"] == metrics(nano_run, "ppo")["prompts"]
    assert win["win_rate_ci95"][0] <= win["win_rate"] <= win["win_rate_ci95"][1]


@pytest.mark.parametrize("case, expected", [
    ("not_a_model", "not a model folder"),
    ("unknown_suite", "--suite nonsense: no such suite"),
    ("suite_for_other_kind", "--suite bpb: not a suite for a reward model"),
    ("suite_without_data", "--suite exact_match: needs the qa_eval questions"),
    ("data_not_a_run", "expected a run folder"),
    ("missing", "no such file or folder, and not a Hub repo id"),
])
def test_bad_input_is_one_line_with_exit_2(nano_run, tmp_path, capsys, case, expected):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = tmp_path / "t.txt"
    text.write_text("some text\n")
    sft, reward = str(nano_run / "sft" / "final"), str(nano_run / "reward" / "final")
    argv = {"not_a_model": [str(empty)], "unknown_suite": [sft, "--suite", "nonsense"],
            "suite_for_other_kind": [reward, "--suite", "bpb"],
            "suite_without_data": [sft, "--data", str(text), "--suite", "exact_match"],
            "data_not_a_run": [sft, "--data", str(empty)], "missing": [str(tmp_path / "nope")]}[case]
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and expected in err and "\n" not in err, err


def test_word_vectors_in_a_run_are_scored_on_its_analogies_as_gensim_scores_them(nano_run, tmp_path, capsys):
    import numpy as np
    from gensim.models import KeyedVectors

    from pipeline.embeddings.vectors import WordVectors, write_text

    questions = nano_run / "data" / "analogies" / "questions-words.txt"
    words = sorted({w for line in questions.read_text().splitlines() if not line.startswith(":") for w in line.split()})
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(len(words), 16)).astype(np.float32)
    index = {w: i for i, w in enumerate(words)}
    for line in questions.read_text().splitlines()[1:40]:  # plant a few: d = b - a + c exactly
        if not line.startswith(":"):
            a, b, c, d = (index[w] for w in line.split())
            matrix[d] = matrix[b] - matrix[a] + matrix[c]
    folder = tmp_path / "run"
    shutil.copytree(nano_run, folder)
    (folder / "embeddings" / "cbow").mkdir(parents=True)
    path = write_text(folder / "embeddings" / "cbow" / "vectors.txt", WordVectors(words, matrix))
    similarity = tmp_path / "pairs.tsv"  # word pairs of the world, in wordsim353's format, with made-up scores
    similarity.write_text("".join(f"{a}\t{b}\t{score}\n" for a, b, score in
                                  zip(words[:12:2], words[1:12:2], (1.0, 7.5, 3.0, 3.0, 9.0, 5.5))))
    assert main(["eval", str(path), "--similarity", str(similarity), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kind"] == "word_vectors" and result["data"] == str(folder / "data" / "analogies" / "questions-words.txt")
    peer = KeyedVectors.load_word2vec_format(str(path))
    accuracy, sections = peer.evaluate_word_analogies(str(questions), restrict_vocab=30000)
    analogy = result["suites"]["analogy"]
    assert analogy["accuracy"] == pytest.approx(accuracy, abs=1e-12) and analogy["accuracy"] > 0
    assert analogy["correct"] == len(sections[-1]["correct"])
    pearson, spearman, oov = peer.evaluate_word_pairs(str(similarity))
    assert result["suites"]["similarity"]["pairs.tsv"]["spearman"] == pytest.approx(spearman.statistic, abs=1e-9)
    assert result["suites"]["similarity"]["pairs.tsv"]["pairs"] == 6 and oov == 0
    assert set(result["suites"]["neighbours"]) == set(words[:4])


def test_a_vectors_file_with_a_wrong_header_is_one_line(tmp_path, capsys):
    bad = tmp_path / "vectors.txt"
    bad.write_text("three words\nking 0.1 0.2\n")
    assert main(["eval", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}") and "\n" not in err, err


def test_a_run_folder_that_another_command_writes_is_refused_before_any_work(nano_run, tmp_path, capsys):
    """`pipeline eval` on a run folder writes eval/, so it takes the run's lock: while `pipeline run` (or another
    eval) holds it, the models it would read may be rewritten under it."""
    folder = tmp_path / "run"
    shutil.copytree(nano_run, folder, ignore=shutil.ignore_patterns("eval", ".lock"))
    with RunLock(folder / ".lock", command="pipeline run recipes/nano.yaml"):
        assert main(["eval", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "in use by pid" in err and "pipeline run recipes/nano.yaml" in err and str(folder / ".lock") in err, err
    assert not (folder / "eval").exists()
    assert main(["eval", str(folder), "--json"]) == 0  # released: it runs, and releases in turn
    assert (folder / "eval" / "sft.json").is_file()
    with RunLock(folder / ".lock"):  # free again once the eval is done (this would raise otherwise)
        pass
