"""Epoch checkpoints: an embedding trainer stopped after epoch k and started again with the same checkpoint ends
with exactly the vectors of a run never stopped (tensors and random generator restored)."""

import numpy as np
import pytest

from pipeline.embeddings.checkpoint import EpochCheckpoint
from pipeline.embeddings.cooccurrence import count_cooccurrences
from pipeline.embeddings.glove import GloVeSettings, train_glove
from pipeline.embeddings.vocab import build_vocabulary, encode
from pipeline.embeddings.word2vec import Word2VecSettings, train_word2vec
from tests.unit.embeddings.test_word2vec import planted_corpus


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def corpus():
    lines, _ = planted_corpus(sentences=400)
    vocab = build_vocabulary(lines, min_count=1)
    ids, starts = encode(lines, vocab)
    return vocab, ids, starts


@pytest.mark.parametrize("method", ["cbow", "skipgram"])
def test_word2vec_stopped_in_epoch_3_resumes_to_the_same_vectors(method, corpus, tmp_path):
    vocab, ids, starts = corpus
    settings = Word2VecSettings(method=method, vector_size=8, epochs=4, batch_words=500)
    whole = train_word2vec(ids, starts, vocab, settings)

    checkpoint = EpochCheckpoint(tmp_path / "ckpt")

    def stop_in_epoch_3(done, total):
        if done > 2.5 * len(ids):
            raise Stop

    with pytest.raises(Stop):
        train_word2vec(ids, starts, vocab, settings, progress=stop_in_epoch_3, checkpoint=checkpoint)
    assert checkpoint.load().epoch == 2 and checkpoint.load().scalars["words_done"] == 2 * len(ids)
    seen = []
    resumed = train_word2vec(ids, starts, vocab, settings, checkpoint=checkpoint,
                             progress=lambda done, total: seen.append(done))
    assert seen[0] > 2 * len(ids)  # epochs 1 and 2 were not trained again
    assert np.array_equal(resumed.matrix, whole.matrix)


def test_glove_stopped_in_epoch_3_resumes_to_the_same_vectors(corpus, tmp_path):
    vocab, ids, starts = corpus
    cooc = count_cooccurrences(ids, starts, len(vocab.words), window=4)
    settings = GloVeSettings(vector_size=8, epochs=5, batch_size=256)
    whole = train_glove(cooc, vocab.words, settings)

    checkpoint = EpochCheckpoint(tmp_path / "ckpt")

    def stop_in_epoch_3(epoch, cost, seconds):  # called at the end of epoch 3, before its checkpoint
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        train_glove(cooc, vocab.words, settings, progress=stop_in_epoch_3, checkpoint=checkpoint)
    assert checkpoint.load().epoch == 2
    epochs = []
    resumed = train_glove(cooc, vocab.words, settings, checkpoint=checkpoint,
                          progress=lambda epoch, cost, seconds: epochs.append(epoch))
    assert epochs == [3, 4, 5]
    assert np.array_equal(resumed.matrix, whole.matrix)


def test_a_save_killed_between_its_two_renames_is_still_found(tmp_path):
    import torch

    from pipeline.embeddings.checkpoint import EpochState

    checkpoint = EpochCheckpoint(tmp_path / "ckpt")
    checkpoint.save(EpochState(1, {"w": torch.ones(2)}, torch.Generator().get_state(), {"words_done": 5}))
    (tmp_path / "ckpt").rename(tmp_path / "ckpt.partial")  # as if killed after removing the old folder
    assert checkpoint.load().epoch == 1 and checkpoint.load().tensors["w"].tolist() == [1.0, 1.0]
    (tmp_path / "ckpt.partial" / "state.json").unlink()  # a partial save without its state.json: incomplete
    assert checkpoint.load() is None
