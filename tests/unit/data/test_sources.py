"""pipeline.data.sources / pipeline.data.mappers on the real files in shared/data and on small made-up files.

HH-RLHF is red-teaming material: these tests check only counts and structure, never its text."""

import csv
import gzip
import json
import os
import shutil
from pathlib import Path

import datasets
import pytest

from pipeline.data import mappers
from pipeline.data.mappers import check_record, map_hh, map_oasst, split_pair
from pipeline.data.sources import SourceConfig, iter_text_blocks, load_source
from pipeline.errors import PipelineError

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"  # ../shared/data from the project root
HH = DATA / "hh-rlhf/harmless-base/test.jsonl.gz"
OASST = DATA / "oasst_en100/en_100_tree.jsonl"
DOLLY = DATA / "dolly_open_qa/dolly_open_qa.jsonl"
SEED_TASKS = DATA / "alpaca_seed/seed_tasks.jsonl"
SHAKESPEARE = DATA / "tinyshakespeare/input.txt"
GUTENBERG = DATA / "gutenberg/gutenberg8_clean.txt"
WIKITEXT = DATA / "wikitext2/valid.txt"
needs_data = pytest.mark.skipif(not HH.exists(), reason="shared/data not present")


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def load(name, fmt, path, seed=0, **kw):
    return load_source(SourceConfig(name=name, format=fmt, path=str(path), **kw), seed=seed)


def rows(dd):
    return [r for split in dd.values() for r in split]


def roles(msgs):
    return [m["role"] for m in msgs]


def alternating(msgs, end):
    r = roles(msgs)
    r = r[1:] if r and r[0] == "system" else r
    return bool(r) and r[-1] == end and all(x == ("user", "assistant")[i % 2] for i, x in enumerate(r))


def write_jsonl(path, recs):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in recs))
    return path


# ---------------------------------------------------------------- real files
@needs_data
def test_hh_preferences_real_file():
    dd, rep = load("hh", "preferences", HH, mapper="hh")
    # 4 transcripts end in an empty assistant turn, 9 have two consecutive Assistant turns
    assert rep["read"] == 2312 and rep["kept"] == 2299
    assert rep["dropped"] == {"empty_text": 4, "bad_role_order": 9}
    assert set(dd) == {"train", "validation"} and len(dd["validation"]) == 230
    for r in rows(dd):
        assert alternating(r["prompt"], "user")
        assert roles(r["chosen"]) == ["assistant"] and roles(r["rejected"]) == ["assistant"]
        assert r["chosen"][0]["content"] != r["rejected"][0]["content"]


@needs_data
def test_hh_messages_and_strict_real_file():
    dd, rep = load("hh", "messages", HH, mapper="hh", validation_fraction=0.0)
    assert rep["read"] == 2312 and rep["kept"] == 2300 and rep["dropped"] == {"empty_text": 4, "bad_role_order": 8}
    assert len(dd["train"]) == 2300 and len(dd["validation"]) == 0
    assert all(alternating(r["messages"], "assistant") for r in dd["train"])
    with pytest.raises(PipelineError, match=r"^data\.sources\[hh\]: record \d+ \(.*\.jsonl\.gz:\d+\) is malformed: "):
        load("hh", "messages", HH, mapper="hh", strict=True)


@needs_data
def test_oasst_real_file():
    # messages: one conversation per root-to-leaf path (626, as the data README counts them); a path ending in an
    # unanswered prompter message loses that turn, so sibling unanswered prompter leaves collapse (62 duplicates)
    dd, rep = load("oa", "messages", OASST, mapper="oasst")
    assert (rep["read"], rep["mapped"], rep["kept"], rep["dropped"]) == (100, 626, 564, {"duplicate": 62})
    assert all(alternating(r["messages"], "assistant") for r in rows(dd))
    _, rep = load("oa", "messages", OASST, mapper="oasst", dedupe=False)
    assert rep["kept"] == 626
    # preferences: every sibling pair of ranked assistant replies with different ranks (754, as in the README)
    dd, rep = load("oa", "preferences", OASST, mapper="oasst")
    assert (rep["read"], rep["kept"], rep["dropped"]) == (100, 754, {})
    assert all(alternating(r["prompt"], "user") and roles(r["chosen"]) == ["assistant"] for r in rows(dd))
    dd, rep = load("oa", "prompts", OASST, mapper="oasst")
    assert rep["kept"] == 100 and all(roles(r["prompt"]) == ["user"] for r in rows(dd))


