"""`pipeline report RUN`: report.md and its plots for a finished nano run (a copy: the report writes into it)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
NUMBER = re.compile(r"[-+]?\d+\.\d+|[-+]?\d+")


def _copy(nano_run: Path, where: Path) -> Path:
    return Path(shutil.copytree(nano_run, where / "run"))


def _report(folder: Path, capsys) -> str:
    assert main(["report", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == str(folder / "report.md")
    return (folder / "report.md").read_text()


def _metrics(folder: Path, stage: str) -> dict:
    return json.loads((folder / stage / "metrics.json").read_text())


def _ladder_row(text: str, model: str) -> list[str]:
    """The cells of the ladder table's row for `model` (base (pretrain), SFT, PPO)."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {model} |")]
    assert len(rows) == 1, f"expected one ladder row for {model}, found {len(rows)}"
    return [cell.strip() for cell in rows[0].strip("|").split(" | ")]


def _numbers(cell: str) -> list[float]:
    return [float(n) for n in NUMBER.findall(cell.replace("95%", ""))]


@pytest.fixture(scope="module")
def reported(nano_run, tmp_path_factory) -> tuple[Path, str]:
    folder = _copy(nano_run, tmp_path_factory.mktemp("report"))
    from pipeline.report import write_report

    return folder, write_report(folder).read_text()


def _check_links_and_plots(folder: Path, text: str) -> list[Path]:
    """Every link in report.md names an existing file; every PNG is a real, non-blank image. Returns the PNGs."""
    import matplotlib.image

    links = LINK.findall(text)
    assert links
    missing = [link for link in links if not (folder / link).is_file()]
    assert not missing, f"report.md links files that do not exist: {missing}"
    pngs = sorted((folder / "report").glob("*.png"))
    for png in pngs:
        assert png.read_bytes()[:8] == PNG_SIGNATURE, png
        pixels = matplotlib.image.imread(png)
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100, png
        assert np.ptp(pixels.reshape(-1, pixels.shape[-1]), axis=0).max() > 0.1, f"{png} is one colour"
        assert f"report/{png.name}" in links, f"{png.name} drawn but not linked"
    return pngs


def test_every_plot_is_a_valid_png_and_every_link_exists(reported):
    folder, text = reported
    pngs = {p.name for p in _check_links_and_plots(folder, text)}
    assert {"pretrain_loss.png", "sft_loss.png", "sft_exact_match_by_category.png", "reward_loss.png",
            "reward_calibration.png", "ppo_training.png"} <= pngs
    assert not list((folder / "report").glob(".*tmp*")), "temporary files left behind"
    for section in ("## Stages", "## Ladder", "## Pretrain", "## SFT", "## Reward model", "## PPO"):
        assert section in text


def test_stage_table_has_every_finished_stage_with_wall_time(reported):
    folder, text = reported
    for stage in ("data", "tokenizer", "pretrain", "sft", "reward", "ppo"):
        cells = [c.strip() for c in next(line for line in text.splitlines()
                                         if line.startswith(f"| {stage} |")).strip("|").split(" | ")]
        assert float(cells[1]) == pytest.approx(_metrics(folder, stage)["seconds"], abs=0.051)
    assert "| regression |" not in text  # not run in the nano run


