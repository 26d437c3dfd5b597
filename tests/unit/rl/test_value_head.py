"""The value head on the policy (`pipeline.rl.value_head`): its values are the head applied by hand to the final
normed hidden state of a separate forward pass (captured at the backbone's last norm), on Llama, GPT-2 and a peft
LoRA policy; it starts at zero, saves apart from the policy and loads back."""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel

from pipeline.rl.rollout import collect, encode_prompts, episode_generators, position_ids, response_forward
from pipeline.rl.value_head import PolicyWithValueHead, ValueHead, load_value_head, save_value_head
from tests.unit.rl.test_evaluation import PROMPTS, tiny_lm, tiny_rm, tok, with_eos_bias  # noqa: F401 (tok: fixture)


def tiny_gpt2(tok, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)
    return GPT2LMHeadModel(config).eval()


def random_head(policy, seed=5) -> ValueHead:
    """A head with non-zero weights, so that its values show what it reads (a fresh one is all zeros)."""
    head = ValueHead.for_policy(policy)
    torch.manual_seed(seed)
    torch.nn.init.normal_(head.weight)
    torch.nn.init.normal_(head.bias)
    return head


def final_norm(policy):
    """The module whose output is the backbone's final normed hidden state (what the LM head reads)."""
    model = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
    backbone = getattr(model, model.base_model_prefix)  # LlamaModel, GPT2Model
    return backbone.norm if hasattr(backbone, "norm") else backbone.ln_f


def by_hand(policy, head, ids, mask, response_width):
    """Logits from `response_forward` and the head on the final norm's output, captured with a hook on that norm
    in a separate forward pass (every column), sliced to the columns P-1 .. P+R-2."""
    captured = {}
    hook = final_norm(policy).register_forward_hook(lambda module, args, output: captured.update(hidden=output))
    try:
        policy(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask))
    finally:
        hook.remove()
    hidden = captured["hidden"][:, -response_width - 1: -1]
    return response_forward(policy, ids, mask, response_width), head(hidden).squeeze(-1)


def batch(tok):
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")  # left-padded: positions count from each row's first token
    return ids, mask, 4  # the last 4 prompt tokens play the response


@pytest.mark.parametrize("make_policy", [tiny_lm, tiny_gpt2], ids=["llama", "gpt2"])
def test_values_are_the_head_on_the_final_normed_hidden_state(tok, make_policy):
    policy = make_policy(tok)
    both = PolicyWithValueHead(policy, random_head(policy)).eval()
    ids, mask, width = batch(tok)
    with torch.no_grad():
        logits, values, ptx_loss = both(ids, mask, width)
        expected_logits, expected_values = by_hand(policy, both.value_head, ids, mask, width)
        torch.testing.assert_close(values, expected_values, rtol=0, atol=1e-5)
        torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(both.values(ids, mask, width), values, rtol=0, atol=0)
    assert ptx_loss is None and values.shape == (len(PROMPTS), width) and values.dtype == torch.float32
    assert values.std() > 0  # a real signal was compared, not zeros


def test_lora_policy_keeps_the_head_trainable_and_its_base_as_reference(tok):
    base = tiny_lm(tok)
    policy = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():  # peft starts B at zero (the adapter a no-op): move it, so adapter on and off differ
        for name, parameter in policy.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    both = PolicyWithValueHead(policy, random_head(policy))
    trainable = {name for name, p in both.named_parameters() if p.requires_grad}
    assert {"value_head.weight", "value_head.bias"} <= trainable
    assert trainable - {"value_head.weight", "value_head.bias"} and all("lora_" in n for n in trainable if "value_head" not in n)
    ids, mask, width = batch(tok)
    logits, values, _ = both(ids, mask, width)
    with torch.no_grad():
        expected_logits, expected_values = by_hand(policy, both.value_head, ids, mask, width)
        with policy.disable_adapter():
            base_logits = response_forward(policy, ids, mask, width)
    torch.testing.assert_close(values, expected_values, rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, expected_logits, rtol=0, atol=1e-5)
    assert not torch.allclose(logits, base_logits, atol=1e-3)  # the adapter is on in training, off for the reference
    (values.sum() + logits.float().logsumexp(-1).sum()).backward()
    grads = {name: p.grad for name, p in both.named_parameters() if p.requires_grad}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), [n for n, g in grads.items() if g is None]


def test_fresh_head_values_zero_and_collect_uses_it(tok):
    policy, reward = with_eos_bias(tiny_lm(tok, seed=0), 4.0), tiny_rm(tok, seed=1)
    both = PolicyWithValueHead(policy, ValueHead.for_policy(policy)).eval()
    assert not both.value_head.weight.any() and not both.value_head.bias.any()
    ids, mask = encode_prompts(tok, PROMPTS, "cpu")
    rollout = collect(both, tiny_lm(tok, seed=2), reward, tok, ids, mask, max_new_tokens=6,
                      temperature=0.7, top_p=1.0, generators=episode_generators(0, list(range(len(PROMPTS))), "cpu"))
    assert (rollout.values == 0).all()
    both.value_head = random_head(policy)
    with torch.no_grad():
        values = both.values(rollout.query_responses, rollout.attention_mask, rollout.responses.shape[1])
        _, expected = by_hand(policy, both.value_head, rollout.query_responses, rollout.attention_mask,
                              rollout.responses.shape[1])
    torch.testing.assert_close(values, expected, rtol=0, atol=1e-5)


def test_save_and_load_round_trip(tmp_path, tok):
    head = random_head(tiny_lm(tok))
    save_value_head(tmp_path / "value", dict(head.state_dict()))
    assert sorted(p.name for p in (tmp_path / "value").iterdir()) == ["value_head.json", "value_head.safetensors"]
    loaded = load_value_head(tmp_path / "value")
    assert torch.equal(loaded.weight, head.weight) and torch.equal(loaded.bias, head.bias)