@needs_data
def test_dolly_real_file():
    dd, rep = load("dolly", "messages", DOLLY, mapper="dolly")
    assert (rep["read"], rep["kept"], rep["dropped"]) == (3742, 3739, {"duplicate": 3})
    first = json.loads(DOLLY.open().readline())
    got = {json.dumps(r["messages"]) for r in rows(dd)}
    assert json.dumps([{"role": "user", "content": first["instruction"].strip()},
                       {"role": "assistant", "content": first["response"].strip()}]) in got
    _, rep = load("dolly", "prompts", DOLLY, mapper="dolly")
    assert (rep["kept"], rep["dropped"]) == (3705, {"duplicate": 37})  # 37 instructions asked twice


@needs_data
def test_alpaca_seed_tasks_real_file():
    dd, rep = load("seed", "messages", SEED_TASKS, mapper="alpaca", validation_fraction=0.0)
    assert (rep["read"], rep["kept"], rep["dropped"]) == (175, 175, {})  # one instance per seed task
    task = json.loads(SEED_TASKS.read_text().splitlines()[1])
    inst = task["instances"][0]
    assert {"messages": [{"role": "user", "content": task["instruction"] + "\n\n" + inst["input"]},
                         {"role": "assistant", "content": inst["output"]}]} in list(dd["train"])
    _, rep = load("seed", "prompts", SEED_TASKS, mapper="alpaca")
    assert rep["kept"] == 175


@needs_data
def test_text_real_files():
    dd, rep = load("shakespeare", "text", SHAKESPEARE, mapper="text")
    assert (rep["read"], rep["kept"], rep["dropped"]) == (7222, 7148, {"duplicate": 74})  # blank-line blocks
    assert all(r["text"] and "\n\n" not in r["text"] for r in rows(dd))
    _, rep = load("wiki", "text", WIKITEXT)  # mapper auto = columns {text: text}
    assert (rep["read"], rep["kept"]) == (1166, 1027)


@needs_data
def test_streaming_text_gutenberg(monkeypatch):
    dd, rep = load("gut", "text", GUTENBERG, mapper="text", streaming=True)
    assert (rep["read"], rep["kept"], rep["dropped"]) == (28425, 27096, {"duplicate": 1329})
    assert dd["train"].cache_files, "streaming must build an on-disk Arrow dataset"
    assert len(dd["train"]) + len(dd["validation"]) == 27096
    eager, rep2 = load("gut", "text", GUTENBERG, mapper="text")
    assert rep2 == rep and list(eager["validation"]["text"]) == list(dd["validation"]["text"])
    again, rep3 = load("gut", "text", GUTENBERG, mapper="text", streaming=True)  # cache hit: same report
    assert rep3 == rep and len(again["train"]) == len(dd["train"])
    # max_rows stops the reading early
    dd, rep = load("gut", "text", GUTENBERG, mapper="text", streaming=True, max_rows=50)
    assert rep["kept"] == 50 and rep["max_rows_reached"] and rep["read"] < 100


def test_streaming_strict_and_empty(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"text": "ok"}, {"text": ""}])
    with pytest.raises(PipelineError, match=r"record 1 \(.*a\.jsonl:2\) is malformed: empty_text"):
        load("s", "text", path, streaming=True, strict=True)
    with pytest.raises(PipelineError, match=r"^data\.sources\[s\]: no rows left .*dropped: empty_text 2\)$"):
        load("s", "text", write_jsonl(tmp_path / "e.jsonl", [{"text": ""}, {"text": " "}]), streaming=True)
    with pytest.raises(PipelineError, match=r"^data\.sources\[s\]: 1 kept row\(s\) are too few"):
        load("s", "text", path, streaming=True)
    dd, rep = load("s", "text", path, streaming=True, validation_fraction=0)
    assert list(dd["train"]["text"]) == ["ok"] and len(dd["validation"]) == 0


def test_iter_text_blocks_rule():
    lines = ["a\n", "b  \n", "\n", "   \n", "c\n", "\n"]
    assert list(iter_text_blocks(lines)) == [(1, "a\nb"), (5, "c")]
    # no blank lines: cut at whole lines before max_chars; a longer line stays whole
    assert [b for _, b in iter_text_blocks(["aaaa", "bbbb", "cccc", "x" * 20, "d"], max_chars=10)] == [
        "aaaa\nbbbb", "cccc", "x" * 20, "d"]


