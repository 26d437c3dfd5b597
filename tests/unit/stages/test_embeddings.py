"""The embeddings stage on a small world: vectors every method writes load with gensim, the stage's numbers are
`pipeline eval`'s, bad input is one line with exit 2 and no marker."""

import json

import numpy as np
import pytest

from pipeline.cli import main
from tests.conftest import make_run, stage

SMALL = {"methods": ["cbow", "skipgram", "glove"], "min_count": 2, "epochs": 2, "glove_epochs": 5, "vector_size": 32}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = make_run(tmp_path_factory.mktemp("emb") / "r", embeddings=SMALL)
    stage("data", folder)
    stage("embeddings", folder)
    return folder


@pytest.mark.parametrize("method", ["cbow", "skipgram", "glove"])
def test_vectors_load_with_gensim_in_both_formats(trained, method):
    from gensim.models import KeyedVectors

    from pipeline.embeddings.vectors import read_vectors

    ours = read_vectors(trained / "embeddings" / method / "vectors.bin")
    for name, binary in (("vectors.txt", False), ("vectors.bin", True)):
        peer = KeyedVectors.load_word2vec_format(str(trained / "embeddings" / method / name), binary=binary)
        assert peer.index_to_key == ours.words and peer.vector_size == 32
        np.testing.assert_allclose(peer.vectors, ours.matrix, rtol=1e-6, atol=1e-7)
    vocabulary = json.loads((trained / "embeddings" / "metrics.json").read_text())["vocabulary"]
    assert len(ours.words) == vocabulary and np.isfinite(ours.matrix).all()


def test_stage_numbers_are_pipeline_evals(trained, capsys):
    metrics = json.loads((trained / "embeddings" / "metrics.json").read_text())
    for method in ("cbow", "skipgram", "glove"):
        own = json.loads((trained / "embeddings" / method / "metrics.json").read_text())
        assert own["words_per_second"] > 0 and own["analogy"]["world"]["answered"] > 0
        assert metrics[f"{method}_analogy"] == own["analogy"]["world"]["accuracy"]
        assert own["analogy"]["world"]["chance"] == 1 / (min(metrics["vocabulary"], 30000) - 3)
        capsys.readouterr()
        assert main(["eval", str(trained / "embeddings" / method / "vectors.bin"), "--suite", "analogy", "--json"]) == 0
        evaluated = json.loads(capsys.readouterr().out)["suites"]["analogy"]
        assert evaluated["accuracy"] == own["analogy"]["world"]["accuracy"]
        assert evaluated["skipped"] == own["analogy"]["world"]["skipped"]


@pytest.mark.parametrize("override, message", [
    ("embeddings.window=0", "embeddings.window: expected >= 1, got 0"),
    ("embeddings.methods=[fasttext]", "embeddings.methods: unknown method 'fasttext'"),
    ("embeddings.corpus_file=/nonexistent/corpus.txt", "embeddings.corpus_file: no such file /nonexistent/corpus.txt"),
    ("embeddings.min_count=100000", "embeddings:"),
    ("embeddings.negative=0", "embeddings.negative: expected >= 1 (without hs), got 0"),
    ("embeddings.similarity_files=[/nonexistent/ws.tsv]", "embeddings.similarity_files: no such file"),
])
def test_bad_input_is_one_line_and_no_marker(trained, tmp_path, capsys, override, message):
    import shutil

    folder = tmp_path / "r"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("embeddings"))
    assert main(["stage", "embeddings", "--run", str(folder), override]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and message in err, err
    assert not (folder / "embeddings" / "_SUCCESS").exists()


def test_an_empty_corpus_file_is_one_line(trained, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    folder = make_run(tmp_path / "r", embeddings={**SMALL, "corpus_file": str(empty)})
    assert main(["stage", "embeddings", "--run", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: embeddings:") and "\n" not in err


def test_hierarchical_softmax_alone_trains_through_the_stage(trained, tmp_path):
    import shutil

    from pipeline.embeddings.vectors import read_vectors

    folder = tmp_path / "r"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("embeddings"))
    assert main(["stage", "embeddings", "--run", str(folder), "embeddings.methods=[cbow,skipgram]",
                 "embeddings.hs=true", "embeddings.negative=0"]) == 0
    metrics = json.loads((folder / "embeddings" / "metrics.json").read_text())
    for method in ("cbow", "skipgram"):
        vectors = read_vectors(folder / "embeddings" / method / "vectors.bin")
        assert len(vectors.words) == metrics["vocabulary"] and np.isfinite(vectors.matrix).all()
        assert json.loads((folder / "embeddings" / method / "metrics.json").read_text())["analogy"]["world"]["answered"]
        negative_sampling = read_vectors(trained / "embeddings" / method / "vectors.bin")   # same data, seed, init
        assert vectors.words == negative_sampling.words and not np.allclose(vectors.matrix, negative_sampling.matrix)
