"""The embedded default dataset: a small, seeded, self-consistent synthetic world with exact ground truth.

A run with no network still has something true to learn and to be scored on. `build_world(cfg, seed)`
draws the world from `seed` (same config and seed give identical datasets; another seed gives another world):

* people with unique first names, each with an age (18-80), a town, a job (and its workplace), a pet
  (species + pet name), a favourite colour, food and thing; some have a sibling, most a best friend
  (both relations symmetric). Towns belong to countries, countries to continents.
* arithmetic: a + b, a - b (a >= b) and a * b with operands 0..max_operand (products up to 12 * 12).

It returns a dict of `datasets.DatasetDict`, one per name (schemas in `FEATURES`):

* `corpus` {text} train/validation: stories, profiles, town and animal facts and arithmetic statements in
  varied templates. About `corpus_bytes` bytes in all (validation: `validation_fraction` of it). Train
  opens with a fact sheet interleaved with random documents, so every fact of the world appears once
  corpus_bytes is about 1 KB per person or more (the default is); arithmetic statements of the `qa_eval`
  questions never appear in the corpus, so arithmetic is scored on unseen sums. No validation document
  is a verbatim copy of a train document, but most validation *sentences* are (the data stage reports the
  share, `pipeline.data.overlap`). With `holdout_people` > 0, that many people are held out: validation is
  their stories and profiles only, they are related only to each other, and no train document, dialogue,
  preference, prompt or question mentions them, so validation loss measures generalisation to new people.
* `dialogue` {messages} train/validation/test: TRL conversational chats, one to three user questions
  about the world or arithmetic, each answered correctly, politely and concisely.
* `preferences` {prompt, chosen, rejected, kind} train/validation/test: chosen is the correct answer;
  rejected is one of `PREFERENCE_KINDS` (wrong_fact only for world questions, wrong_arithmetic only for
  arithmetic ones).
* `prompts` {prompt} train/test: single user questions for PPO.
* `qa_eval` {prompt, question, answer, category, subject, answer_type, candidates} test: held-out questions
  with exact answers, and what strict scoring needs (`World.answer_spec`, `pipeline.metrics.qa`); categories
  are `CATEGORIES` (age town country job pet pet_name color food thing sibling friend town_country
  arithmetic), spread evenly with about a quarter arithmetic. qa_eval and prompts together take at most
  40% of any category's questions (the rest stays for training), then fill up with arithmetic.
  `arithmetic: false` leaves arithmetic out of every dataset (qa_eval and prompts are then smaller).
* `analogies` {section, a, b, c, d} test: a:b :: c:d word analogies from the world's relations, all four
  words lowercase and present in the train corpus (as tokens of `words()`); `questions_words()` renders
  them in word2vec's questions-words.txt format.
* `regression` {x, y, function, curve, true_params, noise_sd} train: `n_regression` points on each of
  `regression_curves`, y = f(x; true_params) + N(0, noise_sd); `curve_value` evaluates `function`.

Questions are split by identity ((person, attribute), (town, country) or (a, op, b)), never by row:
qa_eval, prompts and the dialogue/preference train, validation and test questions are pairwise disjoint.

Answer format (`qa_eval.answer`, contained verbatim in every correct `dialogue` reply): ages and results
as decimal integers ("34", "12"); town, country (also for town_country), pet name (pet_name) and person
names (sibling, friend) capitalised as in the corpus ("Lisbon", "Portugal", "Pip", "Tom"); job, pet
species (pet), colour, food and thing as lowercase words ("baker", "cat", "green", "soup", "kite"). No answer word contains another, so whole-word matching of
candidates is unambiguous.

Reproduce: `build_world(WorldConfig(), seed=0)`; `World(cfg, seed)` (`pipeline.data.world_facts`) exposes
the facts (`answer`, `key_of`).
"""

import hashlib
import math
import random
import re

import datasets
from datasets import Dataset, DatasetDict, Features, List, Value

from pipeline.data import world_text as T
from pipeline.data.curves import CURVES, curve_value, regression_rows  # noqa: F401 (CURVES, curve_value: public)
from pipeline.data.world_facts import (  # noqa: F401 (public here too)
    CATEGORIES,
    PERSON_CATEGORIES,
    World,
    WorldConfig,
)

PREFERENCE_KINDS = ("wrong_fact", "wrong_arithmetic", "rude", "rambling", "off_topic", "no_answer")
_MSG = List({"role": Value("string"), "content": Value("string")})
FEATURES = {
    "corpus": Features({"text": Value("string")}),
    "dialogue": Features({"messages": _MSG}),
    "preferences": Features({"prompt": _MSG, "chosen": _MSG, "rejected": _MSG, "kind": Value("string")}),
    "prompts": Features({"prompt": _MSG}),
    "qa_eval": Features({"prompt": _MSG, "question": Value("string"), "answer": Value("string"), "category": Value("string"),
                         "subject": Value("string"), "answer_type": Value("string"), "candidates": List(Value("string"))}),
    "analogies": Features({k: Value("string") for k in ("section", "a", "b", "c", "d")}),
    "regression": Features({"x": Value("float64"), "y": Value("float64"), "function": Value("string"), "curve": Value("string"),
                            "true_params": Value("string"), "noise_sd": Value("float64")}),
}
_HOLDOUT_CAP = 0.4  # at most this share of a category's questions goes to qa_eval + prompts


