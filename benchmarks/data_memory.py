"""Peak memory of the data stage on one large text file, streaming on and off.

    python benchmarks/data_memory.py [FILE] [--streaming on|off|both] [--dedupe on|off] [--trace]

FILE defaults to ../shared/data/gutenberg_large/corpus.txt (111 MB, one paragraph per line). For each mode the
data stage runs in a fresh child process (`python -m pipeline.cli stage data --config recipe.yaml`) on a recipe
holding one text source, `{name: corpus, format: text, path: FILE, streaming: ...}` (synthetic: false), with its
own empty HF_DATASETS_CACHE (no cache hit; the Arrow shards of `streaming: true` go there) and run folder, both
in a temporary folder removed afterwards. A first child only imports what the stage imports
(`pipeline.cli`, `pipeline.stages.data`: torch, datasets, accelerate) and exits: the baseline.

Measured per child:
  peak RSS   ru_maxrss of the child from os.wait4 (Linux: KiB; the child's own high-water mark, VmHWM)
  wall       seconds from spawn to exit (interpreter start and imports included)
  MB/s       file size / wall
  rows       rows in all splits (data/manifest.json)
With --trace, the child's RssAnon (heap) and RssFile (file-backed pages: libraries, memory-mapped Arrow files,
which count in RSS once touched but are page cache the kernel can drop) are sampled from /proc every 0.2 s and
printed, to see which phase of the stage holds the peak. Run it on a quiet machine; one child at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "gutenberg_large" / "corpus.txt"
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def _rss_mb(pid: int) -> tuple[float, float] | None:
    """(RssAnon, RssFile) of a live process in MB: heap vs file-backed pages (memory-mapped Arrow, libraries)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssFile")))
        return int(fields["RssAnon"].split()[0]) / 1024, int(fields["RssFile"].split()[0]) / 1024
    except (OSError, KeyError):
        return None


def measure(argv: list[str], env: dict, cwd: Path, trace: bool = False) -> dict:
    """Run argv as a child; -> {rc, peak_mb (ru_maxrss), wall_s, stderr tail, trace [(s, anon MB, file MB)]}."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=err)
        samples = []
        while True:  # wait4 gives this child's own rusage, not the max over every child this process had
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG if trace else 0)
            if pid:
                break
            rss = _rss_mb(proc.pid)
            if rss is not None:
                samples.append((round(time.perf_counter() - start, 1), *rss))
            time.sleep(0.2)
        wall = time.perf_counter() - start
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-3000:]
    peak = usage.ru_maxrss / 1024
    return {"rc": rc, "peak_mb": peak, "wall_s": wall, "stderr": tail, "trace": samples}


def data_stage(file: Path, streaming: bool, dedupe: bool, workdir: Path, trace: bool = False) -> dict:
    """The data stage on `file` in a child process, with its own datasets cache under workdir."""
    recipe = {"run": {"name": "data_memory", "seed": 0, "stages": ["data"]},
              "data": {"synthetic": False,
                       "sources": [{"name": "corpus", "format": "text", "path": str(file.resolve()),
                                    "streaming": streaming, "dedupe": dedupe}]}}
    (workdir / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = {**os.environ, **ENV, "HF_DATASETS_CACHE": str(workdir / "hf_cache"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "pipeline.cli", "stage", "data", "--config", str(workdir / "recipe.yaml"),
            f"run.output_dir={workdir / 'run'}"]
    result = measure(argv, env, ROOT, trace)
    manifest = workdir / "run" / "data" / "manifest.json"
    if result["rc"] == 0 and manifest.is_file():
        entry = json.loads(manifest.read_text())["corpus"]
        result["rows"] = sum(entry["splits"].values())
        result["report"] = entry.get("report")
    return result


def baseline(workdir: Path) -> dict:
    """A child that only imports what the data stage imports."""
    env = {**os.environ, **ENV, "HF_DATASETS_CACHE": str(workdir / "hf_cache")}
    code = "import pipeline.cli, pipeline.stages.data, pipeline.data.sources, datasets, torch"
    return measure([sys.executable, "-c", code], env, ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--streaming", choices=("on", "off", "both"), default="both")
    parser.add_argument("--dedupe", choices=("on", "off"), default="on")
    parser.add_argument("--trace", action="store_true", help="sample and print the child's RSS every 0.2 s")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"error: no such file: {args.file}", file=sys.stderr)
        return 2
    size_mb = args.file.stat().st_size / 1e6
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.streaming]
    rows = []
    with tempfile.TemporaryDirectory(prefix="data_memory_") as tmp:
        base = baseline(Path(tmp))
        rows.append(("(imports only)", "-", base["peak_mb"], base["wall_s"], None, "-"))
        for streaming in modes:
            work = Path(tmp) / ("streaming" if streaming else "in_memory")
            work.mkdir()
            r = data_stage(args.file, streaming, args.dedupe == "on", work, args.trace)
            if r["rc"] != 0:
                print(f"error: data stage (streaming {streaming}) exited {r['rc']}:\n{r['stderr']}", file=sys.stderr)
                return 1
            rows.append((args.file.name, "on" if streaming else "off", r["peak_mb"], r["wall_s"],
                         size_mb / r["wall_s"], f"{r['rows']:,}"))
            if args.trace:
                print(f"# RSS trace, streaming {'on' if streaming else 'off'} (s: anon+file MB), "
                      f"peak anon {max((a for _, a, _ in r['trace']), default=0):.0f} MB:")
                print(" ".join(f"{t}:{a:.0f}+{f:.0f}" for t, a, f in r["trace"]))
    print(f"file: {args.file} ({size_mb:.1f} MB), dedupe {args.dedupe}, python {sys.version.split()[0]}")
    print(f"{'file':<16} {'streaming':>9} {'peak RSS MB':>12} {'wall s':>8} {'MB/s':>7} {'rows':>9}")
    for name, mode, peak, wall, rate, n in rows:
        print(f"{name:<16} {mode:>9} {peak:>12.0f} {wall:>8.1f} {'' if rate is None else f'{rate:.2f}':>7} {n:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
