"""Word embeddings: the package that will hold CBOW, Skip-gram and GloVe as torch modules; today it holds word
vectors in word2vec text/binary format (`vectors`) and their evaluation: analogies, word-pair similarity and
nearest neighbours (`evaluation`).

    from pipeline.embeddings.vectors import read_vectors, write_text, write_binary
    from pipeline.embeddings.evaluation import read_analogies, analogy_accuracy, read_similarity, similarity_spearman
"""
