"""Intermediate policies for `benchmarks/ppo_vs_trl.py --snapshot-every K`: every peer saves its policy after
updates K, 2K, ... (before the last; the final policy is `--save`'s), so the benchmark can score each one and read
every training at the same KL to SFT (`benchmarks/equal_kl.py`).

Imported by the peers in both virtualenvs (TRL 1.12's and ours), so it imports neither `pipeline` nor `trl`.
The seconds spent saving are counted apart (`seconds`), and each peer takes them out of its timed seconds, so the
episodes/s columns do not pay for the snapshots.
"""

from __future__ import annotations

import time
from pathlib import Path


def add_snapshot_arguments(parser) -> None:
    parser.add_argument("--snapshot-every", type=int, default=0, help="also save the policy after every K-th update (0: never)")
    parser.add_argument("--snapshots", type=Path, default=None, help="the folder for those policies (update-<u>/)")


class Snapshots:
    """Saves `policy.save_pretrained(<folder>/update-<u>)` when `due(u)`, on the main process only."""

    def __init__(self, folder: Path | None, every: int, total_updates: int, is_main_process: bool = True):
        self.folder, self.every, self.total, self.is_main = folder, every, total_updates, is_main_process
        self.saved: list[dict] = []
        self.seconds = 0.0

    def due(self, update: int) -> bool:
        """Update `update` (1-based, counted over the whole training) is a snapshot: a multiple of `every`,
        before the last update."""
        return bool(self.every) and self.folder is not None and update % self.every == 0 and update < self.total

    def save(self, policy, update: int) -> None:
        if not self.due(update) or not self.is_main:
            return
        start = time.perf_counter()
        path = self.folder / f"update-{update:05d}"
        getattr(policy, "module", policy).save_pretrained(path)  # a DDP wrapper's module: the policy itself
        self.saved.append({"update": update, "path": str(path)})
        self.seconds += time.perf_counter() - start

    def callback(self, policy_of):
        """A transformers `TrainerCallback` that saves `policy_of(model)` at the end of each due optimizer step
        (`state.global_step`), for trainers built on `Trainer`'s callbacks (TRL 1.12's PPO, TRL's RLOO)."""
        from transformers import TrainerCallback

        snapshots = self

        class SaveSnapshots(TrainerCallback):
            def on_step_end(self, args, state, control, model=None, **kwargs):
                snapshots.save(policy_of(getattr(model, "module", model)), state.global_step)

        return SaveSnapshots()
