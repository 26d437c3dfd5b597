"""Intrinsic evaluation of word vectors: analogies (3CosAdd), word-pair similarity (Spearman), nearest neighbours.

    vectors = read_vectors("vectors.txt")
    analogy_accuracy(vectors, read_analogies("questions-words.txt"))    # accuracy, by_section, semantic/syntactic
    similarity_spearman(vectors, read_similarity("wordsim353.tsv"))     # spearman, pearson, pairs, skipped
    nearest_neighbours(vectors, ["king", "paris"], k=5)                 # {"king": [("queen", 0.71), ...], ...}

The numbers are gensim's (`KeyedVectors.evaluate_word_analogies` / `evaluate_word_pairs`, checked against it in
tests/unit/embeddings), and the final ones are computed by the `word_analogy` and `word_similarity` evaluate
modules (`pipeline.metrics.modules`), so a stage and `pipeline eval` agree by construction:

    vocabulary  the first `restrict_vocab` words of the file (frequency order). case_insensitive: words compare
                upper-cased, and a word stands for the first of its case variants in that range.
    analogy     "a b c d" is skipped (out of vocabulary) when any of the four is outside the vocabulary; else the
                prediction is the vocabulary word w maximising cos(w, b^ - a^ + c^) (x^ = x / |x|, 3CosAdd), w
                not a, b or c (nor a case variant of them); correct when it is d. Scored in float32 matrix
                products, a batch of questions at a time.
    similarity  a pair is skipped when either word is outside the vocabulary; else the model's number is the
                cosine of the two vectors (float64); Spearman and Pearson against the human scores.

File formats (`read_analogies`, `read_similarity`) are those of gensim's test data: questions-words.txt has
": section" lines, then "a b c d" lines (sections named gram* are syntactic, the others semantic: `is_syntactic`);
wordsim353.tsv has "word1<TAB>word2<TAB>score" lines after "#" comments; SimLex-999's own file has a header
row (word1 word2 POS SimLex999 ...) naming the score column. A malformed line raises `VectorsError` naming the
file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from pipeline.embeddings.vectors import VectorsError, WordVectors, is_float

SCORES_PER_BATCH = 1 << 25   # analogy scores held at once (questions x vocabulary): 128 MiB of float32


class Analogy(NamedTuple):
    section: str
    a: str
    b: str
    c: str
    d: str


class WordPair(NamedTuple):
    a: str
    b: str
    score: float


def is_syntactic(section: str) -> bool:
    """A questions-words.txt section is syntactic when named gram* (gram1-adjective-to-adverb ...)."""
    return section.startswith("gram")


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise VectorsError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise VectorsError(f"{path}: not UTF-8 text") from None
    return enumerate((line.rstrip("\r") for line in text.split("\n")), start=1)


def read_analogies(path: str | Path) -> list[Analogy]:
    """The questions of a questions-words.txt-format file, in file order."""
    path = Path(path)
    questions, section = [], None
    for number, line in _lines(path):
        if not line.strip():
            continue
        if line.startswith(":"):
            section = line.lstrip(": ").strip()
            if not section:
                raise VectorsError(f"{path}: line {number}: a section line with no name")
            continue
        words = line.split()
        if section is None:
            raise VectorsError(f"{path}: line {number}: a question before the first ': section' line")
        if len(words) != 4:
            raise VectorsError(f"{path}: line {number}: expected 4 words 'a b c d', got {len(words)}")
        questions.append(Analogy(section, *words))
    if not questions:
        raise VectorsError(f"{path}: no analogy questions (expected ': section' lines, then 'a b c d' lines)")
    return questions


def read_similarity(path: str | Path) -> list[WordPair]:
    """The scored word pairs of a wordsim353.tsv- or simlex999.txt-format file, in file order."""
    path = Path(path)
    pairs, column = [], None
    for number, line in _lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        fields = [f.strip() for f in (line.split("\t") if "\t" in line else line.split())]
        if column is None:                                       # the first row: a header, or data
            named = [i for i, f in enumerate(fields) if f.lower() == "simlex999"]
            column = named[0] if named else 2
            if named or (len(fields) >= 3 and not is_float(fields[2])):
                continue
        if len(fields) <= max(column, 2) or not fields[0] or not fields[1]:
            raise VectorsError(f"{path}: line {number}: expected 'word1 word2 score' (tab-separated), "
                               f"got {len(fields)} fields")
        if not is_float(fields[column]):
            raise VectorsError(f"{path}: line {number}: score {fields[column]!r} is not a number")
        pairs.append(WordPair(fields[0], fields[1], float(fields[column])))
    if not pairs:
        raise VectorsError(f"{path}: no scored word pairs (expected 'word1<TAB>word2<TAB>score' lines)")
    return pairs


class _Vocabulary:
    """The first `restrict_vocab` rows, looked up by (case-folded) word; a word's row is its first case variant."""

    def __init__(self, vectors: WordVectors, restrict_vocab: int | None, case_insensitive: bool):
        self.size = min(restrict_vocab, len(vectors)) if restrict_vocab else len(vectors)
        self.fold = str.upper if case_insensitive else str
        self.rows: dict[str, int] = {}
        for row, word in enumerate(vectors.words[:self.size]):
            self.rows.setdefault(self.fold(word), row)
        self.canonical = np.array([self.rows[self.fold(w)] for w in vectors.words[:self.size]], dtype=np.int64)
        others = np.flatnonzero(self.canonical != np.arange(self.size))      # rows that are not their word's first
        self.variants: dict[int, list[int]] = {}                             # first row -> the other case variants
        for row in others.tolist():
            self.variants.setdefault(int(self.canonical[row]), []).append(row)

    def row(self, word: str) -> int:
        return self.rows.get(self.fold(word), -1)


