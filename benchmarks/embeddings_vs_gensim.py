"""Our word2vec (pipeline.embeddings.word2vec, torch) against gensim 4.4 on the same corpus, same settings.

    python benchmarks/embeddings_vs_gensim.py                         # the whole gutenberg_large corpus (~20M words)
    python benchmarks/embeddings_vs_gensim.py --words 2000000 --methods cbow
    python benchmarks/embeddings_vs_gensim.py --words 2000000 --hs     # hierarchical softmax, no negatives, both sides

What each side does, on the same input: the corpus lowercased to runs of letters (`words_of`), one line per
paragraph, written once to a temporary file; vocabulary min_count 5; vector size 100, window 5, 5 negatives,
subsampling 1e-3, alpha 0.025 decaying linearly, 5 epochs.
  gensim  `Word2Vec(corpus_file=..., workers=THREADS)`: per-word Hogwild SGD in C threads.
  ours    `train_word2vec` with THREADS torch threads: large batched updates (see its module docstring).
Each side runs in its own process (peak RSS is that process's). Both sides' vectors are scored by the same code
(`pipeline.embeddings.evaluation`): 3CosAdd analogy accuracy on gensim's questions-words.txt among the top 30k
words, and Spearman on wordsim353.tsv. words/s = corpus words (every word of the letters file) x epochs / training
seconds (vocabulary building and reading excluded on both sides; "wall" is the child's whole run).
With --repeats N each side runs N times per method in ABBA order (this machine's speed drifts by up to ~1.5x
within an hour; a ratio is taken against the gensim run of the same repeat). With --hs both sides train with
hierarchical softmax instead of negative sampling (gensim `hs=1, negative=0`, ours `hs=True, negative=0`). With
--device cuda our side trains on the GPU (the issue's GPU row: words/s against gensim's on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "gutenberg_large" / "corpus.txt"
SETTINGS = dict(vector_size=100, window=5, negative=5, sample=1e-3, alpha=0.025, min_count=5, epochs=5)


def letters_file(corpus: Path, words: int, out: Path) -> int:
    """`out`: the corpus lowercased to letters, one line per non-empty paragraph, cut after `words` words (0: all).
    Returns the number of words written."""
    from pipeline.embeddings.vocab import words_of

    written = 0
    with open(corpus, encoding="utf-8", errors="replace") as source, open(out, "w") as target:
        for line in source:
            tokens = words_of(line)
            if tokens:
                target.write(" ".join(tokens) + "\n")
                written += len(tokens)
            if words and written >= words:
                break
    return written


def scores(vectors) -> dict:
    from gensim.test.utils import datapath

    from pipeline.embeddings.evaluation import analogy_accuracy, read_analogies, read_similarity, similarity_spearman

    analogy = analogy_accuracy(vectors, read_analogies(datapath("questions-words.txt")), restrict_vocab=30000)
    ws353 = similarity_spearman(vectors, read_similarity(datapath("wordsim353.tsv")))
    return {"analogy": analogy["accuracy"], "semantic": analogy["semantic_accuracy"],
            "syntactic": analogy["syntactic_accuracy"], "ws353": ws353["spearman"]}


def use_hierarchical_softmax() -> None:
    """--hs: hierarchical softmax instead of negative sampling, on both sides."""
    SETTINGS.update(negative=0, hs=True)


def train_ours(path: Path, method: str, overrides: dict, device: str = "cpu") -> tuple[object, float]:
    from pipeline.embeddings.vocab import build_vocabulary, encode
    from pipeline.embeddings.word2vec import Word2VecSettings, train_word2vec

    lines = lambda: open(path)  # noqa: E731
    vocab = build_vocabulary(lines(), SETTINGS["min_count"])
    ids, starts = encode(lines(), vocab)
    settings = Word2VecSettings(method=method, **{k: v for k, v in SETTINGS.items() if k != "min_count"}, **overrides)
    start = time.perf_counter()
    vectors = train_word2vec(ids, starts, vocab, settings, device=device)
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
    return vectors, time.perf_counter() - start


def train_gensim(path: Path, method: str, threads: int) -> tuple[object, float]:
    from gensim.models import Word2Vec

    from pipeline.embeddings.vectors import WordVectors

    model = Word2Vec(vector_size=SETTINGS["vector_size"], window=SETTINGS["window"], negative=SETTINGS["negative"],
                     sample=SETTINGS["sample"], alpha=SETTINGS["alpha"], min_count=SETTINGS["min_count"],
                     sg=int(method == "skipgram"), hs=int(SETTINGS.get("hs", False)), workers=threads, seed=0)
    model.build_vocab(corpus_file=str(path))
    start = time.perf_counter()
    model.train(corpus_file=str(path), total_words=model.corpus_total_words, total_examples=model.corpus_count,
                epochs=SETTINGS["epochs"])
    return WordVectors(list(model.wv.index_to_key), model.wv.vectors.copy()), time.perf_counter() - start


def child(side: str, method: str, path: Path, words: int, threads: int, overrides: dict, device: str) -> None:
    """One side, one method, in this process: prints one JSON line."""
    import torch

    torch.set_num_threads(threads)
    began = time.perf_counter()
    vectors, seconds = (train_ours(path, method, overrides, device) if side == "ours"
                        else train_gensim(path, method, threads))
    label = side + (f" ({', '.join(f'{k}={v}' for k, v in overrides.items())})" if side == "ours" and overrides else "")
    label += f" [{device}]" if side == "ours" and device != "cpu" else ""
    result = {"side": side, "label": label, "method": method, "train_seconds": seconds,
              "words_per_second": words * SETTINGS["epochs"] / seconds, "vocabulary": len(vectors.words),
              **scores(vectors), "wall_seconds": time.perf_counter() - began,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--words", type=int, default=0, help="use the first N words (0: the whole corpus)")
    parser.add_argument("--methods", nargs="+", default=["cbow", "skipgram"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sides", nargs="+", default=["gensim", "ours"])
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a Word2VecSettings field for our side (e.g. batch_words=4096); labelled in the table")
    parser.add_argument("--device", default="cpu", help="our side's device (cuda: the GPU row); gensim runs on the CPU")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per side and method, in ABBA order (gensim, ours, ours, gensim, ...): the machine's "
                             "speed drifts, each ratio is against the gensim run of the same repeat")
    parser.add_argument("--hs", action="store_true", help="hierarchical softmax, no negatives, on both sides")
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "METHOD", "FILE", "WORDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hs:
        use_hierarchical_softmax()
    if args.child:
        side, method, path, words = args.child
        return child(side, method, Path(path), int(words), args.threads, overrides(args.set), args.device)
    if not args.corpus.is_file():
        sys.exit(f"error: no corpus at {args.corpus} (../shared/data/gutenberg_large: see its README)")
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "letters.txt"
        words = letters_file(args.corpus, args.words, path)
        print(f"corpus: {words:,} words ({args.corpus.name}), {args.threads} threads each side; settings {SETTINGS}")
        rows = []
        for method in args.methods:
            for repeat in range(args.repeats):      # ABBA: the second repeat runs the sides in reverse order
                for side in (args.sides if repeat % 2 == 0 else args.sides[::-1]):
                    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                    sets = [f"--set={item}" for item in args.set]
                    hs = ["--hs"] if args.hs else []
                    command = [sys.executable, __file__, "--threads", str(args.threads), "--device", args.device, *sets,
                               *hs, "--child", side, method, str(path), str(words)]
                    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
                    rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "repeat": repeat})
                    print(f"  {side} {method}: {rows[-1]['train_seconds']:.1f} s", flush=True)
    table(rows)


def overrides(items: list[str]) -> dict:
    """`field=value` strings as Word2VecSettings keyword arguments (int, float or str)."""
    parsed = {}
    for item in items:
        name, value = item.split("=", 1)
        for kind in (int, float, str):
            try:
                parsed[name] = kind(value)
                break
            except ValueError:
                continue
    return parsed


def table(rows: list[dict]) -> None:
    print("| method | side | train s | words/s | vs gensim | peak RSS MB | analogy top-30k | semantic | syntactic | WS353 |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        peer = next((r for r in rows if r["method"] == row["method"] and r["side"] == "gensim"
                     and r["repeat"] == row["repeat"]), None)
        ratio = f"{row['words_per_second'] / peer['words_per_second']:.2f}x" if peer else "-"
        print(f"| {row['method']} | {row['label']} | {row['train_seconds']:.1f} | {row['words_per_second'] / 1e6:.2f}M | "
              f"{ratio} | {row['peak_rss_mb']:.0f} | "
              f"{row['analogy']:.3f} | {row['semantic']:.3f} | {row['syntactic']:.3f} | {row['ws353']:.3f} |")


if __name__ == "__main__":
    main()
