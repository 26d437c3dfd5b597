"""Reward accuracy scores exactly the held-out pairs TRL's RewardTrainer would keep, tokenized as it tokenizes
them, whole; pairs longer than max_length are skipped and counted, never truncated into ties."""

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from pipeline.metrics.reward import held_out_pairs, score_pairs
from pipeline.models.sizes import build_config
from pipeline.models.tokenizer import train_bpe
from pipeline.stages.reward import Config, evaluate

TEXTS = ["Mara lives in Lisbon and works as a baker.", "Tom has a cat named Pip.", "What is seven plus five?",
         "Seven plus five is twelve.", "Where does Mara live?", "Mara lives in Lisbon."] * 40
MAX_LENGTH = 40


def pair(question: str, chosen: str, rejected: str, kind: str = "wrong_fact") -> dict:
    return {"prompt": [{"role": "user", "content": question}], "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "kind": kind}


SHORT = [pair("Where does Mara live?", "Mara lives in Lisbon.", "Mara lives in Tom."),
         pair("What is seven plus five?", "Seven plus five is twelve.", "Seven plus five is Pip.", "wrong_arithmetic")]
RAMBLE = " ".join(["Mara lives in Lisbon and works as a baker."] * 12)  # far longer than MAX_LENGTH tokens
# chosen and rejected agree on their first MAX_LENGTH tokens and differ only after them
LONG = [pair("Where does Mara live?", RAMBLE + " Lisbon.", RAMBLE + " Tom.", "rambling"),
        pair("What is seven plus five?", RAMBLE + " twelve.", RAMBLE + " Pip.", "rambling")]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    train_bpe(TEXTS, vocab_size=320).save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)  # as the stages load it


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = build_config("nano", "llama", vocab_size=len(tokenizer), max_position_embeddings=512,
                          pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    config.num_labels = 1
    return AutoModelForSequenceClassification.from_config(config)


def trainer_for(model, tokenizer, rows, tmp_path, max_length=MAX_LENGTH):
    """The reward stage's trainer (its Config, TRL's RewardTrainer), on `rows` as train and eval data."""
    from trl import RewardTrainer

    args = Config(output_dir=str(tmp_path), max_length=max_length, use_cpu=True, report_to=[], eval_strategy="no",
                  per_device_eval_batch_size=len(rows))
    ds = datasets.Dataset.from_list(rows)
    return RewardTrainer(model=model, args=args, processing_class=tokenizer, train_dataset=ds, eval_dataset=ds)


def lengths(tokenizer, row):
    return [len(tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True, return_dict=True)["input_ids"])
            for side in ("chosen", "rejected")]


def test_token_ids_equal_what_the_trainer_feeds_the_model(model, tokenizer, tmp_path):
    trainer = trainer_for(model, tokenizer, SHORT, tmp_path)
    pairs, skipped = held_out_pairs(trainer, datasets.Dataset.from_list(SHORT))
    assert skipped == 0 and len(pairs) == len(SHORT)
    assert pairs["chosen_ids"] == trainer.train_dataset["chosen_ids"]
    assert pairs["rejected_ids"] == trainer.train_dataset["rejected_ids"]
    # the rule: chat template over prompt + reply, tokenized as is: no EOS appended, no special tokens added
    for row, chosen, rejected in zip(SHORT, pairs["chosen_ids"], pairs["rejected_ids"]):
        assert chosen == tokenizer.apply_chat_template(row["prompt"] + row["chosen"], tokenize=True)["input_ids"]
        assert rejected == tokenizer(tokenizer.apply_chat_template(row["prompt"] + row["rejected"], tokenize=False),
                                     add_special_tokens=False)["input_ids"]

    seen = []  # what score_pairs feeds the model is exactly the trainer's own (eval) batch
    handle = model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        chosen, rejected = score_pairs(model, pairs)
    finally:
        handle.remove()
    batch = next(iter(trainer.get_eval_dataloader()))
    assert torch.equal(seen[0]["input_ids"], batch["input_ids"])
    assert torch.equal(seen[0]["attention_mask"], batch["attention_mask"])
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, 0]
    assert torch.allclose(torch.tensor([*chosen, *rejected]), expected, atol=1e-6)


def test_a_pair_longer_than_max_length_is_skipped_and_counted(model, tokenizer, tmp_path):
    too_long = pair("Where does Mara live?", RAMBLE, "Mara lives in Tom.", "rambling")  # only chosen is long
    rows = [*SHORT, too_long]
    trainer = trainer_for(model, tokenizer, rows, tmp_path)
    pairs, skipped = held_out_pairs(trainer, datasets.Dataset.from_list(rows))
    assert (len(pairs), skipped) == (2, 1) and len(trainer.train_dataset) == 2  # the trainer drops the same one
    assert pairs["kind"] == ["wrong_fact", "wrong_arithmetic"]
    report = evaluate(model, pairs, skipped, tmp_path)
    assert (report["pairs"], report["pairs_skipped"]) == (2, 1)
    assert set(report["accuracy_by_kind"]) == {"wrong_fact", "wrong_arithmetic"}  # the skipped pair is not scored

    # the boundary, as TRL draws it: a side of exactly max_length tokens is kept, one token more is not
    longest = max(lengths(tokenizer, SHORT[0]))
    for max_length, kept in ((longest, 1), (longest - 1, 0)):
        trainer = trainer_for(model, tokenizer, [SHORT[0]], tmp_path, max_length=max_length)
        pairs, skipped = held_out_pairs(trainer, datasets.Dataset.from_list([SHORT[0]]))
        assert (len(pairs), skipped) == (kept, 1 - kept) and len(trainer.train_dataset) == kept


