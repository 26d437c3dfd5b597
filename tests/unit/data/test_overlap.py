"""Validation overlap with train, against counts worked out by hand."""

from pipeline.data.overlap import sentences, split_overlap


def test_sentences():
    assert sentences("  Mara is 34.  She lives in Lisbon!\nIs it far?  no stop") == \
        ["Mara is 34.", "She lives in Lisbon!", "Is it far?", "no stop"]
    assert sentences("   ") == [] and sentences("3.5 is a number.") == ["3.5 is a number."]


def test_split_overlap_by_hand():
    train = ["Mara is 34. She lives in Lisbon.", "Tom is 20."]
    validation = [
        "Mara is 34. Mara is 34. She is a baker.",   # 3 occurrences, 2 in train
        "Tom is 20.",                                # a whole train document: 1 of 1
        "Tom is 21. she lives in Lisbon.",           # case matters: 0 of 2
    ]
    got = split_overlap(train, validation)
    assert got["validation_sentences"] == 6 and got["validation_sentences_in_train"] == 3
    assert got["sentence_share"] == 0.5
    assert got["validation_documents"] == 3 and got["validation_documents_in_train"] == 1
    assert abs(got["document_share"] - 1 / 3) < 1e-12


def test_empty_validation():
    assert split_overlap(["a."], [])["sentence_share"] == 0.0
