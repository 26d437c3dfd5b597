"""The evaluate modules load with stock `evaluate.load(path)` (no network) and give hand-computed numbers."""

import math

import evaluate
import pytest

from pipeline.metrics.modules import NAMES, path


def test_every_module_loads_by_path_offline():
    for name in NAMES:
        module = evaluate.load(path(name), keep_in_memory=True)
        assert isinstance(module, evaluate.EvaluationModule) and module.name == name


def test_bits_per_byte_by_hand():
    # tokens of 3, 0 (a separator) and 2 bytes: bits = (1.0 + 0.5) / ln 2 over 5 bytes; nats/token over all three
    result = evaluate.load(path("bits_per_byte")).compute(nll=[1.0, 2.0, 0.5], token_bytes=[3, 0, 2])
    assert result["bits_per_byte"] == pytest.approx(1.5 / math.log(2) / 5, rel=1e-15)
    assert result["nats_per_token"] == pytest.approx(3.5 / 3)
    assert (result["predicted_tokens"], result["scored_tokens"], result["bytes"]) == (3, 2, 5)
    with pytest.raises(ValueError, match="no predicted token has any bytes"):
        evaluate.load(path("bits_per_byte")).compute(nll=[1.0], token_bytes=[0])


def test_qa_exact_match_is_strict_where_contains_is_loose():
    result = evaluate.load(path("qa_exact_match")).compute(
        predictions=["Mara lives in Lisbon.", "Lisbon or Porto", "What is 8-0?", "8"],
        references=["Lisbon", "Lisbon", "8", "8"], subjects=["Mara", "Mara", "8-0", "8-0"],
        answer_types=["choice", "choice", "integer", "integer"], candidates=[["Lisbon", "Porto"]] * 2 + [[]] * 2,
        categories=["town", "town", "sum", "sum"])
    assert result["hits"] == [True, False, False, True]      # a list of guesses and an echo answer nothing
    assert result["exact_match"] == 0.5 and result["contains_answer"] == 1.0
    assert result["by_category"]["town"] == {"rows": 2, "exact_match": 0.5, "contains_answer": 1.0}


def test_reward_accuracy_counts_ties_as_wrong():
    result = evaluate.load(path("reward_accuracy")).compute(
        chosen_rewards=[1.0, 2.0, 0.5, 0.0], rejected_rewards=[0.0, 2.0, 1.0, -1.0], kinds=["a", "a", "b", "b"],
        skipped=3)
    assert result["accuracy"] == 0.5 and result["accuracy_by_kind"] == {"a": 0.5, "b": 0.5}
    assert result["margin_mean"] == pytest.approx((1 + 0 - 0.5 + 1) / 4) and result["pairs_skipped"] == 3
    # margins 1, 0, -0.5, 1 -> p = .731, .5, .378, .731 and their complements; 10 bins of width 0.1
    p = [1 / (1 + math.exp(-m)) for m in (1, 0, -0.5, 1)]
    bins = {}
    for prob, outcome in [(q, 1) for q in p] + [(1 - q, 0) for q in p]:
        bins.setdefault(min(int(prob * 10), 9), []).append((prob, outcome))
    ece = sum(len(b) / 8 * abs(sum(x for x, _ in b) / len(b) - sum(y for _, y in b) / len(b)) for b in bins.values())
    assert result["calibration"]["ece"] == pytest.approx(ece)


def test_win_rate_with_wilson_intervals_by_hand():
    result = evaluate.load(path("win_rate")).compute(scores=[1.0, 2.0, 3.0, 0.5], other_scores=[0.0, 2.0, 1.0, 1.0])
    assert (result["wins"], result["ties"], result["losses"]) == (2, 1, 1)
    assert result["win_rate"] == 0.5 and result["decisive_win_rate"] == pytest.approx(2 / 3)
    # Wilson, 2 of 4, z = 1.96: centre 0.5, half-width 0.34997 (worked by hand)
    assert result["win_rate_ci95"] == pytest.approx([0.15004, 0.84996], abs=1e-4)
    all_ties = evaluate.load(path("win_rate")).compute(scores=[1.0], other_scores=[1.0])
    assert all_ties["tie_rate"] == 1.0 and all_ties["decisive_win_rate"] is None


def test_word_analogy_by_hand():
    result = evaluate.load(path("word_analogy")).compute(
        predictions=["queen", "Paris", "", "running", "went"], references=["queen", "Rome", "Oslo", "running", "gone"],
        sections=["family", "capital-world", "capital-world", "gram5-present-participle", "gram7-past-tense"],
        skipped=[False, False, True, False, False])
    assert (result["questions"], result["answered"], result["correct"], result["skipped"]) == (5, 4, 2, 1)
    assert result["accuracy"] == 0.5 and result["skipped_ratio"] == 0.2
    assert result["semantic_accuracy"] == 0.5 and result["syntactic_accuracy"] == 0.5
    assert result["by_section"]["capital-world"] == {"questions": 2, "answered": 1, "correct": 0, "accuracy": 0.0}
    assert list(result["by_section"]) == ["family", "capital-world", "gram5-present-participle", "gram7-past-tense"]
    nothing = evaluate.load(path("word_analogy")).compute(predictions=[""], references=["x"], sections=["family"],
                                                           skipped=[True])
    assert nothing["accuracy"] is None and nothing["by_section"]["family"]["accuracy"] is None


def test_word_similarity_spearman_with_ties_by_hand():
    # human ranks 1, 2.5, 2.5, 4, 5; model ranks 1, 4, 2.5, 2.5, 5 (0.3 twice); deviations from 3:
    # dx = -2 -.5 -.5 1 2, dy = -2 1 -.5 -.5 2: sum dx dy = 7.25, sum dx^2 = sum dy^2 = 9.5
    result = evaluate.load(path("word_similarity")).compute(human=[1, 2, 2, 3, 5], model=[0.1, 0.4, 0.3, 0.3, 0.9],
                                                             skipped=5)
    assert result["spearman"] == pytest.approx(7.25 / 9.5, abs=1e-15)
    # pearson: human mean 2.6, model mean 0.4: sum dx dy = .48 + 0 + .06 - .04 + 1.2 = 1.7, sums of squares 9.2, .36
    assert result["pearson"] == pytest.approx(1.7 / math.sqrt(9.2 * 0.36), abs=1e-12)
    assert (result["pairs"], result["skipped"], result["oov_ratio"]) == (5, 5, 50.0)
    constant = evaluate.load(path("word_similarity")).compute(human=[1, 2], model=[0.5, 0.5])
    assert constant["spearman"] is None and constant["pearson"] is None
