"""Word-vector evaluation (pipeline/embeddings/evaluation.py) against gensim as the independent peer, and by hand.

(Named test_word_evaluation.py, not test_evaluation.py: tests/unit/rl/test_evaluation.py exists, and test folders
have no __init__.py, so two equal basenames would break collection of the whole suite.)
"""

import math
from pathlib import Path

import gensim
import numpy as np
import pytest
from gensim.models import KeyedVectors
from scipy import stats

from pipeline.embeddings.evaluation import (
    Analogy,
    WordPair,
    analogy_accuracy,
    is_syntactic,
    nearest_neighbours,
    read_analogies,
    read_similarity,
    similarity_spearman,
)
from pipeline.embeddings.vectors import VectorsError, WordVectors, write_binary

GENSIM_DATA = Path(gensim.__file__).parent / "test" / "test_data"
QUESTIONS, WORDSIM, SIMLEX = (GENSIM_DATA / name for name in ("questions-words.txt", "wordsim353.tsv",
                                                               "simlex999.txt"))
RESTRICT = 1800     # of ~2,200 words: questions with a word among the last ~400 are skipped as out of vocabulary


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Random 32-d vectors over every word of the three gensim files, plus case variants of some of them, with
    per-section offsets planted (d = c + offset + noise for ~70% of the pairs) so accuracy is far from 0;
    written by our binary writer and loaded by gensim."""
    questions = read_analogies(QUESTIONS)
    pairs = read_similarity(WORDSIM) + read_similarity(SIMLEX)
    rng = np.random.default_rng(0)
    words = list(dict.fromkeys([w for q in questions for w in q[1:]] + [w for p in pairs for w in p[:2]]))
    rng.shuffle(words)
    variants = [w.lower() if w != w.lower() else w.upper() for w in words[:300:5]]     # "Athens" -> "athens"
    for variant, position in zip(variants, rng.integers(0, RESTRICT, len(variants))):
        words.insert(int(position), variant)     # some before their original: they become the canonical row
    matrix = rng.standard_normal((len(words), 32)).astype(np.float32)
    row = {w: i for i, w in enumerate(words)}
    done = set()
    for section in dict.fromkeys(q.section for q in questions):
        offset = 1.5 * rng.standard_normal(32)
        for q in (q for q in questions if q.section == section):
            for x, y in ((q.a, q.b), (q.c, q.d)):
                if x not in done and y not in done and rng.random() < 0.7:
                    matrix[row[y]] = matrix[row[x]] + offset + 0.3 * rng.standard_normal(32)
                    done.add(y)
    vectors = WordVectors(words, matrix)
    path = write_binary(tmp_path_factory.mktemp("vectors") / "vectors.bin", vectors)
    return vectors, KeyedVectors.load_word2vec_format(str(path), binary=True), questions


@pytest.mark.parametrize("case_insensitive", [True, False])
def test_analogy_accuracy_matches_gensim_exactly(planted, case_insensitive):
    vectors, kv, questions = planted
    ours = analogy_accuracy(vectors, questions, restrict_vocab=RESTRICT, case_insensitive=case_insensitive)
    score, sections = kv.evaluate_word_analogies(str(QUESTIONS), restrict_vocab=RESTRICT,
                                                 case_insensitive=case_insensitive)
    assert ours["accuracy"] == score and 0.3 < score < 0.9
    total = sections.pop()
    assert ours["correct"] == len(total["correct"]) and ours["answered"] == len(total["correct"] + total["incorrect"])
    assert 0 < ours["skipped"] < len(questions) and ours["questions"] == len(questions) == 19544
    assert list(ours["by_section"]) == [s["section"] for s in sections]
    for section in sections:
        mine = ours["by_section"][section["section"]]
        assert (mine["correct"], mine["answered"] - mine["correct"]) == (len(section["correct"]),
                                                                        len(section["incorrect"]))
    semantic = [ours["by_section"][s["section"]] for s in sections if not s["section"].startswith("gram")]
    assert ours["semantic_accuracy"] == sum(s["correct"] for s in semantic) / sum(s["answered"] for s in semantic)
    assert ours["restrict_vocab"] == RESTRICT


@pytest.mark.parametrize("path", [WORDSIM, SIMLEX], ids=lambda p: p.name)
@pytest.mark.parametrize("restrict_vocab", [1000, 300000])
def test_similarity_spearman_matches_gensim(planted, path, restrict_vocab):
    vectors, kv, _ = planted
    ours = similarity_spearman(vectors, read_similarity(path), restrict_vocab=restrict_vocab)
    pearson, spearman, oov_ratio = kv.evaluate_word_pairs(str(path), restrict_vocab=restrict_vocab)
    assert ours["spearman"] == pytest.approx(spearman.statistic, abs=1e-9)
    assert ours["pearson"] == pytest.approx(pearson.statistic, abs=1e-6)     # gensim's cosines are float32
    assert ours["oov_ratio"] == pytest.approx(oov_ratio, rel=1e-12)
    assert ours["pairs"] + ours["skipped"] == len(read_similarity(path))
    assert (ours["skipped"] > 0) == (restrict_vocab == 1000)


def test_nearest_neighbours_match_gensim(planted):
    vectors, kv, _ = planted
    ours = nearest_neighbours(vectors, ["king", "Athens", "not-a-word"], k=4)
    assert list(ours) == ["king", "Athens"]
    for word, neighbours in ours.items():
        theirs = kv.most_similar(word, topn=4)
        assert [w for w, _ in neighbours] == [w for w, _ in theirs]
        assert [s for _, s in neighbours] == pytest.approx([s for _, s in theirs], abs=1e-6)


def test_questions_words_sections_split_semantic_and_syntactic():
    questions = read_analogies(QUESTIONS)
    sections = list(dict.fromkeys(q.section for q in questions))
    assert questions[0] == Analogy("capital-common-countries", "Athens", "Greece", "Baghdad", "Iraq")
    assert [s for s in sections if not is_syntactic(s)] == [
        "capital-common-countries", "capital-world", "currency", "city-in-state", "family"]
    assert sum(is_syntactic(q.section) for q in questions) == 10675 and len(sections) == 14


def test_3cosadd_by_hand_with_exclusion_and_restricted_vocabulary():
    # man=(1,0), king=(1,1), woman=(0,1), queen=(-1,1), apple=(-5,1), Woman=(0.1,1); x^ = x/|x|
    vectors = WordVectors(["man", "king", "woman", "queen", "apple", "Woman"],
                          np.array([[1, 0], [1, 1], [0, 1], [-1, 1], [-5, 1], [0.1, 1]], dtype=np.float32))
    questions = [Analogy("family", "man", "king", "woman", "queen"),
                 Analogy("family", "MAN", "King", "woman", "apple"),
                 Analogy("family", "man", "king", "woman", "pear"),
                 Analogy("gram-x", "king", "man", "queen", "woman")]
    # q1: t = king^ - man^ + woman^ = (-0.293, 1.707); cos: woman 0.986 and Woman 0.964 (an input and its case
    #     variant: excluded), queen 0.816, apple 0.359 -> queen, correct.  q2: the same, expects apple: wrong.
    #     q3: pear unknown: skipped.  q4: t = man^ - king^ + queen^ = (-0.414, 0): cos woman 0, Woman -0.100,
    #     apple 0.981 -> apple, expects woman: wrong.
    result = analogy_accuracy(vectors, questions)
    assert (result["correct"], result["answered"], result["skipped"]) == (1, 3, 1)
    assert result["accuracy"] == pytest.approx(1 / 3) and result["semantic_accuracy"] == 0.5
    assert result["syntactic_accuracy"] == 0.0 and result["by_section"]["family"]["questions"] == 3
    # only the first 4 words: q2 (apple) is skipped too, and q4's only candidate left is woman: correct
    result = analogy_accuracy(vectors, questions, restrict_vocab=4)
    assert (result["correct"], result["answered"], result["skipped"]) == (2, 2, 2) and result["accuracy"] == 1.0
    # case-sensitive: "MAN" and "King" are unknown words (q2 skipped), and q1's answer is now Woman: wrong
    result = analogy_accuracy(vectors, questions, case_insensitive=False)
    assert (result["correct"], result["answered"], result["skipped"]) == (0, 2, 2)


def test_spearman_by_hand_with_ties():
    # cosines: (a,b) 1, (a,c) 0, (c,b) 0, (a,d) s, (c,d) s with s = 1/sqrt(2): ranks 5, 1.5, 1.5, 3.5, 3.5;
    # human 3, 1, 2, 2, 1: ranks 5, 1.5, 3.5, 3.5, 1.5. Deviations from the mean rank 3: dx = 2 -1.5 -1.5 .5 .5,
    # dy = 2 -1.5 .5 .5 -1.5: sum dx dy = 4 + 2.25 - .75 + .25 - .75 = 5, sum dx^2 = sum dy^2 = 9 -> 5/9
    vectors = WordVectors(["a", "b", "c", "d", "e"], np.array([[1, 0], [2, 0], [0, 3], [1, 1], [9, 9]]))
    pairs = [WordPair("a", "b", 3), WordPair("a", "c", 1), WordPair("c", "b", 2), WordPair("a", "d", 2),
             WordPair("c", "d", 1), WordPair("a", "zebra", 5)]
    result = similarity_spearman(vectors, pairs)
    assert result["spearman"] == pytest.approx(5 / 9, abs=1e-15)
    s = 1 / math.sqrt(2)
    assert result["pearson"] == pytest.approx(stats.pearsonr([3, 1, 2, 2, 1], [1, 0, 0, s, s]).statistic, abs=1e-12)
    assert (result["pairs"], result["skipped"], result["oov_ratio"]) == (5, 1, pytest.approx(100 / 6))
    with pytest.raises(VectorsError, match="none of the 1 word pairs"):
        similarity_spearman(vectors, [WordPair("x", "y", 1)])


def test_similarity_files_gensim_and_simlex_formats(tmp_path):
    assert read_similarity(WORDSIM)[0] == WordPair("love", "sex", 6.77) and len(read_similarity(WORDSIM)) == 353
    assert read_similarity(SIMLEX)[0] == WordPair("old", "new", 1.58) and len(read_similarity(SIMLEX)) == 999
    simlex = tmp_path / "SimLex-999.txt"       # the distribution's own file: a header row names the score column
    simlex.write_text("word1\tword2\tPOS\tSimLex999\tconc(w1)\tconc(w2)\n"
                      "old\tnew\tA\t1.58\t2.72\t2.81\nsmart\tintelligent\tA\t9.2\t1.75\t2.46\n")
    assert read_similarity(simlex) == [WordPair("old", "new", 1.58), WordPair("smart", "intelligent", 9.2)]
    combined = tmp_path / "combined.tab"       # wordsim353's own file: a header row, no '#'
    combined.write_text("Word 1\tWord 2\tHuman (mean)\nlove\tsex\t6.77\r\n\ntiger\tcat\t7.35\n")
    assert read_similarity(combined) == [WordPair("love", "sex", 6.77), WordPair("tiger", "cat", 7.35)]


BAD_EVALUATION_FILES = {
    "analogy before a section": (read_analogies, "a b c d\n", "line 1: a question before the first"),
    "analogy with 3 words": (read_analogies, ": family\nboy girl king queen\nboy girl king\n",
                             "line 3: expected 4 words 'a b c d', got 3"),
    "analogy file empty": (read_analogies, "\n", "no analogy questions"),
    "similarity score not a number": (read_similarity, "# c\nlove\tsex\t6.77\ntiger\tcat\thigh\n",
                                      "line 3: score 'high' is not a number"),
    "similarity too few fields": (read_similarity, "love\tsex\t6.77\ntiger\tcat\n",
                                  "line 2: expected 'word1 word2 score'"),
    "similarity file empty": (read_similarity, "# only a comment\n", "no scored word pairs"),
}


@pytest.mark.parametrize("case", list(BAD_EVALUATION_FILES))
def test_bad_evaluation_files_raise_one_line_errors(tmp_path, case):
    reader, content, message = BAD_EVALUATION_FILES[case]
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(VectorsError, match=message) as caught:
        reader(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)
