"""Word vectors in the word2vec text and binary formats, as the C word2vec tool and gensim read and write them.

    vectors = read_vectors("runs/tiny/embeddings/vectors.txt")      # text or binary: detected
    vectors.words[:3], vectors.matrix.shape, vectors.index["king"]  # file order, (count, dim) float32, row of a word
    write_text("vectors.txt", vectors); write_binary("vectors.bin", vectors)

Both files load with `gensim.models.KeyedVectors.load_word2vec_format(path, binary=False/True)`:

    header   one text line "COUNT DIM" (two positive integers), in both formats
    text     then COUNT lines "WORD V1 ... VDIM": single spaces, trailing whitespace ignored; we write each value
             with 9 significant digits, which gives back the same float32
    binary   then COUNT records: the word (UTF-8) + b" " + DIM float32 little-endian, then an optional b"\\n"
             (the C tool writes it, gensim does not; we write it, and both read either)

Rows keep file order, which by convention is descending frequency: "the top 30k words" are the first 30k rows.
With `binary=None` the format is detected from the first row after the header: text when that line decodes as
UTF-8 without control characters, binary otherwise (raw float32 bytes practically never pass).

A library module: a file it cannot read raises `VectorsError` (a `ValueError`) whose one-line message starts
with the file and the line (text) or record and byte offset (binary): a missing or wrong header, a row with the
wrong number of values, a value that is not a finite number, fewer or more rows than the header says, an empty
file, a duplicate word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORBIDDEN_IN_WORDS = (" ", "\n")  # the formats' separators: such a word cannot be written or read back


class VectorsError(ValueError):
    """A word-vector (or word-evaluation) file that cannot be read, or vectors that cannot be written."""


@dataclass
class WordVectors:
    """Words in file (frequency) order, their vectors as rows of a float32 matrix, and word -> row."""

    words: list[str]
    matrix: np.ndarray
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self):
        self.words = list(self.words)
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.float32)
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.words) or not self.matrix.shape[1]:
            raise VectorsError(f"{len(self.words)} words need a ({len(self.words)}, dim) matrix with dim > 0, "
                               f"got shape {self.matrix.shape}")
        self.index = {}
        for row, word in enumerate(self.words):
            if not word or any(c in word for c in FORBIDDEN_IN_WORDS):
                raise VectorsError(f"word {row + 1} {word!r}: empty or holds a space or newline")
            if self.index.setdefault(word, row) != row:
                raise VectorsError(f"duplicate word {word!r} (rows {self.index[word] + 1} and {row + 1})")

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.index

    def __getitem__(self, word: str) -> np.ndarray:
        return self.matrix[self.index[word]]

    @property
    def dim(self) -> int:
        return self.matrix.shape[1]


def _shown(raw: bytes | str, limit: int = 60) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _header(path: Path, line: bytes) -> tuple[int, int]:
    fields = line.decode("utf-8", "replace").split()
    if len(fields) == 2 and all(f.isdigit() for f in fields) and int(fields[0]) > 0 and int(fields[1]) > 0:
        return int(fields[0]), int(fields[1])
    hint = ""
    if len(fields) > 2:
        try:
            [float(f) for f in fields[1:]]
            hint = " (a vectors file without a header, like GloVe's? add the line 'COUNT DIM' first)"
        except ValueError:
            pass
    raise VectorsError(f"{path}: line 1: expected the word2vec header 'COUNT DIM' (two positive integers), "
                       f"got {_shown(line)}{hint}")


def _looks_like_text(line: bytes) -> bool:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any(ord(c) < 32 and c not in "\t\r" for c in text)


def read_vectors(path: str | Path, binary: bool | None = None) -> WordVectors:
    """Read a word2vec text or binary file (`binary=None`: detect which) into `WordVectors`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise VectorsError(f"{path}: cannot read ({e.strerror})") from None
    if not data.strip():
        raise VectorsError(f"{path}: empty file (expected a word2vec header 'COUNT DIM', then one row per word)")
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    count, dim = _header(path, data[:end])
    start = end + 1
    if binary is None:
        first = data.find(b"\n", start)
        binary = not _looks_like_text(data[start:len(data) if first < 0 else first])
    words, matrix = (_read_binary if binary else _read_text)(path, data, start, count, dim)
    try:
        return WordVectors(words, matrix)
    except VectorsError as e:
        raise VectorsError(f"{path}: {e}") from None


