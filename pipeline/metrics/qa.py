"""Exact-match scoring of a chat model on questions with known answers (the world's `qa_eval` set).

A reply counts as correct when the canonical short answer appears in it as a whole word, case-insensitive:
"Mara is 34." answers "34"; "It is 340." does not. Replies come from greedy decoding with the chat template.
"""

from __future__ import annotations

import re

import torch


def exact_match(reply: str, answer: str) -> bool:
    pattern = rf"(?<![\w]){re.escape(answer.strip().lower())}(?![\w])"
    return re.search(pattern, reply.lower()) is not None


@torch.no_grad()
def generate_replies(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 32,
                     batch_size: int = 32) -> list[str]:
    """Greedy replies to conversational prompts, batched with left padding; stops at the chat EOS."""
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    model.eval()
    replies = []
    try:
        for start in range(0, len(prompts), batch_size):
            texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
                     for p in prompts[start:start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            replies += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [r.strip() for r in replies]


def score_qa(model, tokenizer, qa, max_new_tokens: int = 32) -> dict:
    """{"exact_match", "by_category": {category: accuracy}, "examples": [...]} on a `qa_eval` split."""
    replies = generate_replies(model, tokenizer, list(qa["prompt"]), max_new_tokens)
    hits = [exact_match(r, a) for r, a in zip(replies, qa["answer"])]
    by_category: dict[str, list[bool]] = {}
    for category, hit in zip(qa["category"], hits):
        by_category.setdefault(category, []).append(hit)
    return {
        "exact_match": sum(hits) / max(len(hits), 1),
        "by_category": {c: sum(v) / len(v) for c, v in sorted(by_category.items())},
        "examples": [{"question": q, "answer": a, "reply": r, "correct": h}
                     for q, a, r, h in list(zip(qa["question"], qa["answer"], replies, hits))[:8]],
    }
