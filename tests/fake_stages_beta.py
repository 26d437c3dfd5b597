"""Second fake stage: reads alpha's output."""

from dataclasses import dataclass, field

from pipeline.artifacts import RunDir, atomic_write
from tests.fake_stages import count_runs

NAME, NEEDS, HEADLINE = "beta", ("alpha",), ("doubled",)


@dataclass
class Config:
    factor: int = field(default=2, metadata={"help": "Multiplies alpha's value."})


def run(cfg: Config, run: RunDir) -> dict:
    count_runs(run, NAME)
    value = int((run.root / "alpha" / "out.txt").read_text()) * cfg.factor
    atomic_write(run.stage_dir(NAME) / "out.txt", str(value))
    return {"doubled": value}