def _read_text(path: Path, data: bytes, start: int, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    lines = data[start:].split(b"\n")
    while lines and not lines[-1].strip():     # trailing blank lines (and the final newline)
        lines.pop()
    words, matrix = [], np.empty((count, dim), dtype=np.float32)
    for row, raw in enumerate(lines[:count]):
        where = f"{path}: line {row + 2}"
        try:
            parts = raw.decode("utf-8").rstrip().split(" ")
        except UnicodeDecodeError:
            raise VectorsError(f"{where}: not UTF-8 text") from None
        if not parts[0]:
            raise VectorsError(f"{where}: no word (an empty line, or one that starts with a space)")
        if len(parts) - 1 != dim:
            raise VectorsError(f"{where}: word {parts[0]!r} has {len(parts) - 1} values; the header says {dim}")
        try:
            matrix[row] = np.array(parts[1:], dtype=np.float32)
        except ValueError:
            bad = next(v for v in parts[1:] if not is_float(v))
            raise VectorsError(f"{where}: word {parts[0]!r}: value {_shown(bad)} is not a number") from None
        words.append(parts[0])
    if len(lines) < count:
        raise VectorsError(f"{path}: line {len(lines) + 2}: the file ends after {len(lines)} rows; "
                           f"its header says {count}")
    if len(lines) > count:
        raise VectorsError(f"{path}: line {count + 2}: more rows than the {count} its header says")
    _check_finite(matrix, lambda row: f"{path}: line {row + 2}", words)
    return words, matrix


def is_float(text: str) -> bool:
    """`text` parses as a float (a vector component, a similarity score)."""
    try:
        float(text)
        return True
    except ValueError:
        return False


def _read_binary(path: Path, data: bytes, start: int, count: int, dim: int) -> tuple[list[str], np.ndarray]:
    size, pos = 4 * dim, start
    words, offsets = [], []
    for record in range(1, count + 1):
        while pos < len(data) and data[pos] == 0x0A:    # the C tool's newline after the previous vector
            pos += 1
        where = f"{path}: record {record} (byte {pos})"
        space = data.find(b" ", pos)
        if pos >= len(data) or space < 0 or space + 1 + size > len(data):
            raise VectorsError(f"{where}: the file ends after {record - 1} vectors; its header says {count}")
        try:
            word = data[pos:space].decode("utf-8")
        except UnicodeDecodeError:
            word = None
        if not word or not _looks_like_text(data[pos:space]):
            raise VectorsError(f"{where}: no readable word before the vector ({_shown(data[pos:space])}); "
                               f"is DIM={dim} in the header right?")
        words.append(word)
        offsets.append(space + 1)
        pos = space + 1 + size
    if data[pos:].strip(b"\n"):
        raise VectorsError(f"{path}: byte {pos}: data after the {count} vectors its header says (a wrong COUNT "
                           f"or DIM?)")
    buffer = np.frombuffer(data, dtype=np.uint8)
    matrix = np.stack([buffer[o:o + size] for o in offsets]).view("<f4").astype(np.float32)
    _check_finite(matrix, lambda row: f"{path}: record {row + 1} (byte {offsets[row] - 1 - len(words[row])})",
                  words)
    return words, matrix


def _check_finite(matrix: np.ndarray, where, words: list[str]) -> None:
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        row = int(bad[0])
        raise VectorsError(f"{where(row)}: word {words[row]!r} has a value that is not a finite number "
                           f"({len(bad)} such rows)")


def write_text(path: str | Path, vectors: WordVectors) -> Path:
    """Write `vectors` in word2vec text format (9 significant digits: the same float32 back). Returns the path."""
    path = Path(path)
    row_format = " ".join(["%.9g"] * vectors.dim) + "\n"
    with open(path, "wb") as f:
        f.write(f"{len(vectors)} {vectors.dim}\n".encode())
        for word, row in zip(vectors.words, vectors.matrix.tolist()):
            f.write(f"{word} ".encode() + (row_format % tuple(row)).encode())
    return path


def write_binary(path: str | Path, vectors: WordVectors) -> Path:
    """Write `vectors` in word2vec binary format (float32 little-endian, a newline after each). Returns the path."""
    path = Path(path)
    rows = vectors.matrix.astype("<f4")
    with open(path, "wb") as f:
        f.write(f"{len(vectors)} {vectors.dim}\n".encode())
        for word, row in zip(vectors.words, rows):
            f.write(word.encode() + b" " + row.tobytes() + b"\n")
    return path
