"""Scale without surprise: the data stage streams a text file larger than its memory allowance, and
pretraining reads its packed blocks memory-mapped.

test_streaming_data_stage_memory_is_bounded: `write_corpus` generates a ~200 MB text file (121,000 distinct
blank-line separated paragraphs, under a second), and `pipeline stage data` with `streaming: true` runs on it in a
child process, and, as the baseline, on a ~1.6 MB file from the same generator (same imports, same code path).
The child's anonymous memory (RssAnon in /proc/<pid>/status, sampled every 50 ms: the Python/Arrow heap, what a
memory limit bites on) may exceed the baseline run's by at most HEAP_MARGIN_MB, half the file size or less, so a
stage that held the corpus (or its rows) in memory fails. Measured on the 2-core dev box (datasets 5.2.0,
torch 2.13 CPU, Python 3.11):

                          peak RssAnon   ru_maxrss   wall
    imports only                -         468 MB     5 s
    1.6 MB file (baseline)   348 MB       491 MB     6 s
    200 MB, streaming        382 MB       713 MB    23 s   heap +34 MB over the baseline; the rest is RssFile
    200 MB, streaming off   1532 MB      1679 MB    24 s   heap +1185 MB: this test fails, as it should

The whole test takes ~30 s (generation < 1 s).

ru_maxrss (the child's VmHWM from os.wait4) also counts file-backed pages: the shared libraries and the
memory-mapped Arrow files the stage reads back (held-out overlap, save_to_disk) once touched, about one page per
byte of output, which the kernel can drop under pressure. It is bounded separately by the file size plus
HEAP_MARGIN_MB over the baseline: at most one mapped copy of the data, never an in-memory one besides.

The held-out overlap check (`pipeline.data.overlap.split_overlap`) keeps one 8-byte digest per train sentence in
a flat array (it kept a Python set of 12-byte digests, ~100 bytes per distinct sentence, +490 MB on 200 MB of
distinct sentences, before this test found it): about 16 bytes per train sentence with numpy's sorted copy,
~1M sentences in gutenberg_large (estimated, not measured apart). This file's sentences
come from a pool of 4,096 plus one per paragraph, so the test measures the streaming path itself.

test_pretraining_reads_packed_blocks_memory_mapped: the pretrain stage's own packing (`prepare_blocks` inside
`pretrain.run`) on a tiny corpus, with the trainer replaced by a stub that keeps the datasets it is given: the
train and eval datasets hold `numpy.memmap`s of packed/train.npy and packed/validation_stream.npy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

WORDS = ("the of and to in a was he that it his her with as had for she on at by not be from but this which "
         "all were they so one you said we my would there their an him were them or when been into more no "
         "time could what some about now out other then your these man only then over like long down such "
         "ship river house light water night king great little old young first last never again under "
         "before after while found began heard looked turned called walked thought seemed stood gave took "
         "morning evening garden window letter window mountain forest village stranger captain doctor "
         "silence shadow answer reason question moment morning voice father mother brother sister friend").split()


def write_corpus(path: Path, target_bytes: int, seed: int = 0) -> tuple[int, int]:
    """A deterministic text file of about target_bytes: paragraphs of 8-40 sentences (each paragraph opens with
    its own number, so none is a duplicate), one blank line between paragraphs, every line shorter than a text
    record's 8192 characters. -> (paragraphs, bytes of the paragraphs' text, separators excluded): the rows and
    text bytes the data stage must keep. A few seconds for 200 MB."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, 18, size=4096)
    picks = rng.integers(0, len(WORDS), size=int(lengths.sum()))
    pool, at = [], 0
    for i, n in enumerate(lengths):  # 4,096 distinct sentences, each ending in its own number
        words = [WORDS[j] for j in picks[at:at + n]]
        at += n
        pool.append(f"{words[0].capitalize()} {' '.join(words[1:])} {i}.")
    rows = text_bytes = written = 0
    with open(path, "w", encoding="ascii") as f:
        while written < target_bytes:
            counts = rng.integers(8, 41, size=1000)
            choice = rng.integers(0, len(pool), size=int(counts.sum()))
            at, chunk = 0, []
            for n in counts:
                chunk.append(f"Paragraph {rows}. " + " ".join(pool[j] for j in choice[at:at + n]))
                at += n
                rows += 1
            text = "\n\n".join(chunk) + "\n\n"
            f.write(text)
            written += len(text)
            text_bytes += len(text) - 2 * len(chunk)
    return rows, text_bytes