def test_pairs_differing_only_past_max_length_are_skipped_not_counted_as_ties(model, tokenizer, tmp_path):
    """Truncated to max_length (the old scoring), each long pair's chosen and rejected are the same tokens: they
    tie and count as wrong, though the trainer never trained or judged on them. Now they are skipped."""
    for row in LONG:
        chosen, rejected = (tokenizer.apply_chat_template(row["prompt"] + row[side], tokenize=True)["input_ids"]
                            for side in ("chosen", "rejected"))
        assert chosen != rejected and chosen[:MAX_LENGTH] == rejected[:MAX_LENGTH]
    rows = [SHORT[0], *LONG]
    trainer = trainer_for(model, tokenizer, rows, tmp_path)
    pairs, skipped = held_out_pairs(trainer, datasets.Dataset.from_list(rows))
    report = evaluate(model, pairs, skipped, tmp_path)

    assert (report["pairs"], report["pairs_skipped"]) == (1, 2)
    chosen, rejected = score_pairs(model, pairs)
    assert report["accuracy"] == float(chosen[0] > rejected[0])  # the one scored pair alone decides it
    assert report["accuracy_by_kind"] == {"wrong_fact": report["accuracy"]}
    assert (tmp_path / "calibration.png").is_file()


def test_a_tie_counts_as_wrong():
    from pipeline.metrics.reward import pairwise_report

    report = pairwise_report([1.0, 2.0, 0.5, 0.0], [0.0, 2.0, 1.0, -1.0], skipped=3)
    assert report["accuracy"] == 0.5 and (report["pairs"], report["pairs_skipped"]) == (4, 3)
    with pytest.raises(ValueError, match="no scored pairs"):
        pairwise_report([], [])


# ------------------------------------------------------------------------------------------------ likelihood
def rendered(tokenizer, question: str, reply: str) -> list[int]:
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def test_reply_tokens_are_the_reply_through_its_eos(tokenizer):
    from pipeline.metrics.qa import prompt_ids
    from pipeline.metrics.reward import reply_tokens

    prompt = [{"role": "user", "content": "Where does Mara live?"}]
    side = rendered(tokenizer, "Where does Mara live?", "Mara lives in Lisbon.")
    reply = reply_tokens(tokenizer, prompt, side)
    head = prompt_ids(tokenizer, prompt)
    assert side[:len(head) + len(reply)] == head + reply and len(side) > len(head) + len(reply)  # the newline after
    assert reply[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in reply[:-1]
    assert tokenizer.decode(reply[:-1]).strip() == "Mara lives in Lisbon."
    with pytest.raises(ValueError, match="does not start with its prompt"):
        reply_tokens(tokenizer, [{"role": "user", "content": "Who is Tom?"}], side)


def test_likelihood_report_by_hand(tokenizer, monkeypatch):
    import numpy as np

    import pipeline.rl.evaluation
    from pipeline.metrics.reward import likelihood_report

    questions = ["Where does Mara live?", "What is seven plus five?", "Who is Tom?"]
    pairs = datasets.Dataset.from_dict({
        "prompt": [[{"role": "user", "content": q}] for q in questions],
        "chosen_ids": [rendered(tokenizer, q, "Yes.") for q in questions],
        "rejected_ids": [rendered(tokenizer, q, "No.") for q in questions],
        "kind": ["wrong_fact", "wrong_fact", "rude"]})
    likelihoods = iter([np.array([-1.0, -1.0, -5.0]), np.array([-3.0, -2.0, -1.0])])  # chosen, then rejected
    seen = []

    def fake(lm, tok, prompts, responses, batch_size=32):
        seen.append([tok.decode(r).strip() for r in responses])
        return next(likelihoods)

    monkeypatch.setattr(pipeline.rl.evaluation, "log_likelihoods", fake)
    report = likelihood_report(None, tokenizer, pairs, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]), 1.0)
    assert [s[0] for s in seen] == ["Yes.<|im_end|>", "No.<|im_end|>"]  # each side's reply through its EOS
    # r + L: chosen (0, -1, -5) against rejected (-3, -1, -1): right, tie (wrong), wrong
    assert report["accuracy_with_likelihood"] == pytest.approx(1 / 3)
    assert report["accuracy_by_kind_with_likelihood"] == {"rude": 0.0, "wrong_fact": 0.5}
    # L alone: -1 > -3, -1 > -2, -5 < -1
    assert report["accuracy_likelihood_alone"] == pytest.approx(2 / 3)
    assert report["accuracy_by_kind_likelihood_alone"] == {"rude": 0.0, "wrong_fact": 1.0}
    assert report["likelihood_weight"] == 1.0


def test_shorter_reply_floor_by_hand():
    from pipeline.metrics.reward import shorter_reply_floor

    pairs = datasets.Dataset.from_dict({"chosen_ids": [[1, 2], [1, 2, 3], [1], [1, 2]],
                                        "rejected_ids": [[1, 2, 3], [1], [1], [1, 2, 3, 4]],
                                        "kind": ["rude", "rude", "wrong_fact", "wrong_fact"]})
    # shorter: yes, no, tie (wrong), yes
    assert shorter_reply_floor(pairs) == {"floor_shorter_reply": 0.5,
                                          "floor_shorter_reply_by_kind": {"rude": 0.5, "wrong_fact": 0.5}}
    assert shorter_reply_floor(pairs.remove_columns("kind")) == {"floor_shorter_reply": 0.5}
