"""`data_cards/`: the rendered dataset card of every dataset the shipped recipes build, as browsable documentation.

    python -m pipeline.data.card_catalog            # rewrite data_cards/ from recipes/*.yaml
    python -m pipeline.data.card_catalog --check    # exit 1 and name every stale file (what the unit test runs)

For each recipe in `recipes/` that runs the data stage, the data stage's own `build_all` builds its datasets in a
temporary folder, with the recipe's `data` section and seed and from the project root (recipe paths such as
`../shared/data/...` are relative to it), and every dataset's card (`<dataset>/README.md`, the file the data stage
writes and `pipeline push` uploads) is copied to `data_cards/<recipe>/<dataset>.md`, unchanged. So a card here is
exactly what a run of that recipe writes; the templates stay in `pipeline/data/cards/`. All the shipped recipes
build their data in seconds (the real files are a few MB), so nothing is faked or sampled.
`data_cards/README.md` indexes the cards: one line per dataset a recipe builds (format, rows per split, origin),
read from the recipe and the cards.

Real-data recipes read files under `../shared/data/` (its README.md), which a machine may lack. A recipe whose
source files are absent (or that names a Hub dataset: no network is assumed) is not rebuilt: its cards in
`data_cards/` are kept as they are, and the command says so on stderr; `--check` reports it as unchecked, not as
stale. The cards are deterministic (seeded data, relative paths, no dates), which is what lets a byte-for-byte
comparison find a stale one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

from pipeline.artifacts import atomic_write
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[2]      # the project root: recipes/ and data_cards/ live there
RECIPES, CARDS = ROOT / "recipes", ROOT / "data_cards"
INDEX = "README.md"
COMMAND = "python -m pipeline.data.card_catalog"


def shipped_recipes(recipes: Path = RECIPES) -> dict[str, object]:
    """{recipe file stem: resolved Recipe} of every recipe that runs the data stage, by name."""
    from pipeline.config import load_recipe

    found = {path.stem: load_recipe(path) for path in sorted(recipes.glob("*.yaml"))}
    return {name: recipe for name, recipe in found.items() if "data" in recipe.stages}


def built_datasets(recipe) -> list[tuple[str, str, str]]:
    """[(dataset name, format, origin)] of what the recipe's data stage builds, in build order."""
    from pipeline.stages.data import FORMATS

    data = recipe.sections["data"]
    world = [(name, fmt, f"synthetic world (`data.world`, seed {recipe.run.seed})") for name, fmt in FORMATS.items()]
    sources = [(src.name, src.format, f"`{src.path}` (mapper `{src.mapper}`)") for src in data.sources]
    return (world if data.synthetic else []) + sources


def unavailable_sources(recipe, root: Path = ROOT) -> list[str]:
    """The recipe's sources that cannot be read on this machine: absent files, and Hub datasets."""
    from pipeline.data.sources import resolve_files

    absent = []
    with working_directory(root):
        for src in recipe.sections["data"].sources:
            try:
                kind, _ = resolve_files(src, f"data.sources[{src.name}]")
            except PipelineError:
                absent.append(src.path)
                continue
            if kind == "hub":
                absent.append(f"{src.path} (a Hub dataset)")
    return absent


@contextlib.contextmanager
def working_directory(path: Path):
    """Run the block from `path` (contextlib.chdir is Python >= 3.11)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def recipe_cards(recipe, root: Path = ROOT) -> dict[str, str]:
    """{"<dataset>.md": card text} as the data stage writes them for `recipe`, built in a temporary folder."""
    from pipeline.stages.data import build_all

    with tempfile.TemporaryDirectory(prefix="data-cards-") as tmp, working_directory(root):
        out = Path(tmp)
        build_all(recipe.sections["data"], out, recipe.run.seed)
        manifest = json.loads((out / "manifest.json").read_text())
        return {f"{name}.md": (out / name / "README.md").read_text(encoding="utf-8") for name in manifest}


def write_catalog(out: Path = CARDS, recipes: Path = RECIPES, root: Path = ROOT) -> dict[str, list[str]]:
    """Rewrite `out` (cards of every shipped recipe, and the index); returns {recipe: absent sources} of the
    recipes that were not rebuilt (their cards in `out` are kept as they were)."""
    shipped = shipped_recipes(recipes)
    skipped = {}
    out.mkdir(parents=True, exist_ok=True)
    for entry in out.iterdir():  # anything that is neither the index nor a shipped recipe's folder is stale
        if entry.name != INDEX and entry.name not in shipped:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for name, recipe in shipped.items():
        absent = unavailable_sources(recipe, root)
        if absent:
            skipped[name] = absent
            print(f"{name}: not rebuilt, its cards are kept as they were: {', '.join(absent)} not found",
                  file=sys.stderr)
            continue
        write_recipe_cards(out / name, recipe_cards(recipe, root))
    atomic_write(out / INDEX, render_index(shipped, out, skipped))
    return skipped


def write_recipe_cards(folder: Path, cards: dict[str, str]) -> None:
    """`folder` holds exactly `cards`; a file whose text is unchanged is not rewritten."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in set(p.name for p in folder.iterdir()) - set(cards):
        path = folder / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for file_name, text in cards.items():
        path = folder / file_name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            atomic_write(path, text)