# ---------------------------------------------------------------- mappers alone
def test_map_hh_pure():
    rec = {"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: fine",
           "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: bad"}
    [pair] = map_hh(rec, "preferences", {})
    assert roles(pair["prompt"]) == ["user", "assistant", "user"] and pair["chosen"][0]["content"] == "fine"
    assert check_record("preferences", pair) is None
    assert map_hh({"chosen": "\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "rejected": ""}, "messages", {}) == \
        "bad_role_order"
    assert map_hh({"chosen": "no markers"}, "messages", {}) == "bad_transcript"
    assert map_hh({}, "messages", {}) == "missing_field"
    same = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert split_pair(same, list(same)) == "identical_pair"


def test_map_oasst_pure():
    def m(role, text, rank=None, replies=(), **kw):
        return {"role": role, "text": text, "rank": rank, "replies": list(replies), **kw}

    tree = {"prompt": m("prompter", "q", replies=[
        m("assistant", "a0", 0, [m("prompter", "f1"), m("prompter", "f2")]),
        m("assistant", "a1", 1),
        m("assistant", "a2", 1, deleted=True),
        m("assistant", "a3", None)])}
    convs = map_oasst(tree, "messages", {})
    assert convs.count("deleted_message") == 1
    convs = [c["messages"] for c in convs if isinstance(c, dict)]
    assert [[x["content"] for x in c] for c in convs] == [["q", "a0"], ["q", "a0"], ["q", "a1"], ["q", "a3"]]
    pairs = [p for p in map_oasst(tree, "preferences", {}) if isinstance(p, dict)]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [("a0", "a1")]
    assert map_oasst({"prompt": m("prompter", "lonely")}, "messages", {}) == ["no_reply"]
    assert mappers.MAPPER_FORMATS["oasst"] == ("messages", "preferences", "prompts")


# ---------------------------------------------------------------- malformed records, strict, filters
BAD = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    "{not json",
    {"other": 1},
    {"messages": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}]},
    {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]},
    {"messages": [{"role": "user", "content": "q"}]},
    {"messages": "not a list"},
    {"messages": [{"role": "wizard", "content": "q"}, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
    [1, 2],
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q2"},
                  {"role": "assistant", "content": "a2"}]},
]


def test_malformed_counted_by_reason(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", BAD)
    dd, rep = load("mine", "messages", path, validation_fraction=0.0)
    assert rep["read"] == 11 and rep["kept"] == 2
    assert rep["dropped"] == {"bad_json": 1, "missing_field": 1, "bad_role_order": 2, "empty_text": 1,
                              "bad_transcript": 1, "unknown_role": 1, "duplicate": 1, "bad_type": 1}
    assert rep["mapped"] == rep["kept"] + sum(rep["dropped"].values())
    assert roles(dd["train"][1]["messages"]) == ["system", "user", "assistant"]


def test_strict_raises_on_first_malformed(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", BAD)
    with pytest.raises(PipelineError) as e:
        load("mine", "messages", path, strict=True)
    assert str(e.value) == f"data.sources[mine]: record 1 ({path}:2) is malformed: bad_json (strict: true)"


def test_dedupe_max_rows_and_length_filters(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"body": t} for t in ["aa", "bbbb", "aa", "cccccc", "dd", "eeeeeeee"]])
    _, rep = load("t", "text", path, columns={"text": "body"}, validation_fraction=0)
    assert rep["kept"] == 5 and rep["dropped"] == {"duplicate": 1}
    dd, rep = load("t", "text", path, columns={"text": "body"}, validation_fraction=0, dedupe=False)
    assert rep["kept"] == 6 and dd["train"]["text"][:3] == ["aa", "bbbb", "aa"]  # splits keep source order
    _, rep = load("t", "text", path, columns={"text": "body"}, min_chars=3, max_chars=6, validation_fraction=0)
    assert rep["kept"] == 2 and rep["dropped"] == {"too_short": 3, "too_long": 1}
    dd, rep = load("t", "text", path, columns={"text": "body"}, max_rows=3, validation_fraction=0)
    assert list(dd["train"]["text"]) == ["aa", "bbbb", "cccccc"] and rep["max_rows_reached"]  # first 3 kept rows


