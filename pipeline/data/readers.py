"""Local file readers for the data stage: JSON, JSON Lines, CSV, Parquet and plain text, optionally gzip, bzip2
or xz compressed. Each yields (location, record) pairs, where a record that cannot be one is a reason string
("bad_json", "bad_type") that `pipeline.data.sources` counts instead of dropping silently.

Plain text is cut into records by `iter_text_blocks`: a record is a run of non-blank lines (a paragraph); a run
reaching TEXT_BLOCK_CHARS characters is cut at the line boundary.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import os
from typing import Iterable, Iterator

TEXT_BLOCK_CHARS = 8192
COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def _open(path: str, newline: str | None = None):
    opener = COMPRESSED.get(os.path.splitext(path.lower())[1]) or open
    return opener(path, "rt", encoding="utf-8", newline=newline)


def iter_text_blocks(lines: Iterable[str], max_chars: int = TEXT_BLOCK_CHARS) -> Iterator[tuple[int, str]]:
    """(1-based first line, block): blank-line separated runs of lines (right-stripped, joined with '\\n'); a run
    is cut before the line that would take it past max_chars (a longer single line stays whole)."""
    block: list[str] = []
    size, start = 0, 0
    for n, line in enumerate(lines, 1):
        line = line.rstrip()
        if not line or (block and size + len(line) + 1 > max_chars):
            if block:
                yield start, "\n".join(block)
            block, size = [], 0
            if not line:
                continue
        if not block:
            start = n
        block.append(line)
        size += len(line) + 1
    if block:
        yield start, "\n".join(block)


def _read_jsonl(path: str, lines: Iterable[str], first: int = 1):
    for n, line in enumerate(lines, first):
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                yield f"{path}:{n}", "bad_json"
                continue
            yield f"{path}:{n}", rec if isinstance(rec, dict) else "bad_type"


def read_file(ftype: str, path: str):
    """Yield (location, record dict | reason string) for every record of one local file of type `ftype`."""
    if ftype == "parquet":
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                yield f"{path}#{i}", rec
                i += 1
        return
    with _open(path, "" if ftype == "csv" else None) as f:
        if ftype == "text":
            for n, block in iter_text_blocks(f):
                yield f"{path}:{n}", {"text": block}
        elif ftype == "csv":
            for n, row in enumerate(csv.DictReader(f), 2):
                row.pop(None, None)  # surplus cells of a ragged row
                yield f"{path}:{n}", row
        elif ftype == "jsonl":
            yield from _read_jsonl(path, f)
        else:
            text = f.read()
            try:
                data = json.loads(text)
            except ValueError:  # JSON Lines in a .json file
                yield from _read_jsonl(path, io.StringIO(text))
                return
            if isinstance(data, dict):
                lists = [v for v in data.values() if isinstance(v, list)]
                data = lists[0] if len(data) == 1 and lists else [data]
            if not isinstance(data, list):
                data = [data]
            for i, rec in enumerate(data):
                yield f"{path}#{i}", rec if isinstance(rec, dict) else "bad_type"
