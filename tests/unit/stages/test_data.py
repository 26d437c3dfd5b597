"""The data stage: every dataset built, reloadable, carded, byte-identical per seed; real sources; bad input."""

import filecmp
import json
from pathlib import Path

import datasets
import pytest
from huggingface_hub import DatasetCard

from pipeline.cli import main
from pipeline.data import cards
from pipeline.stages import data as data_stage

ROOT = Path(__file__).resolve().parents[3]
SMALL = ["data.world.n_people=20", "data.world.corpus_bytes=30000"]
BOOKKEEPING = {"_SUCCESS", "metrics.json"}


def build(folder: Path, *overrides) -> int:
    return main(["run", str(ROOT / "recipes" / "tiny.yaml"), f"run.output_dir={folder}", "run.stages=[data]",
                 *SMALL, *overrides])


def files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*") if p.is_file() and p.name not in BOOKKEEPING)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    assert build(folder) == 0
    return folder / "data"


def test_builds_every_dataset_and_reloads(built):
    manifest = json.loads((built / "manifest.json").read_text())
    assert set(manifest) == set(data_stage.FORMATS)
    for name, entry in manifest.items():
        ds = datasets.load_from_disk(str(built / name))
        assert {k: len(v) for k, v in ds.items()} == entry["splits"]
        assert all(len(split) > 0 for split in ds.values()), name
    dialogue = datasets.load_from_disk(str(built / "dialogue"))
    assert dialogue["train"][0]["messages"][-1]["role"] == "assistant"
    questions = (built / "analogies" / "questions-words.txt").read_text().splitlines()
    assert questions[0].startswith(": ") and len(questions[1].split()) == 4


def test_corpus_overlap_in_manifest_card_and_metrics(built):
    from pipeline.data.overlap import split_overlap

    corpus = datasets.load_from_disk(str(built / "corpus"))
    expected = split_overlap(corpus["train"]["text"], corpus["validation"]["text"])
    held_out = json.loads((built / "manifest.json").read_text())["corpus"]["held_out"]
    assert held_out == expected and held_out["validation_documents_in_train"] == 0
    assert f"({expected['sentence_share']:.1%}) also occur verbatim in train" in (built / "corpus" / "README.md").read_text()
    metrics = json.loads((built / "metrics.json").read_text())
    assert metrics["corpus_validation_sentences_in_train"] == expected["sentence_share"]
    assert "held_out" not in json.loads((built / "manifest.json").read_text())["dialogue"]


def test_same_seed_is_byte_identical_other_seed_differs(built, tmp_path):
    assert build(tmp_path / "again") == 0
    again = tmp_path / "again" / "data"
    assert files(again) == files(built)
    for rel in files(built):
        assert filecmp.cmp(built / rel, again / rel, shallow=False), rel
    assert build(tmp_path / "other", "run.seed=1") == 0
    corpus = "corpus/train/data-00000-of-00001.arrow"
    assert not filecmp.cmp(built / corpus, tmp_path / "other" / "data" / corpus, shallow=False)


def test_every_card_parses_and_matches_its_dataset(built):
    for name in data_stage.FORMATS:
        card = DatasetCard.load(built / name / "README.md")
        ds = datasets.load_from_disk(str(built / name))
        first = next(iter(ds.values()))
        assert card.data.dataset_info["features"] == first.features._to_yaml_list(), name
        assert {s["name"]: s["num_examples"] for s in card.data.dataset_info["splits"]} == {k: len(v) for k, v in ds.items()}
        assert card.data.license == "apache-2.0" and card.data.size_categories
        assert "{{" not in card.text and "## Columns" in card.text


def test_every_buildable_dataset_has_a_card_template():
    assert set(cards.template_names()) == set(data_stage.FORMATS) | {"source"}


def test_real_data_recipe(shared_data, tmp_path):
    out = tmp_path / "real"
    assert main(["run", str(ROOT / "recipes" / "real_data.yaml"), f"run.output_dir={out}"]) == 0
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["hh_harmless"]["report"]["read"] == 2312
    assert manifest["hh_harmless"]["report"]["dropped"]["bad_role_order"] > 0  # counted, not silently dropped
    assert sum(manifest["oasst_pairs"]["splits"].values()) == 754
    shakespeare = datasets.load_from_disk(str(out / "data" / "shakespeare"))
    text = (shared_data / "tinyshakespeare" / "input.txt").read_text()
    assert text.rstrip().endswith(shakespeare["validation"][-1]["text"].rstrip())  # held out: the end of the plays
    card = DatasetCard.load(out / "data" / "hh_harmless" / "README.md")
    assert card.data.license == "mit" and "`bad_role_order`" in card.text


@pytest.mark.parametrize("overrides, message", [
    (["data.sources=[{name: mine, format: text, path: /nonexistent/x.jsonl}]"],
     "data.sources[mine].path: no such file"),
    (["data.sources=[{name: mine, format: tables, path: x.csv}]"], "data.sources[mine].format: unknown format 'tables'"),
    (["data.sources=[{name: corpus, format: text, path: x.txt}]"], "data.sources: dataset name 'corpus' is built twice"),
    (["data.sources=[{name: mine, format: text}]"], "data.sources[0]"),
    (["data.synthetic=false"], "data.sources: empty, and synthetic is false: nothing to build"),
])
def test_bad_sources_fail_with_one_line_and_no_marker(tmp_path, capsys, overrides, message):
    assert build(tmp_path / "bad", *overrides) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "bad" / "data" / "_SUCCESS").exists()


def test_column_mapping_naming_a_missing_column(tmp_path, capsys):
    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is 2+2?,4\n")
    source = f"data.sources=[{{name: qa, format: messages, path: {path}, columns: {{user: q, assistant: answer}}}}]"
    assert build(tmp_path / "bad", "data.synthetic=false", source) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == "error: data.sources[qa].columns.user: column 'q' not in file (columns: question, answer)"