HEAP_MARGIN_MB = 100  # the 200 MB file may add at most this much heap over the ~1 MB baseline (measured: +34)
FILE_BYTES = 200 * 10**6
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _rss_anon_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_data_stage(corpus: Path, work: Path) -> dict:
    """`pipeline stage data` streaming `corpus` in a child with its own datasets cache ->
    {peak_anon_mb (sampled), maxrss_mb (wait4), wall_s, split rows, text bytes of all splits}."""
    import datasets
    import pyarrow.compute as pc
    import yaml

    recipe = {"run": {"name": "scale", "seed": 0, "stages": ["data"]},
              "data": {"synthetic": False,
                       "sources": [{"name": "corpus", "format": "text", "path": str(corpus), "streaming": True}]}}
    work.mkdir()
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, **ENV, "HF_DATASETS_CACHE": str(work / "hf_cache")}
    argv = [sys.executable, "-m", "pipeline.cli", "stage", "data", "--config", str(work / "recipe.yaml"),
            f"run.output_dir={work / 'run'}"]
    start = time.perf_counter()
    with open(work / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err)
        peak_anon = 0.0
        while True:  # wait4: this child's own rusage, not a max over every child pytest ever had
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak_anon = max(peak_anon, _rss_anon_mb(proc.pid) or 0.0)
            if time.perf_counter() - start > 600:
                proc.kill()
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    assert proc.returncode == 0, (work / "stderr.txt").read_text()[-3000:]
    ds = datasets.load_from_disk(str(work / "run" / "data" / "corpus"))
    text_bytes = sum(pc.sum(pc.binary_length(split.data.column("text"))).as_py() for split in ds.values())
    return {"peak_anon_mb": peak_anon, "maxrss_mb": usage.ru_maxrss / 1024, "wall_s": wall,
            "rows": {k: len(v) for k, v in ds.items()}, "text_bytes": text_bytes}


def test_streaming_data_stage_memory_is_bounded(tmp_path):
    assert HEAP_MARGIN_MB * 10**6 <= FILE_BYTES / 2  # half the corpus would not fit in the allowance
    small_rows, small_bytes = write_corpus(tmp_path / "small.txt", 10**6, seed=1)
    rows, text_bytes = write_corpus(tmp_path / "large.txt", FILE_BYTES, seed=0)
    size_mb = (tmp_path / "large.txt").stat().st_size / 1e6
    assert size_mb >= 199

    base = run_data_stage(tmp_path / "small.txt", tmp_path / "small")
    assert sum(base["rows"].values()) == small_rows and base["text_bytes"] == small_bytes
    (tmp_path / "small.txt").unlink()
    big = run_data_stage(tmp_path / "large.txt", tmp_path / "large")
    for path in (tmp_path / "large.txt", tmp_path / "large", tmp_path / "small"):  # ~600 MB pytest would keep
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    # every paragraph is one row, none dropped; validation_fraction 0.1 of them held out
    assert sum(big["rows"].values()) == rows == 121_000
    assert big["rows"]["validation"] == round(rows * 0.1)
    assert big["text_bytes"] == text_bytes
    heap = big["peak_anon_mb"] - base["peak_anon_mb"]
    total = big["maxrss_mb"] - base["maxrss_mb"]
    facts = (f"{size_mb:.0f} MB in {big['wall_s']:.0f} s: peak RssAnon {big['peak_anon_mb']:.0f} MB "
             f"(baseline {base['peak_anon_mb']:.0f}), ru_maxrss {big['maxrss_mb']:.0f} MB "
             f"(baseline {base['maxrss_mb']:.0f})")
    assert heap < HEAP_MARGIN_MB, "heap grew with the file: " + facts
    assert total < size_mb + HEAP_MARGIN_MB, "resident memory above one mapped copy of the data: " + facts


def test_pretraining_reads_packed_blocks_memory_mapped(tmp_path, monkeypatch):
    import datasets

    from pipeline.artifacts import RunDir
    from pipeline.data.packing import BlockDataset, WindowDataset
    from pipeline.models.tokenizer import train_bpe
    from pipeline.stages import pretrain

    texts = [f"Paragraph {i}. " + " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(40)) for i in range(60)]
    run = RunDir(tmp_path / "run")
    ds = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts[:50]}),
                               "validation": datasets.Dataset.from_dict({"text": texts[50:]})})
    ds.save_to_disk(str(run.stage_dir("data") / "corpus"))
    train_bpe(texts, vocab_size=300).save_pretrained(str(run.stage_dir("tokenizer") / "final"))

    given = {}

    class Stop(Exception):
        pass

    def stub_trainer(**kwargs):
        given.update(kwargs)
        raise Stop

    monkeypatch.setattr(pretrain, "PretrainTrainer", stub_trainer)
    cfg = pretrain.Config(output_dir=str(tmp_path / "unused"), model_size="nano", block_size=16, max_steps=1,
                          report_to=["none"])
    with pytest.raises(Stop):
        pretrain.run(cfg, run)

    train, evaluation = given["train_dataset"], given["eval_dataset"]
    packed = run.stage_dir("pretrain") / "packed"
    assert isinstance(train, BlockDataset) and isinstance(evaluation, WindowDataset)
    assert isinstance(train.blocks, np.memmap) and isinstance(evaluation.ids, np.memmap)
    assert Path(train.blocks.filename) == (packed / "train.npy").resolve()
    assert Path(evaluation.ids.filename) == (packed / "validation_stream.npy").resolve()
    assert train.blocks.mode == "r" and train.blocks.shape[1] == 16 and len(train) > 0
    saved = np.load(packed / "train.npy")  # what was packed, read back whole only here
    assert np.array_equal(np.asarray(train.blocks), saved)
    assert train[len(train) - 1]["input_ids"].tolist() == saved[-1].tolist()
