"""word2vec text/binary vectors: round trips, gensim reads ours and we read gensim's, one-line errors."""

import numpy as np
import pytest
from gensim.models import KeyedVectors

from pipeline.embeddings.vectors import VectorsError, WordVectors, read_vectors, write_binary, write_text

WORDS = ["the", "of", "Paris", "café", "naïve", "x-ray", "1984", "a\tb"]


@pytest.fixture
def vectors() -> WordVectors:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((len(WORDS), 7)) * np.logspace(-6, 3, 7)     # tiny to large magnitudes
    return WordVectors(WORDS, matrix)


def assert_same(got: WordVectors, want: WordVectors):
    assert got.words == want.words and got.matrix.dtype == np.float32
    assert np.array_equal(got.matrix, want.matrix)                        # bit for bit, float32
    assert got.index == {w: i for i, w in enumerate(want.words)}


@pytest.mark.parametrize("writer", [write_text, write_binary])
def test_round_trip_exact_and_format_detected(tmp_path, vectors, writer):
    path = writer(tmp_path / "vectors", vectors)
    assert_same(read_vectors(path), vectors)
    assert_same(read_vectors(path, binary=writer is write_binary), vectors)
    assert vectors.dim == 7 and len(vectors) == len(WORDS) and "café" in vectors
    assert np.array_equal(vectors["Paris"], vectors.matrix[2])


@pytest.mark.parametrize("binary", [False, True])
def test_gensim_reads_our_files(tmp_path, vectors, binary):
    path = (write_binary if binary else write_text)(tmp_path / "vectors", vectors)
    kv = KeyedVectors.load_word2vec_format(str(path), binary=binary)
    assert kv.index_to_key == WORDS and kv.vectors.dtype == np.float32
    assert np.array_equal(kv.vectors, vectors.matrix)


@pytest.mark.parametrize("binary", [False, True])
def test_we_read_gensim_files(tmp_path, vectors, binary):
    kv = KeyedVectors(vectors.dim)
    kv.add_vectors(vectors.words, vectors.matrix)
    kv.save_word2vec_format(str(tmp_path / "gensim"), binary=binary)        # binary: no newline after a vector
    assert_same(read_vectors(tmp_path / "gensim"), vectors)


def test_binary_records_may_end_in_a_newline_or_not(tmp_path):
    body = [b"ab " + np.array([1, 2], "<f4").tobytes(), b"cd " + np.array([3, 4], "<f4").tobytes()]
    for separator in (b"", b"\n"):
        (tmp_path / "v.bin").write_bytes(b"2 2\n" + separator.join(body) + separator)
        got = read_vectors(tmp_path / "v.bin")
        assert got.words == ["ab", "cd"] and got.matrix.tolist() == [[1, 2], [3, 4]]


ONE_VECTOR = np.array([0.5, -1.0], "<f4").tobytes()
BAD_FILES = {
    "empty": (b"", "empty file"),
    "blank": (b"\n\n", "empty file"),
    "header with one number": (b"2\nthe 1 2\nof 3 4\n", "line 1: expected the word2vec header 'COUNT DIM'"),
    "header not numbers": (b"two dims\nthe 1 2\n", "line 1: expected the word2vec header"),
    "header zero dim": (b"1 0\nthe\n", "line 1: expected the word2vec header"),
    "no header (GloVe)": (b"the 0.1 0.2\nof 0.3 0.4\n", "line 1: .*without a header"),
    "too few values": (b"2 3\nthe 1 2 3\nof 1 2\n", "line 3: word 'of' has 2 values; the header says 3"),
    "too many values": (b"2 2\nthe 1 2 3\nof 1 2\n", "line 2: word 'the' has 3 values; the header says 2"),
    "not a number": (b"2 2\nthe 1 2\nof 1 two\n", "line 3: word 'of': value 'two' is not a number"),
    "not finite": (b"2 2\nthe 1 nan\nof 1 2\n", "line 2: word 'the' has a value that is not a finite number"),
    "fewer rows": (b"3 2\nthe 1 2\nof 3 4\n", "line 4: the file ends after 2 rows; its header says 3"),
    "more rows": (b"1 2\nthe 1 2\nof 3 4\n", "line 3: more rows than the 1 its header says"),
    "empty line": (b"2 2\nthe 1 2\n\nof 3 4\n", "line 3: no word"),
    "duplicate word": (b"2 2\nthe 1 2\nthe 3 4\n", "duplicate word 'the' \\(rows 1 and 2\\)"),
    "binary truncated": (b"2 2\nthe " + ONE_VECTOR + b"\nof " + ONE_VECTOR[:5],
                         "record 2 \\(byte 17\\): the file ends after 1 vectors; its header says 2"),
    "binary count too small": (b"1 2\nthe " + ONE_VECTOR + b"\nof " + ONE_VECTOR,
                               "byte 16: data after the 1 vectors its header says"),
    "binary dim wrong": (b"2 1\nthe " + ONE_VECTOR + b"\nof " + ONE_VECTOR,
                         "record 2 \\(byte 12\\): no readable word before the vector"),
    "binary not finite": (b"1 2\nthe " + np.array([np.inf, 0], "<f4").tobytes(),
                          "record 1 \\(byte 4\\): word 'the' has a value that is not a finite number"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_one_line_errors_naming_file_and_line(tmp_path, case):
    content, message = BAD_FILES[case]
    path = tmp_path / "bad.vec"
    path.write_bytes(content)
    with pytest.raises(VectorsError, match=message) as caught:
        read_vectors(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and "\n" not in text and isinstance(caught.value, ValueError)


def test_missing_file_and_unwritable_words(tmp_path):
    with pytest.raises(VectorsError, match="missing.vec: cannot read"):
        read_vectors(tmp_path / "missing.vec")
    with pytest.raises(VectorsError, match="holds a space or newline"):
        WordVectors(["new york"], np.zeros((1, 2)))
    with pytest.raises(VectorsError, match="shape"):
        WordVectors(["a", "b"], np.zeros((3, 2)))
