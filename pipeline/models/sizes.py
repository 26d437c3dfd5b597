"""Stock transformers architectures sized by name: no custom model code, so every model we train loads with
vanilla `AutoModelForCausalLM.from_pretrained` (and `AutoModelForSequenceClassification` for reward models).

    build_config("tiny", "llama", vocab_size=2048, max_position_embeddings=256)
"""

from __future__ import annotations

from transformers import GPT2Config, LlamaConfig, PretrainedConfig

from pipeline.errors import PipelineError

# name: (layers, hidden, heads, mlp width); parameters (gpt2 / llama) with a 4k vocabulary, tied embeddings
SIZES = {
    "nano": (2, 64, 4, 256),        # 0.4M: unit tests
    "micro": (2, 128, 4, 512),      # 0.95M / 1.05M: the tiny recipe (learns its 30 people in ~3 min on 2 CPU cores)
    "tiny": (4, 128, 4, 512),       # 1.4M / 1.6M: nanoGPT's CPU shape (shakespeare_cpu, world_cpu, reward_real)
    "mini": (6, 256, 8, 1024),      # 5.9M / 7.3M: CPU recipes (TinyShakespeare)
    "small": (12, 768, 12, 3072),   # 88M / 116M: GPT-2 small, one GPU
    "base": (24, 1024, 16, 4096),   # 307M / 407M: GPT-2 medium, one or several GPUs
}
ARCHITECTURES = ("llama", "gpt2")


def build_config(size: str, architecture: str, vocab_size: int, max_position_embeddings: int,
                 pad_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
                 dropout: float = 0.0) -> PretrainedConfig:
    if size not in SIZES:
        raise PipelineError(f"pretrain.model_size: unknown size {size!r} (valid: {', '.join(SIZES)})")
    layers, hidden, heads, mlp = SIZES[size]
    common = dict(vocab_size=vocab_size, pad_token_id=pad_token_id, eos_token_id=eos_token_id, tie_word_embeddings=True)
    if architecture == "llama":
        return LlamaConfig(hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                           num_attention_heads=heads, num_key_value_heads=heads,
                           max_position_embeddings=max_position_embeddings, attention_dropout=dropout,
                           rope_theta=10000.0, **common)
    if architecture == "gpt2":
        return GPT2Config(n_embd=hidden, n_inner=mlp, n_layer=layers, n_head=heads, n_positions=max_position_embeddings,
                          resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=eos_token_id, **common)
    raise PipelineError(f"pretrain.architecture: unknown architecture {architecture!r} (valid: {', '.join(ARCHITECTURES)})")
