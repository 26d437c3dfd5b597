"""Two models' work side by side on a CPU: one on the calling thread, one on a second thread.

Ours (PPO's `value_thread`): a thread pool of one from the standard library; what it adds is the split of the
cores and the thread-local state a job must not lose. Why it pays on a CPU: at the sizes PPO trains on there, a
second intra-op thread speeds each small matrix product up little, while two independent models (the policy
and a separate value model) keep two cores busy: each op releases the GIL while it computes. On the tiny
recipe's models (2-core VM, one measurement each, sides interleaved): the forward and backward of the policy and
of the value model on 8 episodes took 112 ms one after another on one thread, 94 ms with two intra-op threads,
65 ms side by side with one thread each; a whole PPO update of 16 episodes, in two runs, 530 and 586 ms with two
intra-op threads, 495 and 471 ms with its epochs side by side (epochs 292 instead of 355, 305 instead of 393 ms). Not used for the rollout's forward passes (the
reference beside the value and reward models) or for sampling two halves of a batch: no gain there, and sampling
got slower (the decode loop is bound by Python, which holds the GIL).

Thread-local state that a job on the side thread would otherwise lose is carried over: grad mode
(`torch.no_grad()` of the caller holds on the side thread too). Autocast is thread-local as well and is not
carried over: side-thread jobs are for CPU fp32 processes (the PPO trainer refuses `value_thread` elsewhere).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, wait
from typing import Callable, TypeVar

import torch

Here = TypeVar("Here")
There = TypeVar("There")


class SideThread:
    """`run(here, there)` returns `(here(), there())`, with `there` on a second thread while `here` runs on the
    calling one. The process's `threads` torch threads (default `torch.get_num_threads()`) are shared: each side
    runs its ops with `threads // 2` intra-op threads (at least 1) while both run; the caller's count is restored
    after."""

    def __init__(self, threads: int | None = None):
        self.threads = max(1, (threads or torch.get_num_threads()) // 2)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="side", initializer=torch.set_num_threads,
                                       initargs=(self.threads,))

    def run(self, here: Callable[[], Here], there: Callable[[], There]) -> tuple[Here, There]:
        """Both results; when either raises, the exception comes after both have finished (here's first)."""
        grad = torch.is_grad_enabled()

        def job():
            with torch.set_grad_enabled(grad):
                return there()

        outer = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            future = self.pool.submit(job)
            try:
                first = here()
            except BaseException:
                wait([future])  # nothing of `there` may still run when the caller sees the error
                raise
            return first, future.result()
        finally:
            torch.set_num_threads(outer)

    def close(self) -> None:
        self.pool.shutdown(wait=True)

