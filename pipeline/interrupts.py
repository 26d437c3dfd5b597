"""Ctrl-C during a training stage: save a checkpoint, then stop with one line and exit status 130.

    with graceful_interrupts(enabled=stage_checks_requests):   # the runner, around a stage
        ...
        if interrupt_requested():                               # a stage's loop, once per step (every rank)
            save_checkpoint(); raise StageInterrupted("ppo: ...")

The first SIGINT only sets a flag; the stage finishes its step, saves a checkpoint and raises `StageInterrupted`
naming it (the CLI prints that line and returns 130; the rerun resumes there). A second SIGINT stops at once
(`KeyboardInterrupt`, like a stage that never checks). Stages that do not check (`enabled=False`: data,
tokenizer, regression) keep Python's default: the first Ctrl-C stops them; they write nothing that resume needs.
On several processes `interrupt_requested` takes the maximum over ranks, so all stop at the same step; it is
then a collective and must be called by every rank equally often.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import torch
from transformers import TrainerCallback

_requested = False


class StageInterrupted(KeyboardInterrupt):
    """Raised after an interrupted stage saved its checkpoint; the message is the line to show."""


def _on_sigint(signum, frame) -> None:
    global _requested
    if _requested:
        raise KeyboardInterrupt
    _requested = True
    print("interrupt: saving a checkpoint at the end of this step (Ctrl-C again to stop at once)", file=sys.stderr,
          flush=True)


@contextlib.contextmanager
def graceful_interrupts(enabled: bool = True):
    """Within the block, SIGINT asks the stage to checkpoint and stop (see the module docstring)."""
    global _requested
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested = False
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _requested = False


def interrupt_requested() -> bool:
    """True once SIGINT arrived in this process, or in any process of the group (a collective then)."""
    return any_rank(_requested)


def any_rank(flag: bool) -> bool:
    """`flag` or-ed over the processes of the group (a collective when there are several), else `flag`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        value = torch.tensor([float(flag)])
        if torch.distributed.get_backend() == "nccl":
            value = value.cuda()
        torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
        return bool(value.item())
    return flag


class SaveOnInterrupt(TrainerCallback):
    """HF `Trainer` callback: after the step during which SIGINT arrived, save a checkpoint and raise
    `StageInterrupted` naming it."""

    def __init__(self, stage: str):
        self.stage = stage
        self.stopping = False

    def on_step_end(self, args, state, control, **kwargs):
        if interrupt_requested():
            self.stopping = True
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if self.stopping:
            raise StageInterrupted(f"{self.stage}: interrupted at step {state.global_step}; checkpoint saved in "
                                   f"{args.output_dir}/checkpoint-{state.global_step}; the same command resumes it")
        return control
