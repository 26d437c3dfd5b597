"""data_cards/ is fresh: regenerating every shipped recipe's dataset cards gives the committed files byte for byte."""

import shutil

import pytest

from pipeline.data import card_catalog

REFRESH = "python -m pipeline.data.card_catalog"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """A copy of the committed catalog, rewritten from the recipes: (folder, {recipe: absent sources})."""
    folder = tmp_path_factory.mktemp("cards") / "data_cards"
    if card_catalog.CARDS.is_dir():
        shutil.copytree(card_catalog.CARDS, folder)  # recipes whose real data is absent here keep their cards
    return folder, card_catalog.write_catalog(folder)


def test_committed_cards_match_a_fresh_build(regenerated):
    folder, _ = regenerated
    stale = card_catalog.stale_files(card_catalog.CARDS, folder)
    assert not stale, (f"stale in data_cards/: {', '.join(stale)} (missing, extra or changed); refresh with "
                       f"`{REFRESH}` and commit data_cards/")


def test_every_shipped_recipe_has_its_cards_indexed(regenerated):
    folder, _ = regenerated
    index = (folder / "README.md").read_text()
    for name, recipe in card_catalog.shipped_recipes().items():
        for dataset, _, _ in card_catalog.built_datasets(recipe):
            assert (folder / name / f"{dataset}.md").is_file()
            assert f"[{dataset}]({name}/{dataset}.md)" in index
    assert "/tmp" not in index and "data-cards-" not in index


def test_real_data_recipes_were_rebuilt_too(regenerated):
    _, skipped = regenerated
    if skipped:
        pytest.skip("not rebuilt here (their committed cards were not checked): "
                    + "; ".join(f"{name}: {', '.join(absent)} absent" for name, absent in skipped.items()))


def test_a_stale_card_is_named(tmp_path):
    committed = tmp_path / "committed"
    shutil.copytree(card_catalog.CARDS, committed)
    (committed / "tiny" / "corpus.md").write_text("old\n")
    (committed / "tiny" / "gone.md").write_text("a dataset no recipe builds\n")
    assert card_catalog.stale_files(committed, card_catalog.CARDS) == ["tiny/corpus.md", "tiny/gone.md"]


def test_a_recipe_whose_source_file_is_absent_keeps_its_cards(tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "gone.yaml").write_text("run: {stages: [data]}\ndata:\n  synthetic: false\n  sources:\n"
                                       "    - {name: text, format: text, path: ../nowhere/input.txt, mapper: text}\n")
    (recipes / "no_data.yaml").write_text("run: {stages: [tokenizer]}\n")
    out = tmp_path / "data_cards"
    (out / "gone").mkdir(parents=True)
    (out / "gone" / "text.md").write_text("kept\n")
    (out / "old_recipe").mkdir()
    assert card_catalog.write_catalog(out, recipes, root=tmp_path) == {"gone": ["../nowhere/input.txt"]}
    assert (out / "gone" / "text.md").read_text() == "kept\n"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "gone"]
    assert "[text](gone/text.md)" in (out / "README.md").read_text()
