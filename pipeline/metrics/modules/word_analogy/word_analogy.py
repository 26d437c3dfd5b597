"""Word-analogy accuracy ("a is to b as c is to d"), the numbers of word2vec's `compute-accuracy` and gensim's
`KeyedVectors.evaluate_word_analogies`, from one prediction per question.

Inputs, one per question: predictions (the model's answer for d, "" when skipped), references (the expected d),
sections (the name of the question's ": section" in a questions-words.txt file) and skipped (true when a word
of the question is outside the vocabulary searched: gensim's out-of-vocabulary questions). A question is
answered when not skipped, and correct when answered and prediction == reference, as strings (fold case before,
for a case-insensitive evaluation). A section is syntactic when its name starts with "gram" (questions-words.txt's
gram1..gram9), semantic otherwise. With C correct of A answered among Q questions, S of them skipped:

    accuracy            C / A                       (gensim's overall score; None when A = 0)
    semantic_accuracy   C / A over semantic sections only; syntactic_accuracy over syntactic ones (None when A = 0)
    by_section          {name: {"questions", "answered", "correct", "accuracy"}}, in first-seen order; "correct"
                        and answered - correct are the lengths of gensim's section["correct"] and ["incorrect"]
    questions, answered, correct, skipped = Q, A, C, S;  skipped_ratio = S / Q (gensim logs 100 x this as
                        "Quadruplets with out-of-vocabulary words")

See `pipeline.embeddings.evaluation.analogy_accuracy`, which predicts d by 3CosAdd and computes through this module.
"""

import datasets
import evaluate

from pipeline.embeddings.evaluation import is_syntactic


def _accuracy(correct: int, answered: int):
    return correct / answered if answered else None


class WordAnalogy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Value("string"),
                                        "references": datasets.Value("string"),
                                        "sections": datasets.Value("string"),
                                        "skipped": datasets.Value("bool")}))

    def _compute(self, predictions, references, sections, skipped):
        if not len(predictions):
            raise ValueError("word_analogy: no questions")
        by_section, kinds = {}, {True: [0, 0], False: [0, 0]}   # syntactic? -> [correct, answered]
        for predicted, expected, section, skip in zip(predictions, references, sections, skipped):
            counts = by_section.setdefault(section, {"questions": 0, "answered": 0, "correct": 0})
            counts["questions"] += 1
            if skip:
                continue
            hit = predicted == expected
            counts["answered"] += 1
            counts["correct"] += hit
            kinds[is_syntactic(section)][0] += hit
            kinds[is_syntactic(section)][1] += 1
        for counts in by_section.values():
            counts["accuracy"] = _accuracy(counts["correct"], counts["answered"])
        correct, answered = kinds[True][0] + kinds[False][0], kinds[True][1] + kinds[False][1]
        questions = len(predictions)
        return {"accuracy": _accuracy(correct, answered), "semantic_accuracy": _accuracy(*kinds[False]),
                "syntactic_accuracy": _accuracy(*kinds[True]), "by_section": by_section, "questions": questions,
                "answered": answered, "correct": correct, "skipped": questions - answered,
                "skipped_ratio": (questions - answered) / questions}
