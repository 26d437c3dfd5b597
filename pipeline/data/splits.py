"""Held-out splits of a real source by group: rows that share a prompt, or come from one raw record, stay together.

A row's *prompt key* is the first user message's content (surrounding whitespace stripped): of `messages` for
format messages, of `prompt` for prompts and preferences (of `chosen` when a preference row has no user turn in
its prompt). Text rows have no key. `group_rows` joins rows that share a key or a raw-record index (an OASST tree
gives many rows, a Self-Instruct seed task one per instance) into groups, numbered by first appearance;
`split_rows` then assigns whole groups to test, validation and train.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import Iterable, Iterator, Sequence

import numpy as np

_BATCH = 1000
_KEY_COLUMNS = {"messages": ("messages",), "prompts": ("prompt",), "preferences": ("prompt", "chosen")}


def first_user_message(msgs) -> str | None:
    """Content of the first user turn of a message list (None when there is none)."""
    return next((m["content"] for m in msgs or () if m["role"] == "user"), None)


def prompt_text(fmt: str, row: dict) -> str | None:
    """The prompt a row is grouped by (see the module docstring); None for text rows."""
    if fmt == "messages":
        return first_user_message(row["messages"])
    if fmt == "prompts":
        return first_user_message(row["prompt"])
    if fmt == "preferences":
        return first_user_message(row.get("prompt")) or first_user_message(row.get("chosen"))
    return None


def prompt_keys(ds, fmt: str) -> Iterator[bytes | None]:
    """A 16-byte hash of each row's prompt text, read from the dataset in batches (None for text rows)."""
    if fmt not in _KEY_COLUMNS:
        yield from (None for _ in range(len(ds)))
        return
    cols = _KEY_COLUMNS[fmt]
    for batch in ds.select_columns(list(cols)).iter(batch_size=_BATCH):
        for values in zip(*(batch[c] for c in cols)):
            text = prompt_text(fmt, dict(zip(cols, values)))
            yield None if text is None else hashlib.blake2b(text.strip().encode(), digest_size=16).digest()


def group_rows(keys: Iterable[bytes | None], origins: Sequence[int] | None = None) -> np.ndarray:
    """Group number of each row (0, 1, ... in order of first appearance).

    Rows with the same key join one group, and so do rows with the same origin (raw-record index); `origins`
    is non-decreasing, as the rows of one record are adjacent. A row with neither in common is a group alone."""
    parent = array("q")  # union-find forest, 8 bytes a row

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)  # the root is the group's first row

    first_with_key: dict[bytes, int] = {}
    for i, key in enumerate(keys):
        parent.append(i)
        if origins is not None and i and origins[i] == origins[i - 1]:
            join(i, i - 1)
        if key is not None:
            join(i, first_with_key.setdefault(key, i))
    groups = np.empty(len(parent), dtype=np.int64)
    count = 0
    for i in range(len(parent)):
        r = root(i)
        if r == i:
            groups[i], count = count, count + 1
        else:
            groups[i] = groups[r]
    return groups


def held_out_rows(n: int, fraction: float) -> int:
    """Target rows of a held-out split: round(n * fraction), at least 1 when the fraction is > 0."""
    return 0 if fraction <= 0 else max(1, round(n * fraction))


def split_rows(groups: np.ndarray, validation_fraction: float, test_fraction: float, tail: bool,
               seed: int) -> dict[str, np.ndarray]:
    """Row indices (ascending, i.e. in source order) of train, validation and test (only when test_fraction > 0).

    Groups are taken in seeded random order (numpy default_rng(seed)), or last-first for `tail`: test takes whole
    groups until it holds at least its target rows (`held_out_rows`), then validation does, and train gets the
    rest (which may be empty: the caller decides). With one row per group this is the row-wise split."""
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    sizes = np.bincount(groups, minlength=n_groups)
    order = np.arange(n_groups)[::-1] if tail else np.random.default_rng(seed).permutation(n_groups)
    split_of_group = np.zeros(n_groups, dtype=np.int8)  # 0 train, 1 validation, 2 test
    taken = 0
    for code, fraction in ((2, test_fraction), (1, validation_fraction)):
        target, rows = held_out_rows(len(groups), fraction), 0
        while rows < target and taken < n_groups:
            split_of_group[order[taken]] = code
            rows += sizes[order[taken]]
            taken += 1
    split_of_row = split_of_group[groups]
    parts = {"train": np.flatnonzero(split_of_row == 0), "validation": np.flatnonzero(split_of_row == 1)}
    if test_fraction > 0:
        parts["test"] = np.flatnonzero(split_of_row == 2)
    return parts