def render_index(shipped: dict[str, object], out: Path, skipped: dict[str, list[str]]) -> str:
    """data_cards/README.md: one table row per dataset a recipe builds, read from the recipe and its card."""
    lines = ["# Dataset cards of the shipped recipes", "",
             "The card of every dataset that a recipe in `recipes/` builds, exactly as the data stage writes it",
             "(`<run>/data/<dataset>/README.md`; templates in `pipeline/data/cards/`). Generated: do not edit by hand.",
             f"Refresh with `{COMMAND}`; `tests/unit/data/test_data_cards.py` fails when a card is stale.",
             "Recipes that read `../shared/data/` are rebuilt only where those files exist; elsewhere their cards",
             "are kept as committed.", "",
             "| recipe | dataset | format | rows per split | built from |",
             "| --- | --- | --- | --- | --- |"]
    for name, recipe in shipped.items():
        for dataset, fmt, origin in built_datasets(recipe):
            card = out / name / f"{dataset}.md"
            link = f"[{dataset}]({name}/{dataset}.md)" if card.is_file() else f"{dataset} (no card yet)"
            lines.append(f"| [{name}](../recipes/{name}.yaml) | {link} | {fmt} | {split_rows(card)} | {origin} |")
    return "\n".join(lines) + "\n"


def split_rows(card: Path) -> str:
    """"train 700, validation 100, test 200": rows per split, from the card's `dataset_info` header."""
    parts = card.read_text(encoding="utf-8").split("---\n", 2) if card.is_file() else []
    header = yaml.safe_load(parts[1]) if len(parts) == 3 and not parts[0] else None
    splits = ((header if isinstance(header, dict) else {}).get("dataset_info") or {}).get("splits") or []
    return ", ".join(f"{split['name']} {split['num_examples']:,}" for split in splits) or "?"


def stale_files(committed: Path, regenerated: Path) -> list[str]:
    """Paths (relative) that differ between two catalog folders, are missing from one, or are extra in it."""
    def tree(folder: Path) -> dict[str, bytes]:
        return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} \
            if folder.is_dir() else {}

    old, new = tree(committed), tree(regenerated)
    return sorted(path for path in old.keys() | new.keys() if old.get(path) != new.get(path))


def check_catalog(committed: Path = CARDS, recipes: Path = RECIPES, root: Path = ROOT) -> tuple[list[str], dict]:
    """(stale files of `committed`, {recipe: absent sources} that could not be checked): regenerates a copy."""
    with tempfile.TemporaryDirectory(prefix="data-cards-check-") as tmp:
        fresh = Path(tmp) / "data_cards"
        if committed.is_dir():
            shutil.copytree(committed, fresh)  # the cards of recipes that cannot be rebuilt here stay as they are
        skipped = write_catalog(fresh, recipes, root)
        return stale_files(committed, fresh), skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare data_cards/ with fresh cards; write nothing")
    parser.add_argument("--out", type=Path, default=CARDS, help=f"catalog folder (default: {CARDS})")
    args = parser.parse_args(argv)
    try:
        if not args.check:
            skipped = write_catalog(args.out)
            print(f"wrote {args.out} ({len(shipped_recipes()) - len(skipped)} recipes rebuilt, {len(skipped)} kept)")
            return 0
        stale, _ = check_catalog(args.out)
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path in stale:
        print(f"stale: {args.out / path}", file=sys.stderr)
    if stale:
        print(f"refresh with: {COMMAND}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