def test_splits_deterministic(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"row {i}"} for i in range(200)])
    cfg = SourceConfig(name="t", format="text", path=str(path), validation_fraction=0.1, test_fraction=0.05)
    a, _ = load_source(cfg, seed=1)
    b, _ = load_source(cfg, seed=1)
    c, _ = load_source(cfg, seed=2)
    assert {k: len(v) for k, v in a.items()} == {"train": 170, "validation": 20, "test": 10}
    assert all(list(a[k]["text"]) == list(b[k]["text"]) for k in a)
    assert list(a["validation"]["text"]) != list(c["validation"]["text"])
    assert sorted(t for k in a for t in a[k]["text"]) == sorted(f"row {i}" for i in range(200))


# ---------------------------------------------------------------- columns mapper on csv / parquet / json
def test_columns_csv_messages(tmp_path):
    path = tmp_path / "qa.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["question", "answer", "sys"], ["2+2?", "4", "be terse"], ["capital of France?", "Paris", ""],
                     ["", "orphan", ""]])
    dd, rep = load("qa", "messages", path, columns={"user": "question", "assistant": "answer", "system": "sys"},
                   validation_fraction=0)
    assert rep["kept"] == 2 and rep["dropped"] == {"empty_text": 1}
    assert dd["train"][0]["messages"] == [{"role": "system", "content": "be terse"},
                                          {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert roles(dd["train"][1]["messages"]) == ["user", "assistant"]


def test_columns_preferences_and_prompts(tmp_path):
    recs = [{"q": f"question {i}", "good": f"good {i}", "bad": f"bad {i}"} for i in range(5)]
    datasets.Dataset.from_list(recs).to_parquet(str(tmp_path / "p.parquet"))
    dd, rep = load("pairs", "preferences", tmp_path / "p.parquet",
                   columns={"prompt": "q", "chosen": "good", "rejected": "bad"}, validation_fraction=0)
    assert rep["kept"] == 5
    assert dd["train"][0] == {"prompt": [{"role": "user", "content": "question 0"}],
                              "chosen": [{"role": "assistant", "content": "good 0"}],
                              "rejected": [{"role": "assistant", "content": "bad 0"}]}
    dd, _ = load("p", "prompts", tmp_path / "p.parquet", columns={"prompt": "q"}, validation_fraction=0)
    assert dd["train"][4]["prompt"] == [{"role": "user", "content": "question 4"}]
    # implicit prompt: full conversations in chosen/rejected (a .json list), common prefix becomes the prompt
    conv = lambda a: [{"role": "user", "content": "q"}, {"role": "assistant", "content": a}]  # noqa: E731
    (tmp_path / "c.json").write_text(json.dumps([{"chosen": conv("yes"), "rejected": conv("no")},
                                                 {"chosen": conv("same"), "rejected": conv("same")}]))
    dd, rep = load("imp", "preferences", tmp_path / "c.json", validation_fraction=0)
    assert rep["dropped"] == {"identical_pair": 1}
    assert dd["train"][0]["prompt"] == [{"role": "user", "content": "q"}]
    assert dd["train"][0]["chosen"][0]["content"] == "yes"


def test_alpaca_flat_gz_directory_and_glob(tmp_path):
    d = tmp_path / "alp"
    d.mkdir()
    with gzip.open(d / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"instruction": "Add", "input": "1 2", "output": "3"}) + "\n")
        f.write(json.dumps({"instruction": "Say hi", "input": "", "output": "hi"}) + "\n")
    write_jsonl(d / "b.jsonl", [{"instruction": "No output"}])
    dd, rep = load("alp", "messages", d, mapper="alpaca", validation_fraction=0)
    assert rep["read"] == 3 and rep["kept"] == 2 and rep["dropped"] == {"missing_field": 1}
    assert dd["train"][0]["messages"][0]["content"] == "Add\n\n1 2"
    _, rep = load("alp", "prompts", str(d / "*.jsonl*"), mapper="alpaca", validation_fraction=0)
    assert rep["kept"] == 3


