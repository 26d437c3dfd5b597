"""Strict exact match, contains-answer and the floors, against verdicts worked out by hand."""

import random

import pytest
from datasets import Dataset

from pipeline.data.world import World, WorldConfig, build_world
from pipeline.metrics.qa import contains_answer, exact_match, floor_replies, qa_floors, score_replies

COLORS = ["red", "blue", "green", "teal"]
NAMES = ["Mara", "Tom", "Ava"]


@pytest.mark.parametrize("reply, correct", [
    ("8 - 0 = 8.", True),                     # the world's reply grammar
    ("8 minus 0 is 8.", True),
    ("The answer is 8.", True),
    ("8", True),
    ("8-0 is ...", False),                    # an echo of the question: contains "8", answers nothing
    ("What is 8-0?", False),
    ("8 or 9.", False),                       # two candidates
    ("It is 80.", False),
    ("8.5", False),
])
def test_strict_arithmetic(reply, correct):
    assert exact_match(reply, "8", subject="8-0", answer_type="integer") is correct


def test_the_old_score_is_fooled_by_echo_and_lists():
    assert contains_answer("8-0 is ...", "8") and not exact_match("8-0 is ...", "8", "8-0", "integer")
    listing = "Mara's favourite colour is red, blue, green or teal."
    assert contains_answer(listing, "green")
    assert not exact_match(listing, "green", "Mara", "choice", COLORS)


@pytest.mark.parametrize("reply, correct", [
    ("Mara's favourite colour is green.", True),
    ("Sure! Green.", True),
    ("Mara's favourite colour is blue.", False),
    ("Mara likes green and teal.", False),
    ("What is Mara's favourite colour?", False),
    ("greenish", False),                      # not the word green
])
def test_strict_choice(reply, correct):
    assert exact_match(reply, "green", subject="Mara", answer_type="choice", candidates=COLORS) is correct


def test_subject_name_is_not_an_answer():
    # "Who is Mara's friend?": the reply repeats Mara, which is a name like the answer
    assert exact_match("Mara's best friend is Tom.", "Tom", "Mara", "choice", NAMES)
    assert not exact_match("Mara's best friend is Mara.", "Tom", "Mara", "choice", NAMES)
    assert not exact_match("Tom and Ava.", "Tom", "Mara", "choice", NAMES)


def test_age_echo_and_two_numbers():
    assert exact_match("Mara is 34 years old.", "34", "Mara", "integer")
    assert not exact_match("How old is Mara?", "34", "Mara", "integer")
    assert not exact_match("Mara is 34 or 43.", "34", "Mara", "integer")
    assert exact_match("Mara is 034.", "34", "Mara", "integer")


def test_untyped_rows_need_the_whole_reply():
    assert exact_match(" Lisbon. ", "lisbon")
    assert not exact_match("It is Lisbon.", "Lisbon")
    with pytest.raises(ValueError, match="answer_type"):
        exact_match("1", "1", "x", "number")


def _qa(rows):
    return Dataset.from_list([{"question": q, "answer": a, "category": c, "subject": s, "answer_type": t,
                               "candidates": cands} for q, a, c, s, t, cands in rows])


def test_score_and_floors_by_hand():
    qa = _qa([
        ("What is 8-0?", "8", "arithmetic", "8-0", "integer", []),
        ("What is 2+3?", "5", "arithmetic", "2+3", "integer", []),
        ("What is 9*1?", "9", "arithmetic", "9*1", "integer", []),
        ("What is Mara's favourite colour?", "green", "color", "Mara", "choice", COLORS),
        ("What is Tom's favourite colour?", "green", "color", "Tom", "choice", COLORS),
        ("What is Ava's favourite colour?", "red", "color", "Ava", "choice", COLORS),
    ])
    replies = ["8 - 0 = 8.", "2 + 3 = 6.", "9", "green", "Tom likes green or red.", "red"]
    scored = score_replies(replies, qa)
    # strict: rows 0, 2, 3, 5 -> 4/6; contains: rows 0, 2, 3, 4, 5 -> 5/6
    assert scored["exact_match"] == pytest.approx(4 / 6)
    assert scored["contains_answer"] == pytest.approx(5 / 6)
    assert scored["by_category"]["arithmetic"] == {"rows": 3, "exact_match": pytest.approx(2 / 3),
                                                   "contains_answer": pytest.approx(2 / 3)}
    floors = qa_floors(qa)
    # echo: no strict hit; contains: "8-0" contains 8, "9*1" contains 9 -> 2/6
    assert floors["echo"]["exact_match"] == 0
    assert floors["echo"]["contains_answer"] == pytest.approx(2 / 6)
    # majority: arithmetic answers 8, 5, 9 all once -> "5" (alphabetically first); colour -> green (2 of 3)
    assert floor_replies(qa)["majority"] == ["5", "5", "5", "green", "green", "green"]
    assert floors["majority"]["exact_match"] == pytest.approx(3 / 6)


def test_world_replies_score_and_echoes_do_not():
    """Every correct reply the world writes scores strictly; the question itself never does."""
    cfg = WorldConfig(n_people=20, corpus_bytes=20_000, n_eval=200)
    qa = build_world(cfg, seed=3)["qa_eval"]["test"]
    assert set(qa.column_names) >= {"subject", "answer_type", "candidates"}
    world, rng = World(cfg, 3), random.Random(0)
    replies = [world.reply(world.key_of(q), rng) for q in qa["question"]]
    assert score_replies(replies, qa)["exact_match"] == 1.0
    assert qa_floors(qa)["echo"]["exact_match"] == 0.0
