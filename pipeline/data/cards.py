"""Hugging Face dataset cards: one template per dataset the data stage can build, rendered with real numbers.

Templates live in `pipeline/data/cards/<name>.md` (shipped with the package, so an installed pipeline can card
its datasets): a YAML header (license, language, task_categories, ...) and a Jinja body. `render` fills the
body and adds what only the built dataset knows: `dataset_info` (features, split sizes), `size_categories`
and `configs` pointing at the saved Arrow files, so `huggingface_hub.DatasetCard` parses the result and the
Hub's viewer can read the folder once pushed.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import jinja2
import yaml
from datasets.info import DatasetInfo, DatasetInfosDict
from huggingface_hub import DatasetCard

TEMPLATES = Path(__file__).parent / "cards"
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


def template_names() -> list[str]:
    return sorted(p.stem for p in TEMPLATES.glob("*.md"))


def size_category(rows: int) -> str:
    return next((label for bound, label in SIZE_CATEGORIES if rows < bound), "n>1B")


def render(template: str, ds: datasets.DatasetDict, settings: dict, **variables) -> str:
    """Card text for `ds` from template `template`; `settings` is the recipe entry that rebuilds it."""
    card = DatasetCard((TEMPLATES / f"{template}.md").read_text())
    body = jinja2.Template(card.text, undefined=jinja2.StrictUndefined, trim_blocks=True).render(
        splits_table=_splits_table(ds),
        held_out_section=_held_out_section(variables.pop("overlap", None)),
        features_list=_features_list(next(iter(ds.values())).features),
        settings=yaml.safe_dump(settings, sort_keys=False).strip(),
        **variables,
    )
    data = card.data
    if variables.get("license"):
        data.license = variables["license"]
    data.size_categories = [size_category(sum(len(split) for split in ds.values()))]
    data.configs = [{"config_name": "default",
                     "data_files": [{"split": name, "path": f"{name}/data-*.arrow"} for name in ds]}]
    first = next(iter(ds.values()))
    splits = datasets.SplitDict()
    for name, split in ds.items():
        splits.add(datasets.SplitInfo(name=name, num_examples=len(split), num_bytes=_nbytes(split)))
    DatasetInfosDict({"default": DatasetInfo(features=first.features, splits=splits)}).to_dataset_card_data(data)
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def _splits_table(ds: datasets.DatasetDict) -> str:
    rows = "\n".join(f"| {name} | {len(split):,} | {_nbytes(split) / 1e6:.2f} MB |" for name, split in ds.items())
    return "| split | rows | size in memory |\n| --- | ---: | ---: |\n" + rows


def _held_out_section(overlap: dict | None) -> str:
    """A paragraph on how much of the validation split also occurs in train (`pipeline.data.overlap`)."""
    if overlap is None:
        return ""
    return ("## How held out is validation\n\n"
            f"{overlap['validation_sentences_in_train']:,} of the {overlap['validation_sentences']:,} validation sentences "
            f"({overlap['sentence_share']:.1%}) also occur verbatim in train, and {overlap['validation_documents_in_train']:,} "
            f"of the {overlap['validation_documents']:,} validation documents ({overlap['document_share']:.1%}). A validation "
            "loss measures generalisation only on the sentences that are new (definitions: `pipeline.data.overlap`).\n")


def _nbytes(split: datasets.Dataset) -> int:
    """Arrow bytes of the rows in this split (a `select`ed split shares its table with the others)."""
    table = split.data
    return table.nbytes * len(split) // table.num_rows if table.num_rows else 0


def _features_list(features: datasets.Features) -> str:
    return "\n".join(f"- `{name}`: {_describe(feature)}" for name, feature in features.items())


def _describe(feature) -> str:
    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        return f"list of {_describe(feature.feature)}"
    if isinstance(feature, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in feature.items()) + "}"
    return type(feature).__name__
