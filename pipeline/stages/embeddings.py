"""Embeddings: word2vec CBOW and Skip-gram and GloVe on the run's corpus, the baselines beside the GPT.

    pipeline stage embeddings --run runs/tiny embeddings.methods=[cbow,glove] embeddings.epochs=3
    pipeline run recipes/embeddings_cpu.yaml          # ../shared/data/gutenberg_large at the benchmark settings

The corpus is the data stage's `corpus` train split (or `corpus_file`, a text file, one sentence or paragraph
per line), lowercased to runs of letters (`pipeline.embeddings.vocab.words_of`); each row is a sentence:
contexts never cross rows. One vocabulary (`min_count`) serves every method. Output, per method:

    <run>/embeddings/<method>/vectors.txt   word2vec text format  } both load with gensim's
    <run>/embeddings/<method>/vectors.bin   word2vec binary format} KeyedVectors.load_word2vec_format
    <run>/embeddings/<method>/metrics.json  training time, words/s, and the evaluation below

Evaluation (`pipeline.embeddings.evaluation`, the same code as `pipeline eval VECTORS_FILE`): 3CosAdd analogy
accuracy among the top `restrict_vocab` words (beside its floor `chance`, 1 / (those words - 3): a uniform guess
among the candidates) on the world's own analogies (`data/analogies`) and on each of
`analogy_files`; Spearman of cosine similarities against each of `similarity_files`; nearest neighbours of a
few frequent words. A file named `gensim:NAME` is gensim's test data file NAME (questions-words.txt,
wordsim353.tsv, simlex999.txt), which needs gensim installed (the peer, not a dependency).

Numbers (per method in its metrics.json; `<method>_<key>` in the stage's):
    words              in-vocabulary corpus words (after min_count, before subsampling)
    seconds            the method's wall time: training, and for GloVe counting + training (not evaluation)
    words_per_second   word2vec: words x epochs trained in this attempt / seconds; GloVe: words / seconds (one
                       pass of counting)
    resumed_from_epoch epochs an interrupted earlier attempt had finished (0: trained in one go)
    counting_tokens_per_second   GloVe: words / counting seconds
    analogy.<set>      `analogy_accuracy`: correct / answered (skipped = questions with a word outside the top
                       `restrict_vocab`), with `chance` = 1 / (restrict_vocab used - 3): a uniform guess
    similarity.<file>  Spearman (average ranks for ties) of cosines against the human scores, pairs in vocabulary

Resume: a method whose `metrics.json` exists is not trained again; the one that was running continues from its
last finished epoch (`<run>/embeddings/.<method>.checkpoint/`, `pipeline.embeddings.checkpoint`), so a run killed
at any point ends with the vectors of a run never stopped. Its `seconds` then count the last attempt only.

On several processes the main process trains and writes; the others wait (the methods are not distributed yet).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState

from pipeline.artifacts import RunDir, replace_dir, write_json
from pipeline.embeddings.checkpoint import EpochCheckpoint
from pipeline.errors import PipelineError

NAME, NEEDS = "embeddings", ("data",)
HEADLINE = ("cbow_analogy", "skipgram_analogy", "glove_analogy", "vocabulary")
METHODS = ("cbow", "skipgram", "glove")


def needs(cfg: "Config") -> tuple[str, ...]:
    return () if cfg.corpus_file else NEEDS  # a corpus file needs no data stage


@dataclass
class Config:
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={"help": f"Which to train, from: {', '.join(METHODS)}."})
    dataset: str = field(default="corpus", metadata={"help": "Text dataset built by the data stage (its train split, column text)."})
    corpus_file: str = field(default="", metadata={"help": "A text file to train on instead of `dataset`, one sentence or paragraph per line."})
    min_count: int = field(default=5, metadata={"help": "Words seen fewer times are left out of the vocabulary."})
    vector_size: int = field(default=100, metadata={"help": "Dimensions of every method's vectors."})
    window: int = field(default=5, metadata={"help": "word2vec: largest context distance (each position draws a smaller one, as word2vec does)."})
    negative: int = field(default=5, metadata={"help": "word2vec: noise words per positive pair, drawn from unigram^0.75 (0: none, with hs)."})
    hs: bool = field(default=False, metadata={"help": "word2vec: also train with hierarchical softmax over a Huffman tree (with negative 0: only it)."})
    sample: float = field(default=1e-3, metadata={"help": "word2vec: subsampling threshold t of frequent words (0: keep every word)."})
    alpha: float = field(default=0.025, metadata={"help": "word2vec: learning rate at the start, decaying linearly to min_alpha."})
    min_alpha: float = field(default=0.0001, metadata={"help": "word2vec: learning rate at the end of the last epoch."})
    epochs: int = field(default=5, metadata={"help": "word2vec: passes over the corpus."})
    workers: int = field(default=1, metadata={"help": "GloVe: threads updating the vectors at once, Hogwild like the C tool's (1: deterministic for the seed; 2 was 1.2x faster on 2 cores). word2vec uses torch's threads: Python worker threads made it slower."})
    glove_window: int = field(default=10, metadata={"help": "GloVe: symmetric co-occurrence window, pairs weighted 1/distance."})
    x_max: float = field(default=10.0, metadata={"help": "GloVe: count at which the weighting f(x) = (x/x_max)^0.75 reaches 1."})
    glove_epochs: int = field(default=15, metadata={"help": "GloVe: AdaGrad passes over the co-occurrence entries."})
    glove_learning_rate: float = field(default=0.05, metadata={"help": "GloVe: AdaGrad learning rate (the C tool's 0.05)."})
    restrict_vocab: int = field(default=30000, metadata={"help": "Analogies are answered among this many most frequent words."})
    analogy_files: list[str] = field(default_factory=list, metadata={"help": "More analogy sets (questions-words.txt format; gensim:questions-words.txt is gensim's)."})
    similarity_files: list[str] = field(default_factory=list, metadata={"help": "Word-pair similarity sets (gensim:wordsim353.tsv, gensim:simlex999.txt or paths)."})

    def __post_init__(self):
        for method in self.methods:
            if method not in METHODS:
                raise ValueError(f"methods: unknown method {method!r} (valid: {', '.join(METHODS)})")
        if not self.methods:
            raise ValueError(f"methods: empty (valid: {', '.join(METHODS)})")
        for name in ("window", "glove_window", "vector_size", "epochs", "glove_epochs", "min_count", "restrict_vocab",
                     "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.negative < (0 if self.hs else 1):
            raise ValueError(f"negative: expected >= {0 if self.hs else 1} ({'with' if self.hs else 'without'} hs), "
                             f"got {self.negative}")


def run(cfg: Config, run: RunDir) -> dict:
    state = PartialState()
    metrics = {}
    if state.is_main_process:
        metrics = train_all(cfg, run)
    state.wait_for_everyone()
    return metrics


def corpus_lines(cfg: Config, run: RunDir):
    """A function returning a fresh iterator over the corpus's lines (vocabulary and encoding each read it once)."""
    if cfg.corpus_file:
        path = Path(cfg.corpus_file)
        if not path.is_file():
            raise PipelineError(f"embeddings.corpus_file: no such file {path}")

        def from_file():
            with open(path, encoding="utf-8", errors="replace") as f:
                yield from f
        return from_file
    split = run.dataset(cfg.dataset, where="embeddings.dataset")
    if "train" not in split or "text" not in split["train"].column_names:
        raise PipelineError(f"embeddings.dataset: {cfg.dataset!r} needs a train split with a text column")
    texts = split["train"]["text"]
    return lambda: iter(texts)