def test_ladder_numbers_are_the_metrics(reported):
    folder, text = reported
    sft, ppo = _metrics(folder, "sft"), _metrics(folder, "ppo")
    base_row, sft_row, ppo_row = (_ladder_row(text, m) for m in ("base (pretrain)", "SFT", "PPO"))
    close = dict(abs=5.1e-4)
    assert _numbers(base_row[1]) == [pytest.approx(sft["exact_match_base"], **close)]
    assert _numbers(base_row[2]) == [pytest.approx(sft["contains_answer_base"], **close)]
    assert base_row[3] == "—"  # the base model's RM score is not measured
    assert _numbers(sft_row[1]) == [pytest.approx(sft["exact_match"], **close)]
    assert _numbers(sft_row[3]) == [pytest.approx(ppo["score_mean_before"], **close)]
    low, high = ppo["exact_match_change_ci95"]
    assert _numbers(ppo_row[1]) == [pytest.approx(v, **close) for v in
                                    (ppo["exact_match_after"], ppo["exact_match_change"], low, high)]
    assert _numbers(ppo_row[2]) == [pytest.approx(ppo["contains_answer_after"], **close)]
    assert _numbers(ppo_row[3])[:2] == [pytest.approx(ppo["score_mean_after"], **close),
                                        pytest.approx(ppo["score_gain"], **close)]
    assert _numbers(ppo_row[4]) == [pytest.approx(ppo["kl_after"], **close)]
    assert ppo_row[5] == {True: "YES", False: "no"}[ppo["reward_hacking"]]
    majority = _ladder_row(text, "floor: majority answer per category")
    assert _numbers(majority[1]) == [pytest.approx(sft["floor_majority"], **close)]
    assert f"share of the {sft['qa_rows']} held-out `qa_eval` questions" in text


def test_ladder_hand_checked_values(nano_run, tmp_path, capsys):
    folder = _copy(nano_run, tmp_path)
    ppo = _metrics(folder, "ppo")
    ppo.update(exact_match_after=0.25, exact_match_change=-0.125, exact_match_change_ci95=[-0.2, -0.05],
               score_mean_after=1.5, score_gain=0.75, score_gain_ci95=[0.5, 1.0], kl_after=2.0, reward_hacking=True)
    (folder / "ppo" / "metrics.json").write_text(json.dumps(ppo))
    row = _ladder_row(_report(folder, capsys), "PPO")
    assert row[1] == "0.250 (change -0.125, 95% CI [-0.200, -0.050])"
    assert row[3] == "1.500 (gain +0.750, 95% CI [+0.500, +1.000])"
    assert row[4:] == ["2.000", "YES"]


def test_reward_table_with_the_likelihood_and_the_floor(nano_run, tmp_path, capsys):
    folder = _copy(nano_run, tmp_path)
    reward = _metrics(folder, "reward")
    kinds = sorted(reward["accuracy_by_kind"])
    reward.update(likelihood_weight=0.3, accuracy_with_likelihood=0.99, accuracy_likelihood_alone=0.98,
                  accuracy_by_kind_with_likelihood={k: 0.95 for k in kinds},
                  accuracy_by_kind_likelihood_alone={k: 0.5 for k in kinds},
                  floor_shorter_reply=0.775, floor_shorter_reply_by_kind={k: 0.25 for k in kinds})
    (folder / "reward" / "metrics.json").write_text(json.dumps(reward))
    ppo = _metrics(folder, "ppo")
    ppo.update(objective_gain=0.892, objective_gain_ci95=[0.609, 1.175])
    (folder / "ppo" / "metrics.json").write_text(json.dumps(ppo))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["ppo"]["likelihood_weight"] = 0.3
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    text = _report(folder, capsys)
    assert "| rejected reply kind | accuracy | + 0.300 × log p_SFT | log p_SFT alone | floor: shorter reply |" in text
    assert f"| {kinds[0]} | {reward['accuracy_by_kind'][kinds[0]]:.3f} | 0.950 | 0.500 | 0.250 |" in text
    assert f"| all | {reward['accuracy']:.3f} | 0.990 | 0.980 | 0.775 |" in text
    assert "that score's gain +0.892 (95% CI [+0.609, +1.175])" in text


def test_run_without_ppo_renders_without_the_ppo_parts(nano_run, tmp_path, capsys):
    folder = _copy(nano_run, tmp_path)
    _report(folder, capsys)
    assert (folder / "report" / "ppo_training.png").is_file()
    shutil.rmtree(folder / "ppo")
    text = _report(folder, capsys)
    pngs = {p.name for p in _check_links_and_plots(folder, text)}
    assert "ppo_training.png" not in pngs  # the earlier report's plot is gone too
    assert "## PPO" not in text and "| PPO |" not in text and "| ppo |" not in text
    assert _numbers(_ladder_row(text, "SFT")[1]) == [pytest.approx(_metrics(folder, "sft")["exact_match"], abs=5.1e-4)]
    assert _ladder_row(text, "SFT")[3] == "—"