def test_hub_code_path_with_fake_load_dataset(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None, streaming=False):
        calls.append((path, name, split, streaming))
        return datasets.Dataset.from_list([{"prompt": "p1", "completion": "c1"}, {"prompt": "p2", "completion": "c2"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dd, rep = load("hub", "messages", "someorg/qa", columns={"user": "prompt", "assistant": "completion"},
                   hub_config="en", hub_split="test", validation_fraction=0)
    assert calls == [("someorg/qa", "en", "test", False)] and rep["kept"] == 2

    def failing(*a, **k):
        raise ConnectionError("offline\nsecond line")

    monkeypatch.setattr(datasets, "load_dataset", failing)
    with pytest.raises(PipelineError, match=r"^data\.sources\[hub\]\.path: cannot load Hub dataset 'someorg/qa'") as e:
        load("hub", "text", "someorg/qa", file_type="hub")
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- error messages
def test_error_messages(tmp_path):
    def err(**kw):
        kw.setdefault("name", "mine")
        kw.setdefault("format", "text")
        kw.setdefault("path", str(path))
        with pytest.raises(PipelineError) as e:
            load_source(SourceConfig(**kw), seed=0)
        assert "\n" not in str(e.value)
        return str(e.value)

    path = tmp_path / "f.csv"
    path.write_text("a,b,c\n1,2,3\n")
    assert err(name="oasst_pairs", path="/x/y.jsonl") == "data.sources[oasst_pairs].path: no such file: /x/y.jsonl"
    assert err(columns={"text": "body"}) == (
        "data.sources[mine].columns.text: column 'body' not in file (columns: a, b, c)")
    assert err().startswith("data.sources[mine].columns.text: column 'text' not in file")
    assert err(format="chat") == ("data.sources[mine].format: unknown format 'chat' "
                                  "(valid: text, messages, preferences, prompts)")
    assert err(file_type="xml").startswith("data.sources[mine].file_type: unknown file_type 'xml' (valid: auto, json,")
    assert err(mapper="magic").startswith("data.sources[mine].mapper: unknown mapper 'magic' (valid: auto, columns,")
    assert err(mapper="dolly", format="preferences") == (
        "data.sources[mine].mapper: mapper 'dolly' cannot produce format 'preferences' (it gives: messages, prompts)")
    assert err(columns={"body": "a"}) == ("data.sources[mine].columns.body: not a field of mapper 'columns' "
                                          "for format 'text' (valid: text)")
    assert err(validation_fraction=1.5).startswith("data.sources[mine].validation_fraction: must be in [0, 1)")
    assert err(path=str(tmp_path / "*.nothing")).startswith("data.sources[mine].path: no files match")
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"text": " "}, {"text": ""}])
    assert err(path=str(empty)) == (f"data.sources[mine]: no rows left from {empty} (read 2, dropped: empty_text 2)")
    odd = tmp_path / "data.xml"
    odd.write_text("<x/>")
    assert err(path=str(odd)).startswith("data.sources[mine].file_type: cannot tell the type of")
    with pytest.raises(PipelineError, match=r"^recipe\.data\[mine\]\.path: no such file"):
        load_source(SourceConfig(name="mine", format="text", path="/x/y.txt"), seed=0, where="recipe.data")


def test_real_file_copied_and_modified(tmp_path):
    # the shared files are read-only: copy, append a malformed record, and count it
    if not OASST.exists():
        pytest.skip("shared/data not present")
    path = tmp_path / "tree.jsonl"
    shutil.copy(OASST, path)
    os.chmod(path, 0o644)
    with path.open("a") as f:
        f.write(json.dumps({"message_tree_id": "x"}) + "\n")
    _, rep = load("oa", "prompts", path, mapper="oasst")
    assert rep["read"] == 101 and rep["kept"] == 100 and rep["dropped"] == {"missing_field": 1}


def test_tail_split_holds_out_the_end_in_order(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("\n\n".join(f"paragraph {i}" for i in range(100)) + "\n")
    cfg = SourceConfig(name="t", format="text", path=str(path), mapper="text", split="tail",
                       validation_fraction=0.1, test_fraction=0.05)
    ds, _ = load_source(cfg, seed=0)
    assert [r.strip() for r in ds["train"]["text"]] == [f"paragraph {i}" for i in range(85)]
    assert [r.strip() for r in ds["validation"]["text"]] == [f"paragraph {i}" for i in range(85, 95)]
    assert [r.strip() for r in ds["test"]["text"]] == [f"paragraph {i}" for i in range(95, 100)]
