"""Strict exact match of chat replies to questions with known answers, with the loose contains-answer score.

The definitions are those of `pipeline.metrics.qa` (its module docstring): a reply is an exact match when,
after removing the echo of the question's subject, it names exactly one value of the answer's type and that
value is the answer; contains-answer only asks that the answer occur as a whole word. Rows with an empty
`answer_type` are scored by normalised equality (lowercased, punctuation removed, whitespace collapsed).

Inputs, one per question: predictions (the reply), references (the answer), subjects, answer_types
("integer", "choice" or ""), candidates (every value of a "choice" answer's type), categories.
Output: exact_match = hits / rows, contains_answer likewise, rows, by_category {category: {rows, exact_match,
contains_answer}}, hits (the strict verdict per row, in input order).
"""

import datasets
import evaluate

from pipeline.metrics.qa import contains_answer, exact_match


class QaExactMatch(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description=__doc__,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string"),
                                        "subjects": datasets.Value("string"), "answer_types": datasets.Value("string"),
                                        "candidates": datasets.Sequence(datasets.Value("string")),
                                        "categories": datasets.Value("string")}))

    def _compute(self, predictions, references, subjects, answer_types, candidates, categories):
        strict = [exact_match(reply, answer, subject or "", answer_type or None, choices or [])
                  for reply, answer, subject, answer_type, choices
                  in zip(predictions, references, subjects, answer_types, candidates)]
        loose = [contains_answer(reply, answer) for reply, answer in zip(predictions, references)]
        by_category: dict[str, dict] = {}
        for category, hit, contained in zip(categories, strict, loose):
            entry = by_category.setdefault(category, {"rows": 0, "exact_match": 0, "contains_answer": 0})
            entry["rows"] += 1
            entry["exact_match"] += hit
            entry["contains_answer"] += contained
        for entry in by_category.values():
            entry["exact_match"] /= entry["rows"]
            entry["contains_answer"] /= entry["rows"]
        return {"exact_match": sum(strict) / max(len(strict), 1), "contains_answer": sum(loose) / max(len(loose), 1),
                "rows": len(strict), "by_category": dict(sorted(by_category.items())), "hits": strict}