def words(text: str) -> list[str]:
    """The tokenisation the analogies assume: lowercase runs of letters."""
    return re.findall(r"[a-z]+", text.lower())


def questions_words(analogies: Dataset) -> str:
    """Render analogy rows as gensim's questions-words.txt: `: section` headers, then `a b c d` lines."""
    lines, current = [], None
    for row in analogies:
        if row["section"] != current:
            current = row["section"]
            lines.append(f": {current}")
        lines.append(" ".join(row[k] for k in "abcd"))
    return "\n".join(lines) + "\n" if lines else ""


def _split_keys(world, cfg, rng):
    """Question keys per role: eval, prompts, train, validation, test (disjoint, per category)."""
    pools = {c: rng.sample(ks, len(ks)) for c, ks in world.keys.items() if ks}
    cap, taken = {c: int(_HOLDOUT_CAP * len(ks)) for c, ks in pools.items()}, dict.fromkeys(pools, 0)
    slots = [c for c in pools if c != "arithmetic"]
    slots += ["arithmetic"] * max(1, round(len(slots) / 3)) if "arithmetic" in pools else []  # ~25% arithmetic
    held, want, cursor = {"eval": [], "prompts": []}, {"eval": cfg.n_eval, "prompts": cfg.n_prompts}, {"eval": 0, "prompts": 0}
    progressed = True
    while progressed:  # eval and prompts take turns, each cycling through the category slots
        progressed = False
        for role in held:
            for _ in range(len(slots) if len(held[role]) < want[role] else 0):
                c = slots[cursor[role] % len(slots)]
                cursor[role] += 1
                if taken[c] < cap[c]:
                    held[role].append(pools[c][taken[c]])
                    taken[c], progressed = taken[c] + 1, True
                    break
    roles = {**held, "train": [], "validation": [], "test": []}
    for c, ks in pools.items():
        rest = ks[taken[c]:]
        n_val, n_test = round(len(rest) * cfg.validation_fraction), round(len(rest) * cfg.test_fraction)
        roles["validation"] += rest[:n_val]
        roles["test"] += rest[n_val:n_val + n_test]
        roles["train"] += rest[n_val + n_test:]
    return roles


class _Pool:
    """Question keys of one split, for sampling by category (arithmetic ~25%) or by person."""

    def __init__(self, world, keys):
        self.by_cat, self.by_person = {}, {}
        for k in keys:
            self.by_cat.setdefault(world.category(k), []).append(k)
            if world.category(k) in PERSON_CATEGORIES:
                self.by_person.setdefault(k.split(":", 1)[1], []).append(k)
        self.cats = list(self.by_cat)
        self.weights = [len(self.cats) / 3 if c == "arithmetic" else 1.0 for c in self.cats]

    def pick(self, rng, person=None):
        if person in self.by_person and rng.random() < 0.5:
            return rng.choice(self.by_person[person])
        return rng.choice(self.by_cat[rng.choices(self.cats, self.weights)[0]])


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


def _ds(rows, name):
    feats = FEATURES[name]
    return Dataset.from_dict({k: [r[k] for r in rows] for k in feats}, features=feats)


def _sizes(n, cfg):
    val, test = round(n * cfg.validation_fraction), round(n * cfg.test_fraction)
    return {"train": n - val - test, "validation": val, "test": test}


def _dialogues(world, pools, cfg, rng):
    out = {}
    for split, n in _sizes(cfg.n_dialogues, cfg).items():
        rows, pool = [], pools[split]
        for _ in range(n if pool.cats else 0):
            msgs = [{"role": "system", "content": T.SYSTEM_PROMPT}] if rng.random() < cfg.system_prompt_fraction else []
            person, used = None, set()
            for _ in range(rng.randint(2, 3) if rng.random() < cfg.multi_turn_fraction else 1):
                key = pool.pick(rng, person)
                if key in used:
                    continue
                used.add(key)
                msgs += [_user(rng.choice(world.questions(key))), _assistant(world.reply(key, rng))]
                person = key.split(":", 1)[1]
            rows.append({"messages": msgs})
        out[split] = _ds(rows, "dialogue")
    return DatasetDict(out)


def _preferences(world, pools, cfg, rng):
    out, turn = {}, {"world": 0, "arithmetic": 0}
    for split, n in _sizes(cfg.n_preferences, cfg).items():
        rows, pool = [], pools[split]
        for _ in range(n if pool.cats else 0):
            prompt = []
            if rng.random() < cfg.multi_turn_fraction / 2:
                k0 = pool.pick(rng)
                prompt += [_user(rng.choice(world.questions(k0))), _assistant(world.reply(k0, rng))]
            key = pool.pick(rng)
            family = "arithmetic" if world.category(key) == "arithmetic" else "world"
            kinds = [k for k in PREFERENCE_KINDS if k != ("wrong_fact" if family == "arithmetic" else "wrong_arithmetic")]
            kind = kinds[turn[family] % len(kinds)]
            turn[family] += 1
            prompt.append(_user(rng.choice(world.questions(key))))
            rows.append({"prompt": prompt, "chosen": [_assistant(world.reply(key, rng))],
                         "rejected": [_assistant(T.rejected(world, key, kind, rng))], "kind": kind})
        out[split] = _ds(rows, "preferences")
    return DatasetDict(out)


