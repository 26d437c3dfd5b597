"""The KL coefficient (beta) of the per-token reward -beta·KL(policy ‖ ref): fixed, or adapted to a target KL.

Ours, not imported: TRL removed its controllers with the old PPOTrainer, and its 1.12 PPO had a fixed
`kl_coef` only. The adaptive rule is Ziegler et al. 2019 (section 2.2, lm-human-preferences):

    error = clip(current_kl / target - 1, -0.2, 0.2)        beta <- beta · (1 + error · n_steps / horizon)

so beta grows while the policy drifts further than `target` nats from the reference and shrinks while it
stays closer, by at most 20% per `horizon` steps. `n_steps` is how many steps the measurement stands for
(Ziegler: the episodes in the batch).

Both controllers save and restore their whole state (`state_dict`/`load_state_dict`, plain Python numbers so
it can go in any checkpoint): a resumed run must continue with the coefficient it had, not the initial one.
"""

from __future__ import annotations

import math


def _number(x, name: str) -> float:
    value = float(x)  # accepts Python numbers and one-element tensors
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


class FixedKLController:
    """A constant coefficient; `update` does nothing."""

    kind = "fixed"

    def __init__(self, kl_coef: float):
        self.value = _number(kl_coef, "kl_coef")
        if self.value < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.value}")

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value}

    def load_state_dict(self, state: dict) -> None:
        _check_kind(state, self.kind)
        self.value = _number(state["value"], "value")


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller steering the measured KL towards `target` (nats per response)."""

    kind = "adaptive"

    def __init__(self, init_kl_coef: float, target: float, horizon: int):
        self.value = _number(init_kl_coef, "init_kl_coef")
        self.target = _number(target, "target")
        self.horizon = _number(horizon, "horizon")
        if self.value < 0 or self.target <= 0 or self.horizon <= 0:
            raise ValueError(
                f"need init_kl_coef >= 0, target > 0, horizon > 0; got {self.value}, {self.target}, {self.horizon}"
            )

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move the coefficient after a batch whose mean KL was `current_kl`; returns the new value."""
        error = min(max(_number(current_kl, "current_kl") / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"kind": self.kind, "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        """Restore value, target and horizon (the checkpoint wins, as with torch optimizers)."""
        _check_kind(state, self.kind)
        self.value = _number(state["value"], "value")
        self.target = _number(state["target"], "target")
        self.horizon = _number(state["horizon"], "horizon")


def _check_kind(state: dict, kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(f"state is for a {state.get('kind')!r} KL controller, this one is {kind!r}")