def evaluation_file(name: str, field_name: str) -> Path:
    """A path, or `gensim:NAME` for a file of gensim's test data (gensim must be installed)."""
    if name.startswith("gensim:"):
        try:
            from gensim.test.utils import datapath
        except ImportError:
            raise PipelineError(f"embeddings.{field_name}: {name} needs gensim installed (pip install gensim)") from None
        name = datapath(name.split(":", 1)[1])
    path = Path(name)
    if not path.is_file():
        raise PipelineError(f"embeddings.{field_name}: no such file {path}")
    return path


def train_all(cfg: Config, run: RunDir) -> dict:
    from pipeline.embeddings.vocab import EmbeddingsError, build_vocabulary, encode

    lines = corpus_lines(cfg, run)
    analogies = [run.root / "data" / "analogies" / "questions-words.txt"] if cfg.dataset == "corpus" \
        and not cfg.corpus_file and (run.root / "data" / "analogies" / "questions-words.txt").is_file() else []
    analogies += [evaluation_file(f, "analogy_files") for f in cfg.analogy_files]
    similarities = [evaluation_file(f, "similarity_files") for f in cfg.similarity_files]
    try:
        vocab = build_vocabulary(lines(), cfg.min_count)
        ids, starts = encode(lines(), vocab)
    except EmbeddingsError as e:
        raise PipelineError(f"embeddings: {e}") from None
    out = run.stage_dir(NAME)
    metrics = {"vocabulary": len(vocab.words), "corpus_words": int(len(ids)), "sentences": int(len(starts))}
    for method in cfg.methods:
        done = out / method / "metrics.json"
        if done.is_file():  # finished before an interruption: its vectors and metrics are complete
            metrics.update(headline_numbers(method, json.loads(done.read_text())))
            continue
        checkpoint = EpochCheckpoint(out / f".{method}.checkpoint")
        result = train_and_save(method, cfg, ids, starts, vocab, out, checkpoint)
        result.update(evaluate(out / method / "vectors.bin", analogies, similarities, cfg.restrict_vocab))
        headline = headline_numbers(method, result)
        flat = {key[len(method) + 1:]: value for key, value in headline.items()}  # flat numbers, for the report
        result.update({key: value for key, value in flat.items() if key not in result})
        write_json(done, result)
        checkpoint.remove()
        metrics.update(headline)
    return metrics