def _corpus(world, roles, cfg, seed):
    """Train and validation text. No validation document is a verbatim copy of a train one; with held-out
    people, validation is their stories and profiles only (see `WorldConfig.holdout_people`)."""
    held = set(roles["eval"])
    triples = [k for k in world.keys["arithmetic"] if k not in held]
    out, analogy_words = {}, {w.lower() for ps in world.analogy_pairs().values() for p in ps for w in p}
    n_val = round(cfg.corpus_bytes * cfg.validation_fraction)
    train_digests: set[bytes] = set()
    for split, target in (("train", cfg.corpus_bytes - n_val), ("validation", n_val)):
        rng = random.Random(f"corpus:{split}:{seed}")
        if split == "train":
            docs = T.documents(world, rng, target, triples, T.coverage(world, rng))
        else:
            people_docs = T.person_documents(world, rng, world.held_out) if world.held_out else None
            docs = _unseen(people_docs or T.documents(world, rng, math.inf, triples), train_digests, target)
        missing, parts, chunk, size = set(analogy_words), [], [], 0
        for doc in docs:
            if split == "train":
                train_digests.add(_digest(doc))
                if missing:
                    missing.difference_update(words(doc))
            chunk.append(doc)
            size += len(doc)
            if size > 1 << 23:
                parts.append(_ds([{"text": d} for d in chunk], "corpus"))
                chunk, size = [], 0
        parts.append(_ds([{"text": d} for d in chunk], "corpus"))
        out[split] = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
        if split == "train":
            present = analogy_words - missing
    return DatasetDict(out), present


def _digest(doc: str) -> bytes:
    return hashlib.blake2b(doc.encode(), digest_size=12).digest()


def _unseen(docs, train_digests: set[bytes], target: int, patience: int = 10_000):
    """Documents of `docs` that are not verbatim train documents, until `target` characters (or until
    `patience` draws in a row were all copies: a world that small has nothing new left to say)."""
    total, copies = 0, 0
    for doc in docs:
        if total >= target or copies >= patience:
            return
        if _digest(doc) in train_digests:
            copies += 1
            continue
        copies, total = 0, total + len(doc)
        yield doc


def _analogies(world, present, cfg, rng):
    rows = []
    for section, pairs in world.analogy_pairs().items():
        pairs = [(a.lower(), b.lower()) for a, b in pairs if a.lower() in present and b.lower() in present]
        found, seen = [], set()
        if len(pairs) ** 2 <= 50_000:
            cands = [(p, q) for p in pairs for q in pairs if len({*p, *q}) == 4]
            found = rng.sample(cands, min(len(cands), cfg.max_analogies_per_section))
        else:
            for _ in range(cfg.max_analogies_per_section * 20):
                p, q = rng.choice(pairs), rng.choice(pairs)
                if len(found) < cfg.max_analogies_per_section and len({*p, *q}) == 4 and (p, q) not in seen:
                    seen.add((p, q))
                    found.append((p, q))
        rows += [{"section": section, "a": p[0], "b": p[1], "c": q[0], "d": q[1]} for p, q in found]
    return DatasetDict({"test": _ds(rows, "analogies")})


def build_world(cfg: WorldConfig, seed: int) -> dict[str, DatasetDict]:
    """Every dataset of the world drawn from `seed` (see the module docstring)."""
    world = World(cfg, seed)
    roles = _split_keys(world, cfg, random.Random(f"split:{seed}"))
    pools = {s: _Pool(world, roles[s]) for s in ("train", "validation", "test")}
    corpus, present = _corpus(world, roles, cfg, seed)
    rng = random.Random(f"prompts:{seed}")
    qa = [{"prompt": [_user(q)], "question": q, **world.answer_spec(k)}
          for k in roles["eval"] for q in [rng.choice(world.questions(k))]]
    n_test = round(len(roles["prompts"]) * cfg.test_fraction)
    prompts = [{"prompt": [_user(rng.choice(world.questions(k)))]} for k in roles["prompts"]]
    return {
        "corpus": corpus,
        "dialogue": _dialogues(world, pools, cfg, random.Random(f"dialogue:{seed}")),
        "preferences": _preferences(world, pools, cfg, random.Random(f"preferences:{seed}")),
        "prompts": DatasetDict({"train": _ds(prompts[n_test:], "prompts"), "test": _ds(prompts[:n_test], "prompts")}),
        "qa_eval": DatasetDict({"test": _ds(qa, "qa_eval")}),
        "analogies": _analogies(world, present, cfg, random.Random(f"analogies:{seed}")),
        "regression": DatasetDict({"train": _ds(regression_rows(cfg.regression_curves, cfg.n_regression, cfg.regression_noise, seed), "regression")}),
    }
