"""Our GloVe (pipeline.embeddings: counting + AdaGrad in torch) against the Stanford GloVe C tool, same settings,
same lowercased-letters text.

    python benchmarks/glove_vs_c.py --words 0                 # the whole gutenberg_large corpus (20M words)
    python benchmarks/glove_vs_c.py --words 2000000 --c-tool /tmp/glove/GloVe/build

The C tool is built from ../shared/peers/glove-52f7dbc.tar.gz into a temporary folder when that file is there and
--c-tool is not given (gcc, a few seconds); without it the script prints the anchor measured on this machine (2
threads, 20M words): counting + shuffle 23 s, training 595 s, analogy 29.5% (top 30k), WS353 0.421.

Prints: the vocabulary time (ours: vocabulary and encoding to ids; the C tool: `vocab_count`), the counting time
(ours: `count_cooccurrences`; the C tool: `cooccur` + `shuffle`) and its throughput (tokens/s of the counting
step alone), the training time, their total (end to end from the letters text), peak RSS, analogy accuracy
(top 30k, gensim's questions-words.txt) and WS353 Spearman, for ours and (with --c-tool) the C tool with
`-threads`.

Measured here (quiet 2-core machine, 2 threads each side, our Hogwild `--workers 2`; the whole gutenberg_large
corpus, min_count 5, window 10, x_max 10, 100 d, 15 epochs; the co-occurrence entries are identical to the C
tool's, 34,734,571; `python benchmarks/glove_vs_c.py --words 0`):

    tool        vocab s   count s   count tok/s   train s   total s   RSS GB   analogy   ws353
    ours           13.9      27.8         0.72M     493.2     534.9     2.96     29.9%   0.418
    C tool          1.6      32.1         1.05M     566.4     600.1        -     30.1%   0.415

Ours end to end 0.89x the C tool's time. An earlier run the same day: ours 28.2 s counting + 461.6 s training
(29.8%, 0.425), the C tool 29.9 + 616.0 s (slowed for ~25 s by a test run beside it). Hogwild threads make the
training time vary by a few percent from run to run on both sides.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.embeddings.cooccurrence import count_cooccurrences  # noqa: E402
from pipeline.embeddings.evaluation import (analogy_accuracy, read_analogies, read_similarity,  # noqa: E402
                                            similarity_spearman)
from pipeline.embeddings.glove import GloVeSettings, train_glove  # noqa: E402
from pipeline.embeddings.vectors import WordVectors  # noqa: E402
from pipeline.embeddings.vocab import build_vocabulary, encode, words_of  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "gutenberg_large" / "corpus.txt"


def gensim_data(name: str) -> Path:
    import gensim
    return Path(gensim.__file__).parent / "test" / "test_data" / name


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def first_lines(path: Path, words: int) -> list[str]:
    """Lowercased-letter lines (" ".join(words_of(line))) until `words` words (0: all)."""
    lines, total = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            text = " ".join(words_of(line))
            lines.append(text)
            total += text.count(" ") + 1 if text else 0
            if words and total >= words:
                break
    return lines


def evaluate(vectors: WordVectors) -> tuple[float, float]:
    analogies = analogy_accuracy(vectors, read_analogies(gensim_data("questions-words.txt")), restrict_vocab=30000)
    ws353 = similarity_spearman(vectors, read_similarity(gensim_data("wordsim353.tsv")))
    return analogies["accuracy"], ws353["spearman"]


def ours(lines: list[str], args) -> dict:
    began = time.perf_counter()
    vocab = build_vocabulary(lines, args.min_count)
    ids, starts = encode(lines, vocab, max_sentence=10 ** 9)
    encoded = time.perf_counter()
    cooc = count_cooccurrences(ids, starts, len(vocab), window=args.window)
    counted = time.perf_counter()
    settings = GloVeSettings(vector_size=args.dim, x_max=args.x_max, epochs=args.epochs,
                             batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                             workers=args.workers)
    vectors = train_glove(cooc, vocab.words, settings, device=args.device,
                          progress=lambda e, c, s: print(f"  epoch {e}: cost {c:.4f} ({s:.1f} s)", flush=True))
    trained = time.perf_counter()
    accuracy, spearman = evaluate(vectors)
    return {"tool": f"ours ({args.device}, {torch.get_num_threads()} threads, {args.workers} workers, batch {args.batch_size})",
            "vocab": len(vocab), "tokens": len(ids), "nnz": len(cooc),
            "vocab_encode_s": encoded - began, "count_s": counted - encoded,
            "count_tok_s": len(ids) / (counted - encoded), "train_s": trained - counted,
            "peak_rss_gb": peak_rss_gb(), "analogy": accuracy, "ws353": spearman}


def read_c_vectors(path: Path) -> WordVectors:
    words, rows = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(" ")
        if parts[0] != "<unk>":
            words.append(parts[0])
            rows.append(np.array(parts[1:], dtype=np.float32))
    return WordVectors(words, np.stack(rows))


def c_tool(lines: list[str], args) -> dict:
    build = Path(args.c_tool)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus.txt"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")

        def step(command, stdin, stdout):
            with open(stdin, "rb") as fin, open(stdout, "wb") as fout:
                subprocess.run(command, stdin=fin, stdout=fout, stderr=subprocess.DEVNULL, check=True, cwd=tmp)

        began = time.perf_counter()
        step([build / "vocab_count", "-min-count", str(args.min_count), "-verbose", "0"], corpus, tmp / "vocab.txt")
        vocabed = time.perf_counter()
        step([build / "cooccur", "-memory", "4.0", "-vocab-file", "vocab.txt", "-verbose", "0",
              "-window-size", str(args.window)], corpus, tmp / "cooc.bin")
        counted = time.perf_counter()
        step([build / "shuffle", "-memory", "4.0", "-verbose", "0"], tmp / "cooc.bin", tmp / "shuf.bin")
        shuffled = time.perf_counter()
        subprocess.run([build / "glove", "-save-file", "vectors", "-threads", str(args.threads),
                        "-input-file", "shuf.bin", "-x-max", str(args.x_max), "-iter", str(args.epochs),
                        "-vector-size", str(args.dim), "-binary", "0", "-vocab-file", "vocab.txt",
                        "-verbose", "0", "-seed", str(args.seed + 1)], check=True, cwd=tmp)
        trained = time.perf_counter()
        vectors = read_c_vectors(tmp / "vectors.txt")
        nnz = (tmp / "cooc.bin").stat().st_size // 16
    tokens = sum(len(line.split()) for line in lines)
    accuracy, spearman = evaluate(vectors)
    return {"tool": f"C tool ({args.threads} threads)", "vocab": len(vectors), "tokens": tokens, "nnz": nnz,
            "vocab_encode_s": vocabed - began, "count_s": shuffled - vocabed,
            "count_tok_s": tokens / (counted - vocabed), "train_s": trained - shuffled,
            "peak_rss_gb": float("nan"), "analogy": accuracy, "ws353": spearman}


PEER = ROOT.parent / "shared" / "peers" / "glove-52f7dbc.tar.gz"
ANCHOR = "C tool anchor (20M words, 2 threads): counting + shuffle 23 s, training 595 s, analogy 29.5%, WS353 0.421"


def build_c_tool(scratch: Path) -> Path | None:
    """Build the C tool from the peers tarball into `scratch`; its build/ folder, or None without the tarball."""
    if not PEER.is_file():
        return None
    subprocess.run(["tar", "xzf", str(PEER), "-C", str(scratch)], check=True)
    source = next(p.parent for p in scratch.rglob("Makefile"))
    subprocess.run(["make", "-C", str(source)], check=True, capture_output=True)
    return source / "build"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--words", type=int, default=2_000_000, help="first lines up to this many words (0: all)")
    parser.add_argument("--min-count", type=int, default=5)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--x-max", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=GloVeSettings.batch_size)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--c-tool", help="folder of the built C tool (vocab_count, cooccur, shuffle, glove)")
    parser.add_argument("--threads", type=int, default=2, help="the C tool's -threads and our torch threads")
    parser.add_argument("--workers", type=int, default=2, help="our Hogwild threads (each with one torch thread)")
    parser.add_argument("--skip-ours", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = first_lines(args.corpus, args.words)
    results = [] if args.skip_ours else [ours(lines, args)]
    with tempfile.TemporaryDirectory() as scratch:
        args.c_tool = args.c_tool or build_c_tool(Path(scratch))
        if args.c_tool:
            results.append(c_tool(lines, args))
        else:
            print(f"no {PEER}: {ANCHOR}")
    print(f"\n{'tool':44} {'tokens':>10} {'vocab':>7} {'nnz':>10} {'vocab s':>8} {'count s':>8} {'tok/s':>8} "
          f"{'train s':>8} {'total s':>8} {'RSS GB':>7} {'analogy':>8} {'ws353':>6}")
    for r in results:
        total = r["vocab_encode_s"] + r["count_s"] + r["train_s"]
        print(f"{r['tool']:44} {r['tokens']:>10} {r['vocab']:>7} {r['nnz']:>10} {r['vocab_encode_s']:>8.1f} "
              f"{r['count_s']:>8.1f} {r['count_tok_s'] / 1e6:>7.2f}M {r['train_s']:>8.1f} {total:>8.1f} "
              f"{r['peak_rss_gb']:>7.2f} {100 * r['analogy']:>7.1f}% {r['ws353']:>6.3f}")


if __name__ == "__main__":
    main()