def train_and_save(method: str, cfg: Config, ids, starts, vocab, out: Path, checkpoint: EpochCheckpoint) -> dict:
    """Train one method (from its last epoch checkpoint, if any) and write its vectors (text and binary) into
    `<out>/<method>/`; its timing numbers (of this attempt, when resumed)."""
    from pipeline import console
    from pipeline.embeddings.vectors import write_binary, write_text

    resumed = checkpoint.load()
    resumed_from = resumed.epoch if resumed is not None else 0  # epochs an earlier attempt finished
    start = time.perf_counter()
    if method == "glove":  # progress per epoch, with the mean cost
        vectors, counting = train_glove_vectors(cfg, ids, starts, vocab, lambda epoch, cost, seconds: console.update(
            epoch, cfg.glove_epochs, method=method, cost=cost), checkpoint)
    else:  # progress in corpus words
        vectors, counting = train_word2vec_vectors(method, cfg, ids, starts, vocab, lambda done, total: console.update(
            done, total, method=method), checkpoint), {}
    seconds = time.perf_counter() - start
    scratch = out / f".{method}.tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    write_text(scratch / "vectors.txt", vectors)
    write_binary(scratch / "vectors.bin", vectors)
    replace_dir(scratch, out / method)
    passes = cfg.glove_epochs if method == "glove" else cfg.epochs
    trained = 1 if method == "glove" else passes - resumed_from  # word2vec: the epochs this attempt trained
    return {"method": method, "seconds": round(seconds, 3), "words": int(len(ids)), "epochs": passes,
            "resumed_from_epoch": resumed_from, "words_per_second": len(ids) * trained / seconds, **counting}


def train_word2vec_vectors(method: str, cfg: Config, ids, starts, vocab, progress, checkpoint=None):
    from pipeline.embeddings.word2vec import Word2VecSettings, train_word2vec

    settings = Word2VecSettings(method=method, vector_size=cfg.vector_size, window=cfg.window, negative=cfg.negative,
                                hs=cfg.hs, sample=cfg.sample, alpha=cfg.alpha, min_alpha=cfg.min_alpha, epochs=cfg.epochs)
    return train_word2vec(ids, starts, vocab, settings, progress=progress, checkpoint=checkpoint)


def train_glove_vectors(cfg: Config, ids, starts, vocab, progress, checkpoint=None):
    from pipeline.embeddings.cooccurrence import count_cooccurrences
    from pipeline.embeddings.glove import GloVeSettings, train_glove

    start = time.perf_counter()
    cooccurrences = count_cooccurrences(ids, starts, len(vocab.words), window=cfg.glove_window)
    counting = time.perf_counter() - start
    settings = GloVeSettings(vector_size=cfg.vector_size, x_max=cfg.x_max, learning_rate=cfg.glove_learning_rate,
                             epochs=cfg.glove_epochs, workers=cfg.workers)
    vectors = train_glove(cooccurrences, vocab.words, settings, progress=progress, checkpoint=checkpoint)
    return vectors, {"counting_seconds": round(counting, 3), "counting_tokens_per_second": len(ids) / counting,
                     "cooccurrence_entries": int(len(cooccurrences.values))}


def evaluate(path: Path, analogies: list[Path], similarities: list[Path], restrict_vocab: int) -> dict:
    """Analogy accuracy per analogy file, Spearman per similarity file, a few nearest neighbours."""
    from pipeline.embeddings import evaluation as words
    from pipeline.embeddings.vectors import read_vectors

    vectors = read_vectors(path)
    result = {"analogy": {}, "similarity": {}}
    for file in analogies:
        name = "world" if file.parent.name == "analogies" and file.parents[1].name == "data" else file.name
        scored = words.analogy_accuracy(vectors, words.read_analogies(file), restrict_vocab)
        # the floor: a uniform guess among the candidates (the vocabulary less the question's three words)
        scored["chance"] = 1 / max(scored["restrict_vocab"] - 3, 1)
        result["analogy"][name] = scored
    for file in similarities:
        result["similarity"][file.name] = words.similarity_spearman(vectors, words.read_similarity(file))
    result["neighbours"] = words.nearest_neighbours(vectors, vectors.words[:5], k=5)
    return result


def headline_numbers(method: str, result: dict) -> dict:
    """`<method>_analogy` (the world's set, else the first file), `<method>_<file>_spearman`, words/s."""
    numbers = {f"{method}_words_per_second": result["words_per_second"], f"{method}_seconds": result["seconds"]}
    analogy = result["analogy"]
    if analogy:
        numbers[f"{method}_analogy"] = next(iter(analogy.values()))["accuracy"]
        numbers.update({f"{method}_analogy_{name}": value["accuracy"] for name, value in analogy.items()})
    for name, value in result["similarity"].items():
        numbers[f"{method}_{Path(name).stem}_spearman"] = value["spearman"]
    return numbers


if __name__ == "__main__":
    from pipeline.runner import stage_main

    stage_main(NAME)
