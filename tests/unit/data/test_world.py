"""The synthetic world: deterministic, consistent with its own facts, split without leakage."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline.data import world_text
from pipeline.data.world import (CURVES, FEATURES, PERSON_CATEGORIES, PREFERENCE_KINDS, World, WorldConfig, build_world,
                                 curve_value, questions_words, words)
from pipeline.errors import PipelineError

CFG = WorldConfig(corpus_bytes=60_000, n_dialogues=300, n_preferences=300, n_prompts=80, n_eval=80)
SPLITS = {"corpus": {"train", "validation"}, "dialogue": {"train", "validation", "test"},
          "preferences": {"train", "validation", "test"}, "prompts": {"train", "test"}, "qa_eval": {"test"},
          "analogies": {"test"}, "regression": {"train"}}


@pytest.fixture(scope="module")
def built():
    return build_world(CFG, seed=0)


@pytest.fixture(scope="module")
def world():
    return World(CFG, seed=0)


def user_turns(messages):
    return [m["content"] for m in messages if m["role"] == "user"]


def keys(world, texts):
    out = [world.key_of(t) for t in texts]
    assert None not in out, [t for t, k in zip(texts, out) if k is None][:3]
    return set(out)


def test_vocabulary_pools_have_no_overlaps():
    assert world_text.check_vocabulary() == []


def test_default_config_builds_fast_with_expected_sizes():
    start = time.perf_counter()
    ds = build_world(WorldConfig(), seed=0)
    assert time.perf_counter() - start < 5
    sizes = {name: {s: len(d) for s, d in dd.items()} for name, dd in ds.items()}
    assert sizes["dialogue"] == {"train": 800, "validation": 100, "test": 100}
    assert sizes["preferences"] == {"train": 800, "validation": 100, "test": 100}
    assert sizes["prompts"] == {"train": 180, "test": 20}
    assert sizes["qa_eval"] == {"test": 200}
    assert sizes["regression"] == {"train": 50 * len(CURVES)}
    assert sizes["analogies"]["test"] > 500


def test_same_seed_same_content_other_seed_differs(built):
    again = build_world(CFG, seed=0)
    for name, dd in built.items():
        for split, ds in dd.items():
            assert again[name][split].features == ds.features
            assert again[name][split].to_list() == ds.to_list(), (name, split)
    other = build_world(CFG, seed=1)
    for name in ("corpus", "dialogue", "qa_eval", "analogies", "regression"):
        assert other[name][sorted(SPLITS[name])[0]].to_list() != built[name][sorted(SPLITS[name])[0]].to_list()
    w0, w1 = World(CFG, 0), World(CFG, 1)
    assert [(p.name, p.facts) for p in w0.plist] != [(p.name, p.facts) for p in w1.plist]


def test_schemas(built):
    assert set(built) == set(SPLITS)
    for name, dd in built.items():
        assert set(dd) == SPLITS[name], name
        for split, ds in dd.items():
            assert ds.features == FEATURES[name], (name, split)
            assert len(ds) > 0, (name, split)
    assert built["preferences"]["train"].column_names == ["prompt", "chosen", "rejected", "kind"]
    assert built["qa_eval"]["test"].column_names == ["prompt", "question", "answer", "category", "subject", "answer_type", "candidates"]


def test_config_fields_are_documented_with_simple_types():
    for f in dataclasses.fields(WorldConfig):
        assert f.metadata.get("help"), f.name
        assert f.type in (int, float, bool, str, list[str]), (f.name, f.type)


@pytest.mark.parametrize("change", [{"n_people": 2}, {"n_towns": 99}, {"test_fraction": 1.5}, {"arithmetic": "no"},
                                    {"regression_curves": ["spline"]}, {"corpus_bytes": "big"}])
def test_bad_config_is_a_one_line_recipe_error(change):
    from pipeline.config import build
    from pipeline.stages.data import Config

    key = next(iter(change))
    with pytest.raises(PipelineError, match=rf"^r\.yaml: data\.world\.{key}: "):
        build(Config, {"world": change}, "r.yaml: data")


def test_world_is_consistent(world):
    people = world.people
    for p in world.plist:
        for rel in ("sibling", "friend"):
            if p.facts[rel]:
                assert people[p.facts[rel]].facts[rel] == p.name
        assert p.facts["sibling"] != p.facts["friend"] or not p.facts["sibling"]
        assert world.answer(f"country:{p.name}") == world.town_info[p.facts["town"]][1]
    assert len({p.name.lower() for p in world.plist}) == CFG.n_people
    assert world.answer("arithmetic:7+5") == "12" and world.answer("arithmetic:9-4") == "5"
    assert world.answer("arithmetic:6*7") == "42"


def test_dialogue_turns_alternate_and_answers_are_true(built, world):
    n_multi = 0
    for split, ds in built["dialogue"].items():
        for row in ds:
            msgs = row["messages"]
            if msgs[0]["role"] == "system":
                msgs = msgs[1:]
            assert [m["role"] for m in msgs] == ["user", "assistant"] * (len(msgs) // 2), msgs
            n_multi += len(msgs) > 2
            for q, a in zip(msgs[::2], msgs[1::2]):
                key = world.key_of(q["content"])
                assert key is not None, q
                assert world.answer(key).lower() in a["content"].lower(), (q, a)
    assert n_multi > 0


def test_preferences_are_labelled_and_correct(built, world):
    for split, ds in built["preferences"].items():
        assert set(ds["kind"]) == set(PREFERENCE_KINDS), split
        for row in ds:
            assert row["prompt"][-1]["role"] == "user"
            assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
            chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
            assert chosen != rejected
            key = world.key_of(row["prompt"][-1]["content"])
            answer, arithmetic = world.answer(key), world.category(key) == "arithmetic"
            assert answer.lower() in chosen.lower()
            if row["kind"] == "wrong_fact":
                assert not arithmetic and answer.lower() not in rejected.lower(), (row, answer)
            if row["kind"] == "wrong_arithmetic":
                assert arithmetic and re.findall(r"\d+", rejected)[-1] != answer, (row, answer)


def test_a_wrong_answer_opens_politely_as_often_as_the_right_one():
    """wrong_fact / wrong_arithmetic pairs differ in the answer, not in the opener ("Sure! ", ...): otherwise a
    reward model scores the opener and its accuracy on these kinds overstates what it knows."""
    openers = tuple(o for o in world_text.POLITE if o)
    preferences = build_world(dataclasses.replace(CFG, corpus_bytes=5_000, n_preferences=2_000), seed=0)["preferences"]
    for kind in ("wrong_fact", "wrong_arithmetic"):
        rows = [r for ds in preferences.values() for r in ds if r["kind"] == kind]
        share = {side: sum(r[side][0]["content"].startswith(openers) for r in rows) / len(rows)
                 for side in ("chosen", "rejected")}
        assert len(rows) > 40 and share["chosen"] > 0.3, (kind, len(rows), share)
        assert abs(share["chosen"] - share["rejected"]) < 0.15, (kind, share)


def test_a_world_without_arithmetic_asks_and_states_none():
    cfg = dataclasses.replace(CFG, arithmetic=False)
    ds, world = build_world(cfg, seed=0), World(cfg, seed=0)
    assert world.keys["arithmetic"] == []
    assert "arithmetic" not in set(ds["qa_eval"]["test"]["category"]) and len(ds["qa_eval"]["test"]) > 20
    assert "wrong_arithmetic" not in {k for split in ds["preferences"].values() for k in split["kind"]}
    questions = [m["content"] for split in ds["dialogue"].values() for row in split["messages"] for m in row
                 if m["role"] == "user"]
    questions += [row[-1]["content"] for split in ds["prompts"].values() for row in split["prompt"]]
    assert all(world.category(world.key_of(q)) != "arithmetic" for q in questions)
    # the corpus states no sum: no "a + b = c", "a plus b is c" or word problem
    arithmetic = re.compile(r"\d+ (?:[-+*]|plus|minus|times|multiplied by) \d+|you add \d+|away from \d+|"
                            r"(?:sum|difference|product) (?:of|between) \d+|found \d+ more|gave \d+ to|boxes with \d+")
    assert not [t for split in ds["corpus"].values() for t in split["text"] if arithmetic.search(t)]
    assert arithmetic.search(" ".join(build_world(CFG, seed=0)["corpus"]["train"]["text"]))  # the default does


def test_no_question_leaks_from_held_out_sets(built, world):
    used = {}
    for name in ("dialogue", "preferences"):
        for split, ds in built[name].items():
            col = ds["messages"] if name == "dialogue" else ds["prompt"]
            used[f"{name}/{split}"] = keys(world, [t for msgs in col for t in user_turns(msgs)])
    for split in ("train", "validation", "test"):  # dialogue and preferences share one split of questions
        others = [s for s in ("train", "validation", "test") if s != split]
        for other in others:
            assert not used[f"dialogue/{split}"] & (used[f"dialogue/{other}"] | used[f"preferences/{other}"])
    training = set().union(*used.values())
    qa = built["qa_eval"]["test"]
    eval_keys = keys(world, qa["question"])
    prompt_keys = {s: keys(world, [t for msgs in built["prompts"][s]["prompt"] for t in user_turns(msgs)]) for s in ("train", "test")}
    assert len(eval_keys) == len(qa)
    assert not eval_keys & training
    assert not eval_keys & (prompt_keys["train"] | prompt_keys["test"])
    assert not (prompt_keys["train"] | prompt_keys["test"]) & training
    assert not prompt_keys["train"] & prompt_keys["test"]
    texts = {t for name in ("dialogue", "preferences") for ds in built[name].values()
             for msgs in (ds["messages"] if name == "dialogue" else ds["prompt"]) for t in user_turns(msgs)}
    assert not set(qa["question"]) & texts
    # held-out arithmetic never appears in the corpus either
    corpus = "\n".join(list(built["corpus"]["train"]["text"]) + list(built["corpus"]["validation"]["text"]))
    for key in eval_keys:
        if key.startswith("arithmetic:"):
            a, op, b = re.fullmatch(r"arithmetic:(\d+)([-+*])(\d+)", key).groups()
            assert not re.search(rf"(?<!\d){a} \{op} {b} = {world.answer(key)}(?!\d)", corpus), key


def test_qa_eval_has_exact_answers(built, world):
    qa = built["qa_eval"]["test"]
    for row in qa:
        key = world.key_of(row["question"])
        assert row["prompt"] == [{"role": "user", "content": row["question"]}]
        assert row["answer"] == world.answer(key) and row["category"] == world.category(key)
    assert {"age", "town", "job", "pet", "arithmetic"} <= set(qa["category"])
    assert set(qa["category"]) <= set(PERSON_CATEGORIES) | {"town_country", "arithmetic"}


def test_corpus_size_and_coverage(built, world):
    train, val = list(built["corpus"]["train"]["text"]), list(built["corpus"]["validation"]["text"])
    total = sum(len(t.encode()) for t in train + val)
    assert abs(total - CFG.corpus_bytes) < 0.1 * CFG.corpus_bytes
    assert abs(sum(map(len, val)) - CFG.validation_fraction * CFG.corpus_bytes) < 0.05 * CFG.corpus_bytes
    for p in world.plist:  # every fact of everyone is stated in train
        docs = [t for t in train if p.name in t]
        for cat in ("age", "town", "job", "pet", "pet_name", "color", "food", "thing"):
            assert any(re.search(rf"\b{p.facts[cat]}\b", t) for t in docs), (p.name, cat)
    small = build_world(dataclasses.replace(CFG, corpus_bytes=2_000_000), seed=0)["corpus"]
    assert abs(sum(len(t) for s in small.values() for t in s["text"]) - 2_000_000) < 20_000


def test_analogies_use_corpus_words_and_load_in_gensim(built, world, tmp_path):
    rows = built["analogies"]["test"]
    vocab = {w for t in built["corpus"]["train"]["text"] for w in words(t)}
    assert {"town-country", "person-town", "person-job", "animal-sound", "animal-plural"} <= set(rows["section"])
    for r in rows:
        quad = [r[k] for k in "abcd"]
        assert len(set(quad)) == 4 and all(w in vocab and re.fullmatch(r"[a-z]+", w) for w in quad), r
        if r["section"] == "town-country":
            assert world.town_info[r["a"].capitalize()][1].lower() == r["b"]
        if r["section"] == "person-job":
            assert world.people[r["c"].capitalize()].facts["job"] == r["d"]
    text = questions_words(rows)
    lines = text.splitlines()
    assert lines[0] == f": {rows[0]['section']}" and len(lines) == len(rows) + len(set(rows["section"]))
    gensim = pytest.importorskip("gensim")
    kv = gensim.models.KeyedVectors(vector_size=8)
    quads = sorted({r[k] for r in rows for k in "abcd"})
    kv.add_vectors(quads, np.random.default_rng(0).normal(size=(len(quads), 8)).astype(np.float32))
    path = tmp_path / "questions-words.txt"
    path.write_text(text)
    _, sections = kv.evaluate_word_analogies(str(path))
    assert [s["section"] for s in sections[:-1]] == list(dict.fromkeys(rows["section"]))
    assert sum(len(s["correct"]) + len(s["incorrect"]) for s in sections[:-1]) == len(rows)


def test_regression_matches_true_functions(built):
    df = built["regression"]["train"].to_pandas()
    assert sorted(df["curve"].unique()) == sorted(CURVES)
    for curve, g in df.groupby("curve"):
        params = json.loads(g["true_params"].iloc[0])
        function, sd = g["function"].iloc[0], g["noise_sd"].iloc[0]
        assert set(re.findall(r"[A-Za-z_]\w*", function)) <= {"x", "exp", "log", "sin", "cos", "sqrt", "pow", *params}
        resid = g["y"].to_numpy() - curve_value(function, g["x"].to_numpy(), params)
        assert 0.6 * sd < resid.std() < 1.5 * sd, curve
        assert abs(resid.mean()) < 4 * sd / np.sqrt(len(g)), curve


def test_big_world_tiny_corpus():
    cfg = WorldConfig(n_people=250, n_towns=30, corpus_bytes=5_000, n_dialogues=40, n_preferences=20, n_prompts=10, n_eval=10,
                      system_prompt_fraction=0.5)
    ds = build_world(cfg, seed=3)
    test_dialogue_turns_alternate_and_answers_are_true(ds, World(cfg, 3))
    assert any(row[0]["role"] == "system" for row in ds["dialogue"]["train"]["messages"])
    vocab = {w for t in ds["corpus"]["train"]["text"] for w in words(t)}
    assert all(r[k] in vocab for r in ds["analogies"]["test"] for k in "abcd")
    assert len(ds["qa_eval"]["test"]) == 10 and len(ds["prompts"]["train"]) + len(ds["prompts"]["test"]) == 10
    assert len({p.name for p in World(cfg, 3).plist}) == 250  # beyond the name pools: invented names


def test_content_does_not_depend_on_hash_randomisation():
    code = ("import hashlib, json; from pipeline.data.world import WorldConfig, build_world; "
            "ds = build_world(WorldConfig(corpus_bytes=20_000, n_dialogues=50, n_preferences=50), 5); "
            "print(hashlib.sha256(json.dumps({k: {s: d.to_list() for s, d in v.items()} for k, v in ds.items()}, "
            "sort_keys=True).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": h}).stdout for h in ("1", "2")}
    assert len(digests) == 1


def test_no_validation_document_is_a_train_document(built):
    train = set(built["corpus"]["train"]["text"])
    assert not [t for t in built["corpus"]["validation"]["text"] if t in train]


def test_held_out_people_appear_only_in_validation():
    cfg = dataclasses.replace(CFG, holdout_people=6)
    ds, world = build_world(cfg, seed=0), World(cfg, 0)
    held = {p.name for p in world.held_out}
    assert len(held) == 6 and not held & {p.name for p in world.plist}
    mentions = lambda text: held & set(re.findall(r"[A-Z][a-z]+", text))  # noqa: E731
    training_text = list(ds["corpus"]["train"]["text"])
    for name in ("dialogue", "preferences", "prompts", "qa_eval"):
        for split in ds[name].values():
            training_text += [json.dumps(row) for row in split.select_columns(
                [c for c in split.column_names if c != "candidates"]).to_list()]
    assert not [t for t in training_text if mentions(t)]
    validation = list(ds["corpus"]["validation"]["text"])
    assert validation and all(mentions(t) for t in validation)  # their stories and profiles, nothing else
    for person in world.held_out:  # relations stay among the held-out people
        assert {person.facts["sibling"], person.facts["friend"]} - {""} <= held


def test_held_out_people_lower_the_sentence_overlap():
    from pipeline.data.overlap import split_overlap

    shares = {}
    for holdout in (0, 6):
        corpus = build_world(dataclasses.replace(CFG, holdout_people=holdout), seed=0)["corpus"]
        shares[holdout] = split_overlap(corpus["train"]["text"], corpus["validation"]["text"])["sentence_share"]
    assert shares[6] < 0.5 * shares[0]


def test_holdout_people_is_checked():
    with pytest.raises(ValueError, match="holdout_people"):
        WorldConfig(n_people=10, holdout_people=7)
