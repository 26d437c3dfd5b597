import pytest
from transformers import AutoTokenizer

from pipeline.models.tokenizer import IM_END, bytes_per_token, train_bpe

TEXTS = [
    "Mara lives in Lisbon. Mara is 34 years old and works as a baker.",
    "Tom has a cat named Pip. Tom's favourite colour is green.",
    "Seven plus five is twelve. 7 + 5 = 12.",
] * 50


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tok = train_bpe(TEXTS, vocab_size=400)
    folder = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)  # what later stages load


@pytest.mark.parametrize("text", [
    "plain ascii", "  leading and trailing spaces  ", "tabs\tand\nnew\n\nlines\r\n",
    "naïve café, Zürich,日本語, emoji 🙂👍🏽", "e\u0301 (combining accent, not normalised)", "",
    "<|im_end|> looks special but is typed text",
])
def test_round_trip(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_special_tokens_and_compression(tokenizer):
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == "<|endoftext|>"
    assert len(tokenizer) <= 400
    assert bytes_per_token(tokenizer, TEXTS[:3]) > 2.0  # merges were learned: well above 1 byte per token


def test_chat_template_marks_only_assistant_tokens(tokenizer):
    messages = [{"role": "user", "content": "How old is Mara?"}, {"role": "assistant", "content": "Mara is 34."},
                {"role": "user", "content": "And Tom?"}, {"role": "assistant", "content": "Tom is 41."}]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    text = tokenizer.decode(ids)
    assert text == ("<|im_start|>user\nHow old is Mara?<|im_end|>\n<|im_start|>assistant\nMara is 34.<|im_end|>\n"
                    "<|im_start|>user\nAnd Tom?<|im_end|>\n<|im_start|>assistant\nTom is 41.<|im_end|>\n")
    trained = tokenizer.decode([i for i, m in zip(ids, mask) if m])
    assert trained == "Mara is 34.<|im_end|>Tom is 41.<|im_end|>"  # answers and their EOS, nothing of the user
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
