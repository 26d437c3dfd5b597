"""What `pipeline run` shows while a stage works: one progress line, with the libraries' output in a log file.

    with stage_output("sft", run_dir / "sft" / "log.txt", verbose=False, is_main=True):
        trainer = SFTTrainer(..., callbacks=[TrainerProgress()])   # moves the line: step/total, loss, ETA
        ...
        console.update(step, total, score=1.2)                     # a stage with its own loop (ppo)

Inside `stage_output` everything the stage and its libraries write to stdout and stderr (per-step dicts,
tqdm bars, warnings, C-level prints) goes to the stage's `log.txt`: file descriptors 1 and 2 are redirected,
so loggers and bars bound to the streams before the stage began are caught too. The terminal gets one rich
progress line (a plain final line when it is not a terminal, e.g. CI logs). `verbose=True`, and every process
but the main one, leave the output where it was.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from transformers import TrainerCallback

_active = None  # the StageDisplay of the stage running in this process, if any


class StageDisplay:
    """One rich progress line: stage, bar, step/total, the stage's latest numbers, ETA."""

    def __init__(self, name: str, terminal):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, \
            TimeElapsedColumn, TimeRemainingColumn

        self.console = Console(file=terminal, stderr=False)
        self.progress = Progress(SpinnerColumn(), TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[numbers]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                 TimeRemainingColumn(), console=self.console, transient=False)
        self.task = self.progress.add_task(name, total=None, numbers="")
        self.numbers: dict[str, float] = {}

    def update(self, step: int | None = None, total: int | None = None, **numbers) -> None:
        self.numbers.update(numbers)
        text = "  ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                         for key, value in self.numbers.items())
        fields = {"numbers": text}
        if total is not None:
            fields["total"] = total
        if step is not None:
            fields["completed"] = step
        self.progress.update(self.task, **fields)


def update(step: int | None = None, total: int | None = None, **numbers) -> None:
    """Move the running stage's progress line (nothing when none is shown: verbose, other ranks, tests)."""
    if _active is not None:
        _active.update(step, total, **numbers)


class TrainerProgress(TrainerCallback):
    """Feeds a HF `Trainer`'s step count and logged loss to the progress line."""

    def on_train_begin(self, args, state, control, **kwargs):
        update(state.global_step, state.max_steps)

    def on_step_end(self, args, state, control, **kwargs):
        update(state.global_step, state.max_steps)

    def on_log(self, args, state, control, logs=None, **kwargs):
        shown = {key: value for key, value in (logs or {}).items() if key in ("loss", "eval_loss")}
        if shown:
            update(**shown)


@contextlib.contextmanager
def stage_output(name: str, log_path: Path, verbose: bool, is_main: bool):
    """Send fds 1 and 2 to `log_path` (appending: a resumed stage keeps the earlier attempt's log) and show
    one progress line on the terminal, for the duration of the block (see the module docstring)."""
    global _active
    if verbose or not is_main:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab", buffering=0) as log:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        _active = StageDisplay(name, terminal)
        _active.progress.start()
        try:
            yield
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            _active.progress.stop()
            _active = None
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            terminal.close()
