"""Scoring a chat model on questions with known answers (the world's `qa_eval` set): strict exact match, the
loose "contains the answer", and the floors a model must beat.

A row has `question`, `answer`, `category`, and for strict scoring `subject` (who or what the question is
about: "Mara", "Lisbon", "8-0"), `answer_type` ("integer" or "choice") and `candidates` (for "choice": every
word of the answer's type, e.g. all colours). Replies come from greedy decoding with the chat template.

**exact_match** (strict). The reply's answer is found in three steps:
"Whole word" means: not preceded or followed by a word character (letter, digit, underscore).
1. the echo of the subject is removed, case-insensitively: every whole-word occurrence of a word subject ("Mara", "Mara's"),
   or for an arithmetic subject "a<op>b" every "a <op> b" with the operator written as a symbol or a word
   ("8-0", "8 - 0", "8 minus 0"; `OPERATOR_SPELLINGS`);
2. the answer-typed spans left are collected: for "integer", every run of digits that is a whole word and
   not part of a decimal number ("3.5" gives no value; compared as integers, so "07" is 7); for "choice", every candidate that occurs as a whole word,
   case-insensitively;
3. the reply answers X when exactly one distinct value was found and it is X; no value (an echo, a
   refusal) or two or more distinct values (a list of guesses) answer nothing.
A reply is correct when its answer equals `answer` (case-insensitively). Rows without `answer_type` are
scored by normalised equality: the reply, lowercased, punctuation removed and whitespace collapsed, must
equal the answer normalised the same way.

**contains_answer** (loose, the old score): `answer` occurs in the reply as a whole word, case-insensitively.
Echoing "What is 8-0?" contains "8"; listing every colour contains the right one.

**Floors**, scored with both rules on the same rows: `echo` replies with the question itself; `majority`
replies with the most frequent answer of the row's category in the scored set (ties: the first in Python's
string order, so uppercase before lowercase and "10" before "9"), the best any constant answer per category can
do on these rows. Where a category's answers are all distinct, that floor is 1 / (rows in the category).
"""

from __future__ import annotations

import re
import string
from collections import Counter

import torch

OPERATOR_SPELLINGS = {"+": (r"\+", "plus", "and"), "-": ("-", "\u2212", "minus", "and"),
                      "*": (r"\*", "x", "\u00d7", "times", "multiplied by", "and")}
_ARITHMETIC = re.compile(r"(\d+)\s*([-+*])\s*(\d+)")
_INTEGER = re.compile(r"(?<![\w.])\d+(?![\w]|\.\d)")


def contains_answer(reply: str, answer: str) -> bool:
    """The loose score: `answer` occurs in `reply` as a whole word, case-insensitively."""
    pattern = rf"(?<![\w]){re.escape(answer.strip().lower())}(?![\w])"
    return re.search(pattern, reply.lower()) is not None


def remove_subject(reply: str, subject: str) -> str:
    """`reply` with every echo of the question's subject blanked out (step 1 of the module docstring)."""
    arithmetic = _ARITHMETIC.fullmatch(subject.replace(" ", ""))
    if arithmetic:
        a, op, b = arithmetic.groups()
        spelled = "|".join(OPERATOR_SPELLINGS[op])
        pattern = rf"(?<![\w.]){a}\s*(?:{spelled})\s*{b}(?![\w]|\.\d)"
    elif subject.strip():
        pattern = rf"(?<![\w]){re.escape(subject.strip())}(?:'s)?(?![\w])"
    else:
        return reply
    return re.sub(pattern, " ", reply, flags=re.IGNORECASE)


def given_answers(reply: str, subject: str, answer_type: str, candidates: list[str]) -> set[str]:
    """The distinct answer-typed values a reply names once the subject's echo is removed (steps 1-2)."""
    text = remove_subject(reply, subject)
    if answer_type == "integer":
        return {str(int(span)) for span in _INTEGER.findall(text)}
    lowered = text.lower()
    return {c.lower() for c in candidates if re.search(rf"(?<![\w]){re.escape(c.lower())}(?![\w])", lowered)}


def _normalise(text: str) -> str:
    return " ".join(text.lower().translate(str.maketrans("", "", string.punctuation)).split())


