"""PPO-ptx (`pipeline.rl.ptx` in `pipeline.rl.trainer`) on tiny random Llamas: the gradient of a micro-step's loss
is the PPO gradient plus ptx_coef × the gradient of transformers' own LM loss on the same blocks; the blocks are a
pure function of (seed, position); a trainer resumed from a checkpoint repeats the next update exactly, with ptx
on and with the value head on the policy (whose weights the checkpoint holds)."""

import copy

import pytest
import torch
from safetensors.torch import load_file

from pipeline.data.packing import pack
from pipeline.rl.ptx import PTXBlocks, causal_lm_loss
from pipeline.rl.trainer import PPOSettings, PPOTrainer
from pipeline.rl.value_head import ValueHead
from tests.unit.rl.test_evaluation import PROMPTS, TEXTS, tiny_lm, tiny_rm, tok, with_eos_bias  # noqa: F401 (tok: fixture)

BLOCK = 16


def ptx_blocks(tok, seed=0) -> PTXBlocks:
    blocks, _ = pack(TEXTS * 3, tok, BLOCK)
    return PTXBlocks(blocks, seed)


def make_trainer(tok, value_model="reward", **settings) -> PPOTrainer:
    """Fresh tiny models, the same for the same arguments. 4 prompts per update, micro-batches of 2."""
    settings = PPOSettings(**{"rollout_batch_size": 4, "mini_batch_size": 4, "gradient_accumulation_steps": 2,
                              "ppo_epochs": 2, "max_new_tokens": 8, "learning_rate": 1e-3, **settings})
    policy = with_eos_bias(tiny_lm(tok, seed=0), 4.0)  # responses of different lengths
    value = tiny_rm(tok, seed=3) if value_model == "reward" else ValueHead.for_policy(policy)
    return PPOTrainer(settings, policy, value, tiny_rm(tok, seed=1), tok, reference=copy.deepcopy(policy),
                      total_updates=4, seed=0, ptx=ptx_blocks(tok) if settings.ptx_coef > 0 else None)


def test_blocks_are_a_pure_function_of_seed_and_position(tok):
    source = ptx_blocks(tok)
    n = len(source.blocks)
    assert n >= 4 and source.block_size == BLOCK
    first_pass = source.rows(0, n)
    assert sorted(map(tuple, first_pass.tolist())) == sorted(map(tuple, source.blocks.tolist()))  # a permutation
    across = source.rows(n - 2, 4)  # the last two of pass 0, the first two of pass 1
    assert torch.equal(across[:2], first_pass[-2:]) and torch.equal(across[2:], source.rows(n, 2))
    fresh = ptx_blocks(tok)
    assert torch.equal(fresh.rows(n + 1, 3), source.rows(n + 1, 3))  # no hidden cursor: any order of reads
    assert torch.equal(fresh.rows(0, n), first_pass)
    assert not torch.equal(ptx_blocks(tok, seed=1).rows(0, n), first_pass)
    assert first_pass.dtype == torch.int64


def test_causal_lm_loss_is_transformers_next_token_loss(tok):
    model, ids = tiny_lm(tok), ptx_blocks(tok).rows(0, 3)
    with torch.no_grad():
        torch.testing.assert_close(causal_lm_loss(model, ids), model(input_ids=ids, labels=ids).loss)


def gradients(module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for name, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("value_model", ["reward", "policy_head"])
def test_ptx_gradient_is_the_ppo_gradient_plus_coef_times_the_lm_gradient(tok, value_model):
    coef = 0.37
    trainer = make_trainer(tok, value_model, ptx_coef=coef, mini_batch_size=4, gradient_accumulation_steps=1)
    rollout = trainer.rollout(PROMPTS[:4], list(range(4)))
    advantages, returns, _ = trainer.advantages(rollout)
    batch = rollout.select(torch.arange(4))
    width, tokens = batch.responses.shape[1], rollout.lengths.sum().float()
    ptx_ids = trainer.ptx_rows(micro_step=0, rows=4)
    model, policy = trainer.model, trainer.unwrapped.policy
    model.train()

    def micro_step_gradients(ptx):
        model.zero_grad()
        loss, stats = trainer.micro_loss(batch, advantages[:, :width], returns[:, :width], tokens, ptx)
        loss.backward()
        return gradients(model), stats

    total, stats = micro_step_gradients(ptx_ids)
    ppo, ppo_stats = micro_step_gradients(None)
    model.zero_grad()
    lm_loss = policy(input_ids=ptx_ids, labels=ptx_ids).loss  # computed apart, by transformers
    lm_loss.backward()
    lm = {f"policy.{name}": g for name, g in gradients(policy).items()}

    assert stats["ptx_loss"] == pytest.approx(lm_loss.item(), rel=1e-6) and "ptx_loss" not in ppo_stats
    assert {k: v for k, v in stats.items() if k != "ptx_loss"} == ppo_stats
    assert lm.keys() < total.keys()
    for name, grad in total.items():
        expected = ppo[name] + coef * lm.get(name, torch.zeros_like(grad))
        torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7, msg=name)
    assert any(lm[name].abs().sum() > 0 and not torch.allclose(total[name], ppo[name]) for name in lm)


def test_ptx_rows_depend_on_update_micro_step_and_process_only(tok):
    trainer = make_trainer(tok, ptx_coef=0.5)
    s = trainer.settings
    assert (s.micro_batch_size, s.micro_steps_per_update) == (2, 4)  # 2 epochs × 4 episodes / 2 per micro-batch
    trainer.step_count = 3
    rows = trainer.ptx_rows(micro_step=1, rows=2)
    assert torch.equal(rows, trainer.ptx.rows((3 * 4 + 1) * 2, 2))


@pytest.mark.parametrize("value_model", ["reward", "policy_head"])
def test_resumed_trainer_repeats_the_next_update_with_ptx(tok, tmp_path, value_model):
    episodes = [list(range(4 * u, 4 * u + 4)) for u in range(2)]
    first = make_trainer(tok, value_model, ptx_coef=0.5)
    first.step(PROMPTS[:4], episodes[0])
    first.save(tmp_path / "checkpoint-1", extra={"history": []})
    saved = {k: v.clone() for k, v in first.unwrapped.state_dict().items()}
    expected = first.step(PROMPTS[1:5], episodes[1])

    resumed = make_trainer(tok, value_model, ptx_coef=0.5)
    if value_model == "policy_head":
        assert "value_head.weight" in load_file(tmp_path / "checkpoint-1" / "model.safetensors")
        assert not resumed.unwrapped.value_head.weight.any() and saved["value_head.weight"].any()
    resumed.load(tmp_path / "checkpoint-1")
    assert resumed.step_count == 1
    for name, tensor in resumed.unwrapped.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    again = resumed.step(PROMPTS[1:5], episodes[1])

    assert "ptx_loss" in expected and expected["ptx_loss"] > 0
    assert expected.keys() == again.keys()
    for key in expected.keys() - {"episodes_per_second"}:  # wall-clock
        assert again[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
    final = first.unwrapped.state_dict()
    for name, tensor in resumed.unwrapped.state_dict().items():
        torch.testing.assert_close(tensor, final[name], rtol=0, atol=1e-7, msg=name)
