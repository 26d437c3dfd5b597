"""The synthetic world itself: its settings (`WorldConfig`), its people and facts, and how to ask about them
and state them (`World`). `pipeline.data.world` draws the datasets from it.

`World(cfg, seed)` is deterministic: the same config and seed give the same people, facts and relations, whatever
the hash seed. Question keys are strings: "age:Mara", "town_country:Lisbon", "arithmetic:7+5".
"""

import random
import re
from dataclasses import dataclass, field

from pipeline.data import world_text as T
from pipeline.data.curves import CURVES
from pipeline.errors import PipelineError

PERSON_CATEGORIES = T.PERSON_CATEGORIES
CATEGORIES = PERSON_CATEGORIES + ("town_country", "arithmetic")
_FIELD = {"pet": "species", "pet_name": "pet", "sibling": "sib", "town_country": "country", "arithmetic": "c"}


@dataclass
class WorldConfig:
    n_people: int = field(default=60, metadata={"help": "People in the world (unique first names; names are invented beyond ~180)."})
    n_towns: int = field(default=12, metadata={"help": "Towns the people live in (3-30), two per country at most."})
    corpus_bytes: int = field(default=100_000, metadata={"help": "Target size of the text corpus in bytes (~100 KB tiny, 100+ MB large)."})
    n_dialogues: int = field(default=1000, metadata={"help": "Dialogue rows over train/validation/test."})
    n_preferences: int = field(default=1000, metadata={"help": "Preference pairs over train/validation/test."})
    n_prompts: int = field(default=200, metadata={"help": "PPO prompts over train/test, one held-out question each (fewer if the world runs out)."})
    n_eval: int = field(default=200, metadata={"help": "Held-out ground-truth questions in qa_eval (fewer if the world runs out)."})
    n_regression: int = field(default=50, metadata={"help": "Points per regression curve (one curve per name in regression_curves)."})
    regression_curves: list[str] = field(default_factory=lambda: list(CURVES), metadata={"help": f"Regression curves to draw, from: {', '.join(CURVES)}."})
    regression_noise: float = field(default=0.03, metadata={"help": "Gaussian noise sd as a fraction of each curve's range of y."})
    arithmetic: bool = field(default=True, metadata={"help": "Ask and state arithmetic (a + b, a - b, a * b). Held-out sums are unseen sums, which small models do not learn; false leaves arithmetic out of every dataset."})
    max_operand: int = field(default=20, metadata={"help": "Largest operand of additions and subtractions (products use up to 12)."})
    max_analogies_per_section: int = field(default=200, metadata={"help": "Cap on analogy questions per relation section."})
    holdout_people: int = field(default=0, metadata={"help": "People held out of training: their stories and profiles are the whole validation corpus, no training text mentions them and no question asks about them, so validation loss measures generalisation to unseen people (0: validation is drawn like train, minus verbatim copies of train documents)."})
    multi_turn_fraction: float = field(default=0.3, metadata={"help": "Share of dialogues with 2-3 question turns."})
    system_prompt_fraction: float = field(default=0.0, metadata={"help": "Share of dialogues that start with a system message."})
    validation_fraction: float = field(default=0.1, metadata={"help": "Share of questions (and corpus bytes) in validation splits."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of questions in test splits (dialogue, preferences, prompts)."})

    def __post_init__(self):  # checked when the recipe is read, so `pipeline validate` catches it
        try:
            _validate(self)
        except PipelineError as e:
            raise ValueError(str(e).removeprefix("world.").removeprefix("world: ")) from None


class World:
    """The facts of one seeded world, and how to ask about and state them. Question keys are strings:
    "age:Mara", "town_country:Lisbon", "arithmetic:7+5"."""

    def __init__(self, cfg: WorldConfig, seed: int):
        _validate(cfg)
        self.cfg, self.seed = cfg, seed
        rng = random.Random(f"world:{seed}")
        self.town_info = {t[0]: t for t in sorted(rng.sample(T.TOWNS, cfg.n_towns))}
        self.workplace, self.animal = dict(T.JOBS), {p[0]: p[1:] for p in T.PETS}
        self.people = {}
        for name, sex in T.names(rng, cfg.n_people):
            self.people[name] = T.Person(
                name, sex, age=str(rng.randint(18, 80)), town=rng.choice(list(self.town_info)), job=rng.choice(T.JOBS)[0],
                pet=rng.choice(T.PETS)[0], pet_name=rng.choice(T.PET_NAMES), color=rng.choice(T.COLORS),
                food=rng.choice(T.FOODS), thing=rng.choice(T.THINGS), sibling="", friend="")
        names = list(self.people)
        held = set(random.Random(f"holdout:{seed}").sample(names, cfg.holdout_people)) if cfg.holdout_people else set()
        for group in ([n for n in names if n not in held], [n for n in names if n in held]):
            self._relate(rng, group)  # siblings and friends within a group: held-out people stay unseen
        for p in self.people.values():
            p.finish(self)
        # plist: the people training data may mention; held_out: those only the validation corpus knows
        self.plist = [p for p in self.people.values() if p.name not in held]
        self.held_out = [p for p in self.people.values() if p.name in held]
        self.towns = list(self.town_info)
        self.residents = {t: [p for p in self.plist if p.facts["town"] == t] for t in self.towns}
        self.keys = {c: [f"{c}:{p.name}" for p in self.plist if c in p.cats] for c in PERSON_CATEGORIES}
        self.keys["town_country"] = [f"town_country:{t}" for t in self.town_info]
        m = cfg.max_operand
        self.keys["arithmetic"] = ([f"arithmetic:{a}+{b}" for a in range(m + 1) for b in range(m + 1)]
                                   + [f"arithmetic:{a}-{b}" for a in range(m + 1) for b in range(a + 1)]
                                   + [f"arithmetic:{a}*{b}" for a in range(min(m, 12) + 1) for b in range(min(m, 12) + 1)]
                                   if cfg.arithmetic else [])
        self.domain = {"age": [str(a) for a in range(18, 81)], "town": list(self.town_info), "job": [j for j, _ in T.JOBS],
                       "country": sorted({t[1] for t in self.town_info.values()}), "pet": list(self.animal),
                       "pet_name": T.PET_NAMES, "color": T.COLORS, "food": T.FOODS, "thing": T.THINGS,
                       "sibling": [n for n in names if n not in held], "friend": [n for n in names if n not in held]}
        self.domain["town_country"] = self.domain["country"]
        self._index = None

    def _relate(self, rng, names):
        """Pair ~40% of `names` as siblings, then most of them as best friends (never one's own sibling)."""
        if not names:
            return
        order = rng.sample(names, len(names))
        n_siblings = int(0.4 * len(names)) // 2 * 2
        for a, b in zip(order[0:n_siblings:2], order[1:n_siblings:2]):
            self.people[a].facts["sibling"], self.people[b].facts["sibling"] = b, a
        pending = None
        for name in rng.sample(names, len(names)):
            if pending is not None and self.people[pending].facts["sibling"] != name:
                self.people[pending].facts["friend"], self.people[name].facts["friend"] = name, pending
                pending = None
            else:
                pending = name

    # ---- facts, questions and answers ---------------------------------------------------------
    def _vals(self, key):
        cat, subject = key.split(":", 1)
        if cat == "arithmetic":
            a, op, b = re.fullmatch(r"(\d+)([-+*])(\d+)", subject).groups()
            c = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
            return cat, op, {"a": a, "b": b, "c": str(c), "op": op, "opw": T.OP_WORD[op]}
        if cat == "town_country":
            return cat, cat, {"town": subject, "country": self.town_info[subject][1]}
        return cat, cat, self.people[subject].vn

    def answer(self, key: str) -> str:
        cat, _, vals = self._vals(key)
        return str(vals[_FIELD.get(cat, cat)])

    def answer_spec(self, key: str) -> dict:
        """What strict scoring needs (`pipeline.metrics.qa`): the answer, its category, the question's subject
        (a reply's echo of it is not an answer) and the answer's type: an integer, or a choice among candidates."""
        category, subject = self.category(key), key.split(":", 1)[1]
        integer = category in ("age", "arithmetic")
        return {"answer": self.answer(key), "category": category, "subject": subject,
                "answer_type": "integer" if integer else "choice",
                "candidates": [] if integer else _candidates(self, category)}

    def category(self, key: str) -> str:
        return key.split(":", 1)[0]

    def questions(self, key: str) -> list[str]:
        _, qcat, vals = self._vals(key)
        return [q.format_map(vals) for q in T.QUESTIONS[qcat]]

    def key_of(self, question: str) -> str | None:
        """The question key of any phrasing this world produces, or None."""
        if self._index is None:
            self._index = {q: k for ks in self.keys.values() for k in ks for q in self.questions(k)}
        return self._index.get(question)

    def reply(self, key, rng, value=None, polite=True):
        cat, _, vals = self._vals(key)
        if value is not None:
            f = _FIELD.get(cat, cat)
            vals = {**vals, f: value, "a_job": T.article(value if f == "job" else vals.get("job", "x")),
                    "a_species": T.article(value if f == "species" else vals.get("species", "x"))}
        return (rng.choice(T.POLITE) if polite else "") + rng.choice(T.REPLIES[cat]).format_map(vals)

    def analogy_pairs(self):
        t = self.town_info.values()
        ps = self.plist
        return {
            "town-country": [(x[0], x[1]) for x in t],
            "country-continent": sorted({(x[1], x[2]) for x in t}),
            "person-town": [(p.name, p.facts["town"]) for p in ps],
            "person-job": [(p.name, p.facts["job"]) for p in ps],
            "person-pet": [(p.name, p.facts["pet"]) for p in ps],
            "job-workplace": sorted({(p.facts["job"], self.workplace[p.facts["job"]]) for p in ps}),
            "animal-sound": sorted({(p.facts["pet"], self.animal[p.facts["pet"]][1]) for p in ps}),
            "animal-plural": sorted({(p.facts["pet"], self.animal[p.facts["pet"]][0]) for p in ps}),
        }


def _candidates(world, category: str) -> list[str]:
    """Every word of the answer's type the model could have seen: towns and countries of the whole pool
    (not only this world's), the world's names, and the fixed pools of the other categories."""
    if category == "town":
        return sorted({t[0] for t in T.TOWNS})
    if category in ("country", "town_country"):
        return sorted({t[1] for t in T.TOWNS})
    return sorted(world.domain[category])


def _validate(cfg):
    ints = {"n_people": 4, "n_towns": 3, "corpus_bytes": 0, "n_dialogues": 0, "n_preferences": 0, "n_prompts": 0,
            "n_eval": 0, "n_regression": 3, "max_operand": 2, "max_analogies_per_section": 0}
    for name, low in ints.items():
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < low:
            raise PipelineError(f"world.{name}: expected an integer >= {low}, got {value!r}")
    if not isinstance(cfg.holdout_people, int) or not 0 <= cfg.holdout_people <= cfg.n_people - 4:
        raise PipelineError(f"world.holdout_people: expected an integer in [0, n_people - 4 = {cfg.n_people - 4}], got {cfg.holdout_people!r}")
    for name, high in (("n_towns", len(T.TOWNS)), ("n_people", 2000)):
        if getattr(cfg, name) > high:
            raise PipelineError(f"world.{name}: at most {high}, got {getattr(cfg, name)}")
    for name in ("regression_noise", "multi_turn_fraction", "system_prompt_fraction", "validation_fraction", "test_fraction"):
        if not isinstance(getattr(cfg, name), (int, float)) or not 0 <= getattr(cfg, name) < 1:
            raise PipelineError(f"world.{name}: expected a number in [0, 1), got {getattr(cfg, name)!r}")
    if not isinstance(cfg.arithmetic, bool):
        raise PipelineError(f"world.arithmetic: expected true or false, got {cfg.arithmetic!r}")
    if cfg.validation_fraction + cfg.test_fraction >= 0.9:
        raise PipelineError("world: validation_fraction + test_fraction must stay below 0.9")
    unknown = [c for c in cfg.regression_curves if c not in CURVES]
    if unknown or len(set(cfg.regression_curves)) != len(cfg.regression_curves):
        raise PipelineError(f"world.regression_curves: unknown or repeated {unknown or cfg.regression_curves}; choose from {list(CURVES)}")