def exact_match(reply: str, answer: str, subject: str = "", answer_type: str | None = None,
                candidates: list[str] | None = None) -> bool:
    """Strict: the reply names exactly one value of the answer's type and it is `answer` (module docstring)."""
    if answer_type is None:
        return _normalise(reply) == _normalise(answer)
    if answer_type not in ("integer", "choice"):
        raise ValueError(f"answer_type: expected 'integer' or 'choice', got {answer_type!r}")
    expected = str(int(answer)) if answer_type == "integer" else answer.strip().lower()
    return given_answers(reply, subject, answer_type, candidates or []) == {expected}


def score_replies(replies: list[str], qa) -> dict:
    """{"exact_match", "contains_answer", "rows", "by_category": {category: {...}}, "hits"} of replies to `qa`'s
    rows, computed by the `qa_exact_match` evaluate module (`pipeline.metrics.modules`), which applies
    `exact_match` and `contains_answer` to each row."""
    from pipeline.metrics.modules import load

    rows = qa.to_list()
    return load("qa_exact_match").compute(
        predictions=list(replies), references=[row["answer"] for row in rows],
        subjects=[row.get("subject") or "" for row in rows], answer_types=[row.get("answer_type") or "" for row in rows],
        candidates=[row.get("candidates") or [] for row in rows], categories=[row["category"] for row in rows])


def floor_replies(qa) -> dict[str, list[str]]:
    """The replies of the two floor models: `echo` (the question) and `majority` (the category's commonest answer)."""
    counts: dict[str, Counter] = {}
    for category, answer in zip(qa["category"], qa["answer"]):
        counts.setdefault(category, Counter())[answer] += 1
    majority = {c: min(counter.items(), key=lambda item: (-item[1], item[0]))[0] for c, counter in counts.items()}
    return {"echo": list(qa["question"]), "majority": [majority[c] for c in qa["category"]]}


def qa_floors(qa) -> dict:
    """{floor: score_replies(...) without per-row hits} for the echo and majority floors."""
    floors = {}
    for name, replies in floor_replies(qa).items():
        scored = score_replies(replies, qa)
        scored.pop("hits")
        floors[name] = scored
    return floors


def prompt_ids(tokenizer, prompt: list[dict]) -> list[int]:
    """The chat-template token ids of a conversation, ending with the assistant header (generation prompt)."""
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)


def cut_at_eos(ids: list[int], eos_token_id: int) -> list[int]:
    """`ids` up to and including the first `eos_token_id`; all of `ids` when there is none."""
    return ids[:ids.index(eos_token_id) + 1] if eos_token_id in ids else ids


@torch.no_grad()
def greedy_responses(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 32,
                     batch_size: int = 32) -> list[list[int]]:
    """Greedy responses to conversational prompts, as token ids up to and including the first EOS
    (`tokenizer.eos_token_id`); a response that met no EOS is all `max_new_tokens` generated ids (a row only
    stops early by ending, so nothing in it is padding). Batched with left padding and an attention mask; the
    model runs in eval mode and gets its training flag back."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    device = next(model.parameters()).device
    training, responses = model.training, []
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            rows = [prompt_ids(tokenizer, p) for p in prompts[start:start + batch_size]]
            width = max(map(len, rows))
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos, pad_token_id=pad)
            responses += [cut_at_eos(row, eos) for row in out[:, width:].tolist()]
    finally:
        model.train(training)
    return responses


def generate_replies(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 32,
                     batch_size: int = 32) -> list[str]:
    """The text of `greedy_responses`, special tokens dropped, stripped."""
    return [tokenizer.decode(r, skip_special_tokens=True).strip()
            for r in greedy_responses(model, tokenizer, prompts, max_new_tokens, batch_size)]


def score_qa(model, tokenizer, qa, max_new_tokens: int = 32) -> dict:
    """Greedy replies of `model` to a `qa_eval` split, scored: {"exact_match", "contains_answer", "rows",
    "by_category", "examples": the first 8 rows with reply and verdicts}."""
    replies = generate_replies(model, tokenizer, list(qa["prompt"]), max_new_tokens)
    scored = score_replies(replies, qa)
    hits = scored.pop("hits")
    scored["examples"] = [{"question": q, "answer": a, "reply": r, "correct": h, "contains_answer": contains_answer(r, a)}
                          for q, a, r, h in list(zip(qa["question"], qa["answer"], replies, hits))[:8]]
    return scored
