"""`max_grad_norm`: the gradient the optimizer steps with has norm min(raw norm, max_grad_norm); 0 disables the
clipping (TRL 1.12's PPO loop never clipped, and the benchmark against it runs ours that way)."""

import pytest
import torch

from pipeline.rl.trainer import PPOSettings
from tests.unit.rl.test_evaluation import PROMPTS, tok  # noqa: F401 (tok: fixture)
from tests.unit.rl.test_ptx import make_trainer


def norms_seen_by_the_optimizer(tok, max_grad_norm: float) -> list[float]:
    """The global gradient norm (policy and value together) at each optimizer step of one update."""
    trainer = make_trainer(tok, max_grad_norm=max_grad_norm, gradient_accumulation_steps=1, ppo_epochs=1)
    parameters = [p for p in trainer.model.parameters() if p.requires_grad]
    step, norms = trainer.optimizer.step, []

    def recording_step(*args, **kwargs):
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))))
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.step(PROMPTS[:4], list(range(4)))
    return norms


def test_the_optimizer_sees_a_clipped_gradient_and_zero_disables_the_clip(tok):
    raw = norms_seen_by_the_optimizer(tok, 0.0)
    limit = raw[0] / 10
    clipped = norms_seen_by_the_optimizer(tok, limit)
    assert len(raw) == len(clipped) == 1 and raw[0] > 0
    assert clipped[0] == pytest.approx(limit, rel=1e-4)  # the same rollout and loss (same seeds), scaled down
    assert norms_seen_by_the_optimizer(tok, raw[0] * 10) == pytest.approx(raw, rel=1e-6)  # under the limit: as is


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_max_grad_norm_must_be_a_finite_number_at_least_zero(bad):
    with pytest.raises(ValueError, match=r"max_grad_norm: expected a finite number >= 0 \(0 disables\)"):
        PPOSettings(max_grad_norm=bad).check_ppo()
