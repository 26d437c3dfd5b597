"""A minimal stage for testing the runner: writes a file, counts its runs, can fail half-way."""

import os
from dataclasses import dataclass, field

from pipeline.artifacts import RunDir, atomic_write

NAME, NEEDS, HEADLINE = "alpha", (), ("value",)


@dataclass
class Config:
    value: int = field(default=1, metadata={"help": "Written to out.txt."})
    rate: float = field(default=0.5, metadata={"help": "A float to type-check."})
    label: str = field(default="a", metadata={"help": "A string to type-check."})
    fail: bool = field(default=False, metadata={"help": "Raise after writing part of the output."})
    checkpoint: bool = field(default=False, metadata={"help": "Save a checkpoint-1/ folder before failing."})


def count_runs(run: RunDir, name: str) -> int:
    counter = run.root / f"{name}.runs"
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    return runs


def run(cfg: Config, run: RunDir) -> dict:
    count_runs(run, NAME)
    os.write(1, b"alpha says hello on fd 1\n")  # what a library (or C code) prints, below Python's sys.stdout
    os.write(2, b"alpha warns on fd 2\n")
    out = run.stage_dir(NAME)
    atomic_write(out / "out.txt", str(cfg.value))
    if cfg.checkpoint:
        atomic_write(out / "checkpoint-1" / "state.txt", str(cfg.value))
    if cfg.fail:
        raise RuntimeError("interrupted on purpose")
    return {"value": cfg.value}
