"""`value_thread`: the value model's work on a second thread gives the same update as one thread doing both, and
`SideThread` runs its two jobs on two threads, keeps the caller's grad mode, and never returns (or raises) while
a job still runs."""

import threading
import time

import pytest
import torch

from pipeline.rl.side_thread import SideThread
from tests.unit.rl.test_evaluation import PROMPTS, tok  # noqa: F401 (tok: fixture)
from tests.unit.rl.test_ptx import make_trainer


def test_the_two_jobs_run_on_two_threads_and_both_results_come_back():
    side = SideThread()
    here, there = side.run(threading.get_ident, threading.get_ident)
    assert here == threading.get_ident() and there != here
    assert side.run(lambda: 1, lambda: 2) == (1, 2)
    side.close()


def test_the_jobs_overlap_in_time():
    """Each job waits for the other to start: one after the other, this would time out."""
    started = [threading.Event(), threading.Event()]

    def job(mine: int):
        started[mine].set()
        return started[1 - mine].wait(timeout=10)

    assert SideThread().run(lambda: job(0), lambda: job(1)) == (True, True)


def test_the_side_thread_keeps_the_callers_grad_mode():
    weight = torch.ones(3, requires_grad=True)
    side = SideThread()
    with torch.no_grad():
        here, there = side.run(lambda: weight * 2, lambda: weight * 3)
    assert not here.requires_grad and not there.requires_grad
    here, there = side.run(lambda: weight * 2, lambda: weight * 3)
    assert here.requires_grad and there.requires_grad


def test_an_error_here_comes_after_the_side_job_finished_and_threads_are_restored():
    finished = []

    def slow():
        time.sleep(0.2)
        finished.append(True)

    def fail():
        raise RuntimeError("here failed")

    threads = torch.get_num_threads()
    side = SideThread(threads=4)
    assert side.threads == 2
    with pytest.raises(RuntimeError, match="here failed"):
        side.run(fail, slow)
    assert finished == [True] and torch.get_num_threads() == threads


def test_value_thread_makes_the_same_updates_as_one_thread(tok):
    """Two updates with micro-batches and gradient accumulation: every parameter and statistic equal to the bit
    (one torch thread each side, as one thread alone: the same kernels in the same order per model)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = []
        for value_thread in (False, True):
            torch.manual_seed(0)  # the mini-batch order
            trainer = make_trainer(tok, value_thread=value_thread)
            stats = [trainer.step(PROMPTS[:4], list(range(4))), trainer.step(PROMPTS[1:5], list(range(4, 8)))]
            results.append((stats, trainer.unwrapped.state_dict()))
    finally:
        torch.set_num_threads(threads)
    (stats_one, state_one), (stats_two, state_two) = results
    assert (trainer.side is not None) and state_one.keys() == state_two.keys()
    for name in state_one:
        assert torch.equal(state_one[name], state_two[name]), name
    moved = make_trainer(tok).unwrapped.state_dict()
    assert any(not torch.equal(moved[name], state_two[name]) for name in moved)  # the updates changed the models
    drop = {"episodes_per_second"}
    assert [{k: v for k, v in s.items() if k not in drop} for s in stats_one] == \
           [{k: v for k, v in s.items() if k not in drop} for s in stats_two]


def test_value_thread_is_refused_with_a_value_head(tok):
    with pytest.raises(ValueError, match="value_thread: a value head on the policy has no separate model"):
        make_trainer(tok, value_model="policy_head", value_thread=True)


def test_auto_is_on_where_the_value_thread_works_and_has_threads_to_split(tok):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert make_trainer(tok, value_thread="auto").side is not None
        assert make_trainer(tok, value_thread="auto", value_model="policy_head").side is None  # no error either
        assert make_trainer(tok, value_thread=False).side is None
        torch.set_num_threads(1)
        assert make_trainer(tok, value_thread="auto").side is None
        assert make_trainer(tok, value_thread=True).side.threads == 1
    finally:
        torch.set_num_threads(threads)
