"""`benchmarks/equal_kl.py` (gain at equal KL) and `benchmarks/peers/snapshots.py` (the policies it reads),
against values worked out by hand."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).parents[3] / "benchmarks"


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


equal_kl = load("equal_kl", BENCHMARKS / "equal_kl.py")
snapshots = load("snapshots", BENCHMARKS / "peers" / "snapshots.py")


def test_gain_at_a_budget_is_linear_between_the_saved_policies_around_it():
    trajectory = [(0.1, 0.05), (0.3, 0.15)]
    assert equal_kl.gain_at(trajectory, 0.2) == pytest.approx(0.10)  # 0.05 + 0.1 · 0.10 / 0.2
    assert equal_kl.gain_at(trajectory, 0.05) == pytest.approx(0.025)  # from the SFT origin (0, 0): 0.05 · 0.05 / 0.1
    assert equal_kl.gain_at(trajectory, 0.3) == pytest.approx(0.15)  # on a saved policy: its own gain
    assert equal_kl.gain_at(trajectory, 0.0) == 0.0  # the SFT policy itself
    assert equal_kl.gain_at(trajectory, 0.31) is None  # never got that far


def test_the_first_crossing_counts_when_the_kl_goes_back_down():
    trajectory = [(0.2, 0.1), (0.1, 0.3), (0.4, 0.2)]
    assert equal_kl.gain_at(trajectory, 0.15) == pytest.approx(0.075)  # origin → (0.2, 0.1): 0.15 · 0.1 / 0.2
    assert equal_kl.gain_at(trajectory, 0.3) == pytest.approx(0.3 - 0.2 * 0.1 / 0.3)  # (0.1, 0.3) → (0.4, 0.2)


def test_the_common_budget_is_the_shortest_reach_of_any_training():
    first = [[(0.1, 1.0), (0.3, 2.0)]]
    second = [[(0.25, 0.0)], [(0.5, 1.0), (0.2, 1.0)]]
    assert [equal_kl.reach(t) for t in first + second] == [0.3, 0.25, 0.5]
    assert equal_kl.common_budget(first, second) == 0.25


def test_side_mean_and_the_bootstrap_interval_of_the_difference():
    mean, spread = equal_kl.side_mean([0.1, 0.3, 0.5])
    assert mean == pytest.approx(0.3) and spread == pytest.approx(1.96 * 0.2 / 3 ** 0.5)
    assert equal_kl.side_mean([0.4]) == (0.4, None)
    assert equal_kl.difference([1.0, 1.0, 1.0], [0.5, 0.5]) == pytest.approx((0.5, 0.5, 0.5))  # no spread: no width
    # a = [0, 1]: a resampled mean is 0, 0.5 or 1 with chance 1/4, 1/2, 1/4, so its 2.5th and 97.5th percentiles
    # are 0 and 1; b = [0] always 0.
    assert equal_kl.difference([0.0, 1.0], [0.0]) == pytest.approx((0.5, 0.0, 1.0))


def test_compare_at_reads_both_sides_and_refuses_a_budget_one_training_never_reached():
    first = [[(0.2, 0.2)], [(0.2, 0.4)]]  # at 0.1: 0.1 and 0.2
    second = [[(0.1, 0.05)], [(0.4, 0.4)]]  # at 0.1: 0.05 and 0.1
    found = equal_kl.compare_at(0.1, first, second)
    assert found["gains"] == [pytest.approx([0.1, 0.2]), pytest.approx([0.05, 0.1])]
    assert found["difference"] == pytest.approx(0.15 - 0.075)
    with pytest.raises(ValueError, match="second side has trainings that never reached it"):
        equal_kl.compare_at(0.2, first, second)


class Policy:
    def __init__(self):
        self.saved = []

    def save_pretrained(self, path):
        Path(path).mkdir(parents=True)
        self.saved.append(Path(path).name)


def test_snapshots_are_every_kth_update_before_the_last_on_the_main_process_only(tmp_path):
    policy, kept = Policy(), snapshots.Snapshots(tmp_path, every=2, total_updates=6)
    for update in range(1, 7):
        kept.save(SimpleNamespace(module=policy), update)  # a DDP wrapper: its module is saved
    assert policy.saved == ["update-00002", "update-00004"]  # 6 is the last update: the final policy, saved apart
    assert [s["update"] for s in kept.saved] == [2, 4] and kept.seconds > 0
    other = Policy()
    for update in range(1, 7):
        snapshots.Snapshots(tmp_path / "rank1", every=2, total_updates=6, is_main_process=False).save(other, update)
    assert other.saved == [] and not (tmp_path / "rank1").exists()
    assert not snapshots.Snapshots(tmp_path, every=0, total_updates=6).due(2)  # off


def test_the_trainer_callback_saves_the_policy_inside_the_model_at_due_steps(tmp_path):
    policy, kept = Policy(), snapshots.Snapshots(tmp_path, every=3, total_updates=10)
    callback = kept.callback(lambda wrapper: wrapper.policy)
    for step in range(1, 11):
        callback.on_step_end(None, SimpleNamespace(global_step=step), None, model=SimpleNamespace(policy=policy))
    assert policy.saved == ["update-00003", "update-00006", "update-00009"]
