"""Held-out really held out: load_source splits by prompt group (pipeline.data.splits), for every mapper.

Each fixture is a small file in its source's real layout with prompts that repeat (OASST trees with several ranked
replies, HH transcripts sharing a first Human turn, Dolly instructions asked twice, ...). HH-RLHF real text is
only counted here, never printed."""

import csv
import gzip
import json
from collections import defaultdict

import datasets
import numpy as np
import pytest

from pipeline.data import mappers
from pipeline.data.sources import SourceConfig, load_source
from pipeline.data.splits import first_user_message, group_rows, prompt_text, split_rows
from pipeline.errors import PipelineError


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def load(fmt, path, seed=0, **kw):
    kw.setdefault("validation_fraction", 0.2)
    kw.setdefault("test_fraction", 0.2)
    return load_source(SourceConfig(name="s", format=fmt, path=str(path), **kw), seed=seed)


def splits_by_prompt(dd, fmt) -> dict[str, set[str]]:
    """First user message -> the splits holding a row with it."""
    where = defaultdict(set)
    for split, ds in dd.items():
        for row in ds:
            where[prompt_text(fmt, row)].add(split)
    return where


def assert_no_prompt_crosses(dd, fmt):
    crossing = [p for p, s in splits_by_prompt(dd, fmt).items() if len(s) > 1]
    assert not crossing, f"{len(crossing)} prompt(s) in more than one split"
    assert all(len(dd[k]) for k in dd), {k: len(v) for k, v in dd.items()}  # every split got something


def row_wise_split(n, validation_fraction, test_fraction, seed):
    """What the old row-wise `_split` did: split name of each row (in source order)."""
    count = lambda f: 0 if f <= 0 else max(1, round(n * f))  # noqa: E731
    n_test, n_val = count(test_fraction), count(validation_fraction)
    perm = np.random.default_rng(seed).permutation(n)
    names = np.array(["train"] * n, dtype=object)
    names[perm[:n_test]], names[perm[n_test:n_test + n_val]] = "test", "validation"
    return list(names)


def write_jsonl(path, recs, opener=open):
    with opener(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in recs))
    return path


# ---------------------------------------------------------------- fixtures in each source's real layout
def _oasst_msg(role, text, rank=None, replies=()):
    return {"message_id": text, "text": text, "role": role, "lang": "en", "review_count": 3, "review_result": True,
            "deleted": False, "rank": rank, "synthetic": False, "model_name": None, "replies": list(replies)}


def oasst_trees(n=12):
    """Tree i: root 'question i' with 3 ranked replies (3 pairs) and, under the best, a follow-up with 2 ranked
    replies (1 pair); 4 conversations. Trees 0 and 1 ask the same root question (different replies)."""
    trees = []
    for i in range(n):
        root = f"question {max(i, 1)}"
        follow = _oasst_msg("prompter", f"follow-up {i}", replies=[
            _oasst_msg("assistant", f"deep {i} good", 0), _oasst_msg("assistant", f"deep {i} bad", 1)])
        replies = [_oasst_msg("assistant", f"answer {i} best", 0, [follow]),
                   _oasst_msg("assistant", f"answer {i} ok", 1), _oasst_msg("assistant", f"answer {i} worst", 2)]
        trees.append({"message_tree_id": f"tree-{i}", "tree_state": "ready_for_export",
                      "prompt": _oasst_msg("prompter", root, replies=replies)})
    return trees


def hh_records(n_prompts=10):
    """Two transcripts per first Human turn (different follow-ups), as HH's harmless-base has."""
    recs = []
    for i in range(n_prompts):
        for j in range(2):
            head = f"\n\nHuman: prompt {i}\n\nAssistant: reply {i}.{j}\n\nHuman: more {i}.{j}?"
            recs.append({"chosen": head + f"\n\nAssistant: kind {i}.{j}",
                         "rejected": head + f"\n\nAssistant: rude {i}.{j}"})
    return recs


# ---------------------------------------------------------------- one test per mapper
@pytest.mark.parametrize("fmt", ["preferences", "messages"])
def test_hh_shared_first_turn_stays_in_one_split(tmp_path, fmt):
    path = write_jsonl(tmp_path / "test.jsonl.gz", hh_records(), opener=gzip.open)
    dd, rep = load(fmt, path, mapper="hh")
    assert rep["kept"] == 20 and rep["groups"] == 10
    assert_no_prompt_crosses(dd, fmt)
    assert all(len(ds) % 2 == 0 for ds in dd.values())  # both transcripts of a prompt together