def test_embeddings_table_and_stale_note(nano_run, tmp_path, capsys):
    folder = _copy(nano_run, tmp_path)
    for method, accuracy in (("cbow", 0.36), ("glove", 0.295)):
        (folder / "embeddings" / method).mkdir(parents=True)
        (folder / "embeddings" / method / "metrics.json").write_text(
            json.dumps({"analogy_accuracy": accuracy, "vocab": 1200, "note": "text is skipped", "ok": True}))
    marker = json.loads((folder / "sft" / "_SUCCESS").read_text())
    (folder / "sft" / "_SUCCESS").write_text(json.dumps({**marker, "id": "rerun"}))
    text = _report(folder, capsys)
    assert "| metric | cbow | glove |" in text
    assert "| analogy_accuracy | 0.36 | 0.295 |" in text and "| vocab | 1200 | 1200 |" in text
    assert not [line for line in text.splitlines() if line.startswith(("| note |", "| ok |"))]  # not numeric
    assert "stale: sft changed since" in next(line for line in text.splitlines() if line.startswith("| ppo |"))


@pytest.mark.parametrize("case", ["no_config", "no_finished_stage", "missing"])
def test_bad_folders_are_one_line_errors(case, nano_run, tmp_path, capsys):
    folder = tmp_path / "notarun"
    if case != "missing":
        folder.mkdir()
        (folder / "sft").mkdir()
        (folder / "sft" / "metrics.json").write_text("{}")
    if case == "no_finished_stage":
        shutil.copy(nano_run / "config.yaml", folder / "config.yaml")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {folder}")
    assert {"no_config": "no config.yaml", "no_finished_stage": "no finished stage", "missing": "no such folder"}[case] in err
    assert not (folder / "report.md").exists()


def test_a_run_folder_that_another_command_writes_is_refused(nano_run, tmp_path, capsys):
    """`pipeline report` writes report.md and report/, so it takes the run's lock like `pipeline eval`."""
    from pipeline.run_lock import RunLock

    folder = Path(shutil.copytree(nano_run, tmp_path / "run", ignore=shutil.ignore_patterns("report*", ".lock")))
    with RunLock(folder / ".lock", command="pipeline run recipes/nano.yaml"):
        assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert "in use by pid" in err and "pipeline run recipes/nano.yaml" in err, err
    assert not (folder / "report.md").exists()
    assert main(["report", str(folder)]) == 0 and (folder / "report.md").is_file()  # released: it runs
    assert not (folder / ".lock").exists()  # and releases in turn


def test_pipeline_run_writes_the_report(nano_run, tmp_path, capsys, monkeypatch):
    import pipeline.cli

    folder = _copy(nano_run, tmp_path)
    monkeypatch.setattr(pipeline.cli, "run_stages", lambda *args, **kwargs: {})  # the stages are already done
    assert main(["run", str(folder / "config.yaml"), f"run.output_dir={folder}", "run.stages=[data]"]) == 0
    assert f"report: {folder / 'report.md'}" in capsys.readouterr().out
    assert (folder / "report" / "ppo_training.png").is_file()


def test_base_rm_score_comes_from_pipeline_eval_when_measured(nano_run, tmp_path, capsys):
    folder = _copy(nano_run, tmp_path)
    assert "—" == _ladder_row(_report(folder, capsys), "base (pretrain)")[3]
    assert main(["eval", str(folder / "pretrain" / "final"), "--suite", "reward_score", "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)["suites"]["reward_score"]["score_mean"]
    (folder / "eval").mkdir()
    (folder / "eval" / "pretrain.json").write_text(json.dumps({"suites": {"reward_score": {"score_mean": measured}}}))
    text = _report(folder, capsys)
    assert _numbers(_ladder_row(text, "base (pretrain)")[3]) == [pytest.approx(measured, abs=5.1e-4)]
    assert "the base model's from `pipeline eval`" in text
