"""Real data sources for the data stage: load local files or a Hub dataset and map them into a TRL format.

`load_source(cfg, seed)` reads the source, maps each raw record with a mapper (`pipeline.data.mappers`),
validates every mapped record, filters, and splits:

1. Read. Local files (one file, a directory - every file with a known extension, recursively - or a glob):
   JSON (a list, or an object holding one list; JSON Lines inside a .json file also work), JSON Lines, CSV
   (all values strings), Parquet, plain text; .gz/.bz2/.xz compression is read transparently. Otherwise
   `datasets.load_dataset(path, hub_config, split=hub_split)`. `file_type: auto` picks the reader by extension
   and treats a non-existing path that looks like a Hub id (`owner/name`, no file extension) as a Hub dataset.
   Text files are cut into records by `iter_text_blocks`: a record is a run of non-blank lines (a paragraph),
   kept with its newlines; a run reaching TEXT_BLOCK_CHARS characters is cut at the line boundary, so a file with
   one paragraph per line and no blank lines gives ~8 KB records of whole lines.
2. Map and validate. Malformed records are counted by reason in report["dropped"] (strict: the first one raises).
3. Filter, in this order: length of the mapped text (sum of all message contents) outside
   [min_chars, max_chars] -> too_short/too_long; exact duplicates of the mapped record -> duplicate.
4. max_rows: keep the first N rows that survive steps 2-3, in source order; reading stops there (cheap on a
   large Hub dataset; `report["max_rows_reached"]`).
5. Split by group (`pipeline.data.splits`), so no prompt is in two splits. A row's prompt is its first user
   message (format messages: of `messages`; prompts: of `prompt`; preferences: of `prompt`, else of `chosen`),
   compared after stripping surrounding whitespace. Rows sharing a prompt form one group, and so do rows mapped
   from one raw record (all of an OASST tree's conversations and pairs, all instances of a Self-Instruct seed
   task); text rows are groups of one. Whole groups, in a seeded random order (numpy default_rng(seed) permutes
   the groups, numbered by first appearance), fill test and then validation until each holds at least
   round(n * fraction) rows (at least one group when the fraction is > 0); the rest is train. A split thus
   overshoots its target by less than one group's rows; with one row per group (text) it is the row-wise split
   of a seeded permutation. Each split keeps source order. `split: tail` takes the groups last-first instead
   (train, then validation, then test, in source order of their first rows). report["groups"] counts groups.

Streaming (`streaming: true`): records flow from the reader through steps 2-4 into `Dataset.from_generator`,
which writes Arrow shards to the datasets cache, so a file larger than memory is never held in a Python list
(per row only 8-byte integers: raw-record index, group; 16-byte hashes for dedupe and, while splitting, one per
distinct prompt, read back from the built dataset in batches). The cache is keyed on the config and the files'
size and mtime; a cache hit reads the report and the raw-record indices saved next to it (a cache without them
is built afresh), so a hit splits exactly as the first build did.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import os
import re
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from typing import Iterator

from pipeline.data.mappers import (FORMATS, MAPPER_FORMATS, MAPPERS, check_record, plan_fields, text_length,
                                   valid_fields)
from pipeline.data.readers import COMPRESSED, TEXT_BLOCK_CHARS, iter_text_blocks, read_file  # noqa: F401 (public here too)
from pipeline.data.splits import group_rows, prompt_keys, split_rows
from pipeline.errors import PipelineError

FILE_TYPES = ("auto", "json", "jsonl", "parquet", "csv", "text", "hub")
_EXT = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv",
        ".txt": "text", ".text": "text", ".raw": "text"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_PEEK = 1000  # records looked at to learn a file's columns


@dataclass
class SourceConfig:
    name: str = field(metadata={"help": "output dataset name, e.g. 'oasst_pairs'"})
    format: str = field(metadata={"help": "target TRL format: text | messages | preferences | prompts"})
    path: str = field(metadata={"help": "local file, directory or glob, or a Hugging Face Hub dataset id"})
    file_type: str = field(default="auto", metadata={
        "help": "auto (by extension; Hub id if the path does not exist) | json | jsonl | parquet | csv | text | hub"})
    mapper: str = field(default="auto", metadata={
        "help": "columns (rename via `columns`) | hh | oasst | dolly | alpaca | text; auto = columns"})
    columns: dict[str, str] = field(default_factory=dict, metadata={
        "help": "mapper field -> source column, e.g. {text: body} or {user: question, assistant: answer}"})
    hub_config: str = field(default="", metadata={"help": "Hub dataset config name ('' = default)"})
    hub_split: str = field(default="train", metadata={"help": "Hub dataset split to read"})
    max_rows: int = field(default=0, metadata={"help": "keep the first N rows that pass the filters (0 = all)"})
    min_chars: int = field(default=1, metadata={"help": "drop records whose mapped text is shorter"})
    max_chars: int = field(default=0, metadata={"help": "drop records whose mapped text is longer (0 = no max)"})
    dedupe: bool = field(default=True, metadata={"help": "drop exact duplicates of the mapped record"})
    validation_fraction: float = field(default=0.1, metadata={
        "help": "fraction of rows in the validation split (whole groups of rows sharing a prompt: at least this)"})
    test_fraction: float = field(default=0.0, metadata={
        "help": "fraction of rows in the test split (0 = none; whole prompt groups, as validation)"})
    strict: bool = field(default=False, metadata={"help": "the first malformed record is fatal"})
    streaming: bool = field(default=False, metadata={
        "help": "read incrementally and write Arrow shards (for files larger than memory)"})
    split: str = field(default="random", metadata={
        "help": "random: a seeded permutation picks the held-out groups (rows sharing a prompt or a raw record) | "
                "tail: the last groups in source order are validation (then test), as nanoGPT holds out the last "
                "10% of TinyShakespeare"})
    license: str = field(default="other", metadata={"help": "licence of the source, for the dataset card (e.g. mit, apache-2.0)"})
    description: str = field(default="", metadata={"help": "one paragraph for the dataset card ('' = a generic one)"})


# ---------------------------------------------------------------- config checks and file resolution
def _check_config(cfg: SourceConfig, p: str) -> str:
    """Validate the config; return the mapper name ('auto' resolved)."""
    for key, valid in (("format", FORMATS), ("file_type", FILE_TYPES), ("mapper", ("auto",) + tuple(MAPPERS)),
                       ("split", ("random", "tail"))):
        if getattr(cfg, key) not in valid:
            raise PipelineError(f"{p}.{key}: unknown {key} {getattr(cfg, key)!r} (valid: {', '.join(valid)})")
    mapper = "columns" if cfg.mapper == "auto" else cfg.mapper
    if cfg.format not in MAPPER_FORMATS[mapper]:
        raise PipelineError(f"{p}.mapper: mapper {mapper!r} cannot produce format {cfg.format!r} "
                            f"(it gives: {', '.join(MAPPER_FORMATS[mapper])})")
    if not str(cfg.path or "").strip():
        raise PipelineError(f"{p}.path: empty")
    if not isinstance(cfg.columns, dict) or not all(isinstance(v, str) for v in cfg.columns.values()):
        raise PipelineError(f"{p}.columns: expected a mapping of field -> column name, got {cfg.columns!r}")
    for key in ("validation_fraction", "test_fraction"):
        if not 0 <= getattr(cfg, key) < 1:
            raise PipelineError(f"{p}.{key}: must be in [0, 1), got {getattr(cfg, key)}")
    if cfg.validation_fraction + cfg.test_fraction >= 1:
        raise PipelineError(f"{p}.test_fraction: validation_fraction + test_fraction must be below 1, got "
                            f"{cfg.validation_fraction} + {cfg.test_fraction}")
    for key in ("max_rows", "min_chars", "max_chars"):
        if getattr(cfg, key) < 0:
            raise PipelineError(f"{p}.{key}: must be >= 0, got {getattr(cfg, key)}")
    if cfg.max_chars and cfg.max_chars < cfg.min_chars:
        raise PipelineError(f"{p}.max_chars: {cfg.max_chars} is below min_chars {cfg.min_chars}")
    return mapper


def _type_of(path: str) -> str | None:
    base, ext = os.path.splitext(path.lower())
    if ext in COMPRESSED:
        ext = os.path.splitext(base)[1]
    return _EXT.get(ext)


def resolve_files(cfg: SourceConfig, p: str) -> tuple[str, list[str]]:
    """-> (file type, files); ('hub', []) for a Hub dataset."""
    if cfg.file_type == "hub":
        return "hub", []
    path = os.path.expanduser(cfg.path)
    if glob.has_magic(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise PipelineError(f"{p}.path: no files match: {cfg.path}")
    elif os.path.isdir(path):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                       if not f.startswith(".") and _type_of(f) and cfg.file_type in ("auto", _type_of(f)))
        if not files:
            raise PipelineError(f"{p}.path: no data files ({', '.join(sorted(_EXT))}) in directory {cfg.path}")
    elif os.path.isfile(path):
        files = [path]
    elif cfg.file_type == "auto" and _HUB_ID.fullmatch(cfg.path) and not _type_of(cfg.path):
        return "hub", []
    else:
        raise PipelineError(f"{p}.path: no such file: {cfg.path}")
    if cfg.file_type != "auto":
        return cfg.file_type, files
    types = {f: _type_of(f) for f in files}
    unknown = [f for f, t in types.items() if t is None]
    if unknown:
        raise PipelineError(f"{p}.file_type: cannot tell the type of {unknown[0]} from its extension; set file_type "
                            f"(valid: {', '.join(FILE_TYPES[1:])})")
    if len(set(types.values())) > 1:
        kinds = ", ".join(sorted(set(types.values())))
        raise PipelineError(f"{p}.file_type: mixed file types under {cfg.path} ({kinds}); "
                            f"set file_type or narrow path")
    return types[files[0]], files


# ---------------------------------------------------------------- readers (local files: pipeline.data.readers)
def _read_hub(cfg: SourceConfig, p: str):
    import datasets

    try:
        ds = datasets.load_dataset(cfg.path, cfg.hub_config or None, split=cfg.hub_split, streaming=cfg.streaming)
    except Exception as e:  # noqa: BLE001 - anything from the Hub is reported as one line
        detail = " ".join(str(e).split())[:300]
        local = "; no local file by that name either" if cfg.file_type == "auto" else ""
        raise PipelineError(f"{p}.path: cannot load Hub dataset {cfg.path!r} (config {cfg.hub_config or 'default'!r}, "
                            f"split {cfg.hub_split!r}{local}): {type(e).__name__}: {detail}") from e
    for i, rec in enumerate(ds):
        yield f"{cfg.path}[{cfg.hub_split}]#{i}", rec


def _read(cfg: SourceConfig, ftype: str, files: list[str], p: str):
    if ftype == "hub":
        yield from _read_hub(cfg, p)
        return
    for path in files:
        try:
            yield from read_file(ftype, path)
        except (UnicodeDecodeError, OSError, EOFError) as e:
            raise PipelineError(f"{p}.path: cannot read {path} as {ftype}: {type(e).__name__}: {e}") from e
        except Exception as e:  # noqa: BLE001 - pyarrow / csv errors on a corrupt file
            if isinstance(e, PipelineError):
                raise
            raise PipelineError(f"{p}.path: cannot read {path} as {ftype}: {type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}") from e


# ---------------------------------------------------------------- mapping, filtering, splitting
def _mapped(cfg: SourceConfig, mapper: str, cols: dict, items: Iterator, report: dict, p: str,
            origins: array) -> Iterator[dict]:
    """Kept rows, in source order; `origins` gets the raw-record index of each one."""
    fn, dropped = MAPPERS[mapper], report["dropped"]
    seen: set[bytes] = set()
    for idx, (loc, raw) in enumerate(items):
        report["read"] += 1
        try:
            outs = raw if isinstance(raw, str) else fn(raw, cfg.format, cols)
        except (TypeError, ValueError, AttributeError, KeyError):  # a field of an unexpected type deep inside
            outs = "bad_type"
        for out in [outs] if isinstance(outs, str) else outs:
            report["mapped"] += 1
            reason = out if isinstance(out, str) else check_record(cfg.format, out)
            if reason is None:
                n = text_length(cfg.format, out)
                too_long = cfg.max_chars and n > cfg.max_chars
                reason = "too_short" if n < cfg.min_chars else "too_long" if too_long else None
                if reason is None and cfg.dedupe:
                    key = hashlib.blake2b(json.dumps(out, sort_keys=True, ensure_ascii=False).encode(),
                                          digest_size=16).digest()
                    if key in seen:
                        reason = "duplicate"
                    seen.add(key)
            elif cfg.strict:
                raise PipelineError(f"{p}: record {idx} ({loc}) is malformed: {reason} (strict: true)")
            if reason:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            report["kept"] += 1
            origins.append(idx)
            yield out
            if cfg.max_rows and report["kept"] >= cfg.max_rows:
                report["max_rows_reached"] = True
                return


def _features(fmt: str):
    from datasets import Features, List, Value

    msgs = List({"role": Value("string"), "content": Value("string")})
    keys = {"text": {"text": Value("string")}, "messages": {"messages": msgs}, "prompts": {"prompt": msgs},
            "preferences": {"prompt": msgs, "chosen": msgs, "rejected": msgs}}[fmt]
    return Features(keys)


def _fingerprint(cfg: SourceConfig, ftype: str, files: list[str]) -> str:
    if ftype == "hub":
        return "source-" + uuid.uuid4().hex  # a Hub dataset can change: never reuse
    stats = [(os.path.abspath(f), os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    blob = json.dumps({"v": 2, "cfg": asdict(cfg), "files": stats}, sort_keys=True)
    return "source-" + hashlib.sha256(blob.encode()).hexdigest()[:32]


def _from_generator(cfg: SourceConfig, rows: Iterator[dict], report: dict, origins: array, fingerprint: str):
    """Dataset.from_generator; a cache hit (the generator did not run) restores the report and `origins`."""
    from datasets import Dataset

    ran = []

    def gen():
        ran.append(True)
        yield from rows

    try:
        ds = Dataset.from_generator(gen, features=_features(cfg.format), fingerprint=fingerprint)
    except Exception as e:  # datasets wraps errors raised in the generator
        cause = e
        while cause is not None and not isinstance(cause, PipelineError):
            cause = cause.__cause__ or cause.__context__
        if cause is None and ran and not report["kept"]:
            return None  # nothing kept: load_source reports the empty result
        raise (cause or e) from None
    if not ds.cache_files:
        return ds
    folder = os.path.dirname(ds.cache_files[0]["filename"])
    sidecar, indices = (os.path.join(folder, f"pipeline_source_{k}") for k in ("report.json", "origins.bin"))
    if ran:
        with open(sidecar, "w") as f:
            json.dump(report, f)
        with open(indices, "wb") as f:
            origins.tofile(f)
    elif os.path.exists(sidecar) and os.path.exists(indices):
        with open(sidecar) as f:
            report.update(json.load(f))
        with open(indices, "rb") as f:
            origins.frombytes(f.read())
    else:  # a cache from elsewhere without its report: build afresh
        return _from_generator(cfg, rows, report, origins, fingerprint + "-" + uuid.uuid4().hex[:8])
    return ds


def _split(ds, cfg: SourceConfig, seed: int, p: str, origins: array, report: dict):
    """Whole groups of rows to train/validation/test (module docstring, step 5); report["groups"] counts them."""
    import numpy as np
    from datasets import DatasetDict

    n = len(ds)
    if cfg.format == "text":
        groups = np.arange(n)  # no prompt: each row is its own group
    else:
        groups = group_rows(prompt_keys(ds, cfg.format), origins)
    report["groups"] = int(groups.max()) + 1
    parts = split_rows(groups, cfg.validation_fraction, cfg.test_fraction, cfg.split == "tail", seed)
    if not len(parts["train"]):
        raise PipelineError(f"{p}: {n} kept row(s) are too few for validation_fraction {cfg.validation_fraction} and "
                            f"test_fraction {cfg.test_fraction} ({report['groups']} group(s) of rows sharing a "
                            f"prompt or a raw record; held-out splits take whole groups)")
    return DatasetDict({k: ds.select(v) for k, v in parts.items()})


def load_source(cfg: SourceConfig, seed: int, where: str = "data.sources"):
    """Load and map one source (see the module docstring for the steps).

    Returns (DatasetDict with train, validation (possibly empty) and, when test_fraction > 0, test; report) where
    report = {"read": raw records read (trees, transcripts, text blocks, rows), "mapped": candidate output
    records (a whole malformed raw record counts as one), "kept": rows in the splits, "dropped": {reason: count},
    "max_rows_reached": bool, "groups": groups of rows that share a prompt or a raw record, each in one split};
    mapped == kept + sum(dropped) unless max_rows stopped the reading.
    Raises PipelineError (one line, naming `where[name].field`) for bad input or an empty result."""
    p = f"{where}[{cfg.name}]"
    mapper = _check_config(cfg, p)
    ftype, files = resolve_files(cfg, p)
    items = _read(cfg, ftype, files, p)
    head = list(itertools.islice(items, _PEEK))
    available = None
    if head:
        available = list(dict.fromkeys(k for _, r in head if isinstance(r, dict) for k in r))
    cols, missing, unknown = plan_fields(mapper, cfg.format, cfg.columns, available)
    if unknown:
        raise PipelineError(f"{p}.columns.{unknown[0]}: not a field of mapper {mapper!r} for format {cfg.format!r} "
                            f"(valid: {', '.join(valid_fields(mapper, cfg.format))})")
    if missing:
        key, col = missing[0]
        raise PipelineError(f"{p}.columns.{key}: column {col!r} not in file (columns: {', '.join(available or [])})")
    report = {"read": 0, "mapped": 0, "kept": 0, "dropped": {}, "max_rows_reached": False}
    origins = array("q")  # raw-record index of each kept row
    rows = _mapped(cfg, mapper, cols, itertools.chain(head, items), report, p, origins)
    if cfg.streaming:
        ds = _from_generator(cfg, rows, report, origins, _fingerprint(cfg, ftype, files))
    else:
        from datasets import Dataset

        data = list(rows)
        ds = Dataset.from_list(data, features=_features(cfg.format)) if data else None
    if not report["kept"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(report["dropped"].items())) or "none"
        raise PipelineError(f"{p}: no rows left from {cfg.path} (read {report['read']}, dropped: {reasons})")
    return _split(ds, cfg, seed, p, origins, report), report