@pytest.mark.parametrize("fmt, rows_per_tree", [("preferences", 4), ("messages", 4)])
def test_oasst_tree_stays_in_one_split(tmp_path, fmt, rows_per_tree):
    path = write_jsonl(tmp_path / "en_tree.jsonl", oasst_trees())
    dd, rep = load(fmt, path, mapper="oasst")
    assert rep["kept"] == 12 * rows_per_tree
    assert rep["groups"] == 11  # trees 0 and 1 share their root question
    assert_no_prompt_crosses(dd, fmt)
    splits_of_tree = defaultdict(set)  # tree i's replies are "answer i ..." and "deep i ..."
    for split, ds in dd.items():
        for r in ds:
            for m in (r.get("messages") or []) + (r.get("chosen") or []):
                if m["role"] == "assistant":
                    splits_of_tree[m["content"].split()[1]].add(split)
    assert len(splits_of_tree) == 12 and all(len(s) == 1 for s in splits_of_tree.values())
    assert splits_of_tree["0"] == splits_of_tree["1"]  # same root question: same split


def test_oasst_prompts(tmp_path):
    path = write_jsonl(tmp_path / "en_tree.jsonl", oasst_trees())
    dd, rep = load("prompts", path, mapper="oasst")
    assert rep["kept"] == 11 and rep["dropped"] == {"duplicate": 1} and rep["groups"] == 11
    assert_no_prompt_crosses(dd, "prompts")


def test_old_row_wise_split_separated_siblings_new_one_does_not(tmp_path):
    path = write_jsonl(tmp_path / "en_tree.jsonl", oasst_trees())
    whole, _ = load("preferences", path, mapper="oasst", validation_fraction=0, test_fraction=0)
    prompts = [prompt_text("preferences", r) for r in whole["train"]]  # source order
    old = row_wise_split(len(prompts), 0.2, 0.2, seed=0)
    old_splits = defaultdict(set)
    for p, s in zip(prompts, old):
        old_splits[p].add(s)
    assert sum(len(s) > 1 for s in old_splits.values()) >= 5  # row-wise: most trees straddle splits
    dd, _ = load("preferences", path, mapper="oasst", seed=0)
    assert all(len(s) == 1 for s in splits_by_prompt(dd, "preferences").values())


def test_dolly_repeated_instruction(tmp_path):
    recs = [{"instruction": f"Why {i % 15}?", "context": "", "response": f"because {i}", "category": "open_qa"}
            for i in range(30)]
    dd, rep = load("messages", write_jsonl(tmp_path / "dolly.jsonl", recs), mapper="dolly")
    assert rep["kept"] == 30 and rep["groups"] == 15
    assert_no_prompt_crosses(dd, "messages")
    _, rep = load("prompts", tmp_path / "dolly.jsonl", mapper="dolly")
    assert rep["kept"] == 15 and rep["groups"] == 15  # the repeated prompts are duplicates


def test_alpaca_seed_task_instances_stay_together(tmp_path, monkeypatch):
    # one seed task gives one row per instance, with different prompts: they share the raw record
    tasks = [{"id": f"seed_task_{i}", "name": f"t{i}", "instruction": f"Task {i}.", "is_classification": False,
              "instances": [{"input": f"input {i}.{j}", "output": f"output {i}.{j}"} for j in range(3)]}
             for i in range(10)]
    path = write_jsonl(tmp_path / "seed_tasks.jsonl", tasks)
    for streaming, cached in ((False, False), (True, False), (True, True)):  # eager, streaming, cache hit: same
        if cached:  # the cache hit must not map again: its raw-record indices come from the saved sidecar
            monkeypatch.setitem(mappers.MAPPERS, "alpaca", lambda *a: pytest.fail("mapped again on a cache hit"))
        dd, rep = load("messages", path, mapper="alpaca", streaming=streaming)
        assert rep["kept"] == 30 and rep["groups"] == 10
        assert_no_prompt_crosses(dd, "messages")
        task_splits = defaultdict(set)
        for split, ds in dd.items():
            for r in ds:
                task_splits[r["messages"][0]["content"].split(".")[0]].add(split)
        assert all(len(s) == 1 for s in task_splits.values())
        got = {k: list(v["messages"]) for k, v in dd.items()}
        if streaming:
            assert got == first
        first = got
    monkeypatch.undo()
    flat = [{"instruction": f"Do {i % 8}", "input": "", "output": f"done {i}"} for i in range(24)]
    dd, rep = load("messages", write_jsonl(tmp_path / "alpaca.jsonl", flat), mapper="alpaca")
    assert rep["groups"] == 8
    assert_no_prompt_crosses(dd, "messages")


def test_columns_messages_preferences_prompts(tmp_path):
    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "answer", "worse"])
        w.writerows([f"question {i % 10}", f"answer {i}", f"worse {i}"] for i in range(40))
    dd, rep = load("messages", path, columns={"user": "question", "assistant": "answer"})
    assert rep["groups"] == 10
    assert_no_prompt_crosses(dd, "messages")
    dd, rep = load("preferences", path, columns={"prompt": "question", "chosen": "answer", "rejected": "worse"})
    assert rep["groups"] == 10
    assert_no_prompt_crosses(dd, "preferences")
    # implicit prompt (full conversations, a system message first): grouped by the first *user* turn
    def conv(i, answer):
        return [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q {i % 5}"},
                {"role": "assistant", "content": answer}]

    recs = [{"chosen": conv(i, f"yes {i}"), "rejected": conv(i, f"no {i}")} for i in range(20)]
    dd, rep = load("preferences", write_jsonl(tmp_path / "c.jsonl", recs))
    assert rep["groups"] == 5
    assert_no_prompt_crosses(dd, "preferences")
    dd, rep = load("prompts", path, columns={"prompt": "question"}, dedupe=False)
    assert rep["kept"] == 40 and rep["groups"] == 10
    assert_no_prompt_crosses(dd, "prompts")