def _unit(matrix: np.ndarray, dtype=np.float32) -> np.ndarray:
    matrix = matrix.astype(dtype)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1)


def predict_analogies(vectors: WordVectors, questions: list[Analogy], restrict_vocab: int | None = 30000,
                      case_insensitive: bool = True) -> tuple[np.ndarray, np.ndarray, _Vocabulary]:
    """3CosAdd: rows (n, 4) of a, b, c, d in the vocabulary (-1 outside) and the predicted row (-1 when skipped)."""
    vocab = _Vocabulary(vectors, restrict_vocab, case_insensitive)
    rows = np.array([[vocab.row(w) for w in q[1:]] for q in questions], dtype=np.int64).reshape(-1, 4)
    predicted = np.full(len(questions), -1, dtype=np.int64)
    answered = np.flatnonzero((rows >= 0).all(axis=1))
    unit = torch.from_numpy(_unit(vectors.matrix[:vocab.size]))
    have_variants = np.array(sorted(vocab.variants), dtype=np.int64)
    batch = max(1, SCORES_PER_BATCH // vocab.size)
    for start in range(0, len(answered), batch):
        abc = rows[answered[start:start + batch], :3]
        abc_t = torch.from_numpy(abc)
        scores = (unit[abc_t[:, 1]] - unit[abc_t[:, 0]] + unit[abc_t[:, 2]]) @ unit.T     # (batch, vocabulary)
        scores.scatter_(1, abc_t, -torch.inf)                                             # never a, b or c
        for i, j in zip(*np.nonzero(np.isin(abc, have_variants))):                        # nor a case variant
            scores[i, vocab.variants[int(abc[i, j])]] = -torch.inf
        predicted[answered[start:start + batch]] = scores.argmax(dim=1).numpy()
    return rows, predicted, vocab


def analogy_accuracy(vectors: WordVectors, questions: list[Analogy], restrict_vocab: int | None = 30000,
                     case_insensitive: bool = True) -> dict:
    """3CosAdd analogy accuracy among the first `restrict_vocab` words: the `word_analogy` module's numbers
    (accuracy, semantic/syntactic_accuracy, by_section, answered, skipped, ...) plus restrict_vocab used."""
    from pipeline.metrics.modules import load

    rows, predicted, vocab = predict_analogies(vectors, questions, restrict_vocab, case_insensitive)
    words = vectors.words
    skipped = predicted < 0
    predictions = ["" if p < 0 else words[vocab.canonical[p]] for p in predicted]
    references = [q.d if skip else words[r] for q, r, skip in zip(questions, rows[:, 3], skipped)]
    result = load("word_analogy").compute(predictions=predictions, references=references,
                                          sections=[q.section for q in questions], skipped=skipped.tolist())
    return {**result, "restrict_vocab": vocab.size}


def similarity_spearman(vectors: WordVectors, pairs: list[WordPair], restrict_vocab: int | None = 300000,
                        case_insensitive: bool = True) -> dict:
    """Spearman (and Pearson) of cosine similarities against human scores over the pairs with both words among
    the first `restrict_vocab`: the `word_similarity` module's spearman, pearson, pairs, skipped, oov_ratio."""
    from pipeline.metrics.modules import load

    vocab = _Vocabulary(vectors, restrict_vocab, case_insensitive)
    rows = np.array([[vocab.row(p.a), vocab.row(p.b)] for p in pairs], dtype=np.int64).reshape(-1, 2)
    known = (rows >= 0).all(axis=1)
    if not known.any():
        raise VectorsError(f"none of the {len(pairs)} word pairs has both words among the first {vocab.size} "
                           f"words of the vectors")
    unit = _unit(vectors.matrix[:vocab.size], np.float64)
    model = (unit[rows[known, 0]] * unit[rows[known, 1]]).sum(axis=1)
    human = np.array([p.score for p in pairs], dtype=np.float64)[known]
    result = load("word_similarity").compute(human=human.tolist(), model=model.tolist(),
                                             skipped=int((~known).sum()))
    return {**result, "restrict_vocab": vocab.size}


def nearest_neighbours(vectors: WordVectors, words: list[str], k: int = 5,
                       restrict_vocab: int | None = None) -> dict[str, list[tuple[str, float]]]:
    """The k words of highest cosine to each of `words` (itself left out), among the first `restrict_vocab`;
    words not in the vectors are left out of the answer."""
    size = min(restrict_vocab, len(vectors)) if restrict_vocab else len(vectors)
    known = [w for w in words if w in vectors.index]
    if not known:
        return {}
    unit = _unit(vectors.matrix)
    query = np.array([vectors.index[w] for w in known])
    scores = unit[query] @ unit[:size].T
    inside = query < size
    scores[np.flatnonzero(inside), query[inside]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {w: [(vectors.words[j], float(scores[i, j])) for j in top[i] if scores[i, j] > -np.inf]
            for i, w in enumerate(known)}