def test_text_rows_are_their_own_groups_as_before(tmp_path):
    path = tmp_path / "input.txt"
    path.write_text("\n\n".join(f"paragraph {i % 50}" for i in range(100)) + "\n")  # repeats are separate groups
    dd, rep = load("text", path, mapper="text", dedupe=False, seed=3)
    assert rep["groups"] == 100
    old = row_wise_split(100, 0.2, 0.2, seed=3)
    assert {k: list(v["text"]) for k, v in dd.items()} == {
        k: [f"paragraph {i % 50}" for i in range(100) if old[i] == k] for k in ("train", "validation", "test")}


# ---------------------------------------------------------------- sizes, order, tail, errors
def test_sizes_deterministic_and_source_order(tmp_path):
    path = write_jsonl(tmp_path / "en_tree.jsonl", oasst_trees(40))
    a, rep = load("preferences", path, mapper="oasst", seed=1, validation_fraction=0.1, test_fraction=0.1)
    b, _ = load("preferences", path, mapper="oasst", seed=1, validation_fraction=0.1, test_fraction=0.1)
    c, _ = load("preferences", path, mapper="oasst", seed=2, validation_fraction=0.1, test_fraction=0.1)
    assert rep["kept"] == 160
    for k in ("validation", "test"):  # at least round(160 * 0.1), overshooting by less than one group (8 rows)
        assert 16 <= len(a[k]) < 16 + 8
        assert list(a[k]) == list(b[k])
    assert list(a["test"]) != list(c["test"])
    assert sum(len(v) for v in a.values()) == 160
    order = [int(r["prompt"][0]["content"].split()[1]) for r in a["train"]]
    assert order == sorted(order)  # source order within a split


def test_tail_holds_out_the_last_groups(tmp_path):
    path = write_jsonl(tmp_path / "en_tree.jsonl", oasst_trees(20))
    dd, _ = load("messages", path, mapper="oasst", split="tail", validation_fraction=0.1, test_fraction=0.1)
    tree = lambda r: int(r["messages"][0]["content"].split()[1])  # noqa: E731
    assert [tree(r) for r in dd["test"]] == [18] * 4 + [19] * 4  # 8 >= round(80 * 0.1) rows
    assert [tree(r) for r in dd["validation"]] == [16] * 4 + [17] * 4
    assert sorted({tree(r) for r in dd["train"]}) == [1] + list(range(2, 16))  # trees 0 and 1 ask "question 1"


def test_too_few_groups_for_the_held_out_splits(tmp_path):
    path = write_jsonl(tmp_path / "en_tree.jsonl", oasst_trees(3))  # 12 pairs but 2 groups
    with pytest.raises(PipelineError, match=r"^data\.sources\[s\]: 12 kept row\(s\) are too few .*2 group\(s\)"):
        load("preferences", path, mapper="oasst", validation_fraction=0.1, test_fraction=0.1)


def test_group_rows_unions_keys_and_origins():
    # rows 0,1 share a record; 1 and 3 share a prompt; 4 shares a record with 3; 2 and 5 are alone
    groups = group_rows([b"a", b"b", b"c", b"b", b"d", None], [0, 0, 1, 2, 2, 3])
    assert list(groups) == [0, 0, 1, 0, 0, 2]
    assert list(group_rows([b"x", None, b"x"])) == [0, 1, 0]
    parts = split_rows(np.array([0, 0, 1, 2, 2, 2]), 0.2, 0.2, tail=True, seed=0)
    assert {k: list(v) for k, v in parts.items()} == {"train": [0, 1], "validation": [2], "test": [3, 4, 5]}
    assert first_user_message([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) == "u"


# ---------------------------------------------------------------- the real files
def test_real_files_no_prompt_crosses_splits(shared_data):
    for fmt, path, mapper in [("preferences", "oasst_en100/en_100_tree.jsonl", "oasst"),
                              ("messages", "oasst_en100/en_100_tree.jsonl", "oasst"),
                              ("preferences", "hh-rlhf/harmless-base/test.jsonl.gz", "hh")]:
        dd, rep = load(fmt, shared_data / path, mapper=mapper, validation_fraction=0.1, test_fraction=0.1)
        assert_no_prompt_crosses(dd, fmt)
        if mapper == "oasst":
            assert rep["groups"] == 100  # one group per tree: the 100 root prompts differ
        else:
            assert rep["groups"] < rep["kept"]  # some HH transcripts share their first Human turn
        for k in ("validation", "test"):
            assert len(dd[k]) >= round(rep["kept"] * 0.1)
