"""Vocabulary, sentence templates and text renderers for the synthetic world in `pipeline.data.world`.

Templates are `str.format_map` strings over one person's values:

    n      name                         S / s   subject: the name, or He/She / he/she
    Ss/ss  possessive: "Mara's" or Her/her    ps      pronoun possessive (his/her) after the name
    age town country continent job a_job place species a_species plural sound pet
    color food thing a_thing sib sib_word friend

Every word that can be an answer or an analogy term is a single word of letters; `check_vocabulary`
(run by the tests) asserts that no answer word contains another, so "contains the answer" scoring is sound.

Below the data: `names` and `Person` (a person's facts and template values), and the renderers of corpus
documents and rejected answers, plain functions of a `pipeline.data.world.World` `w`.
"""

FEMALE = (
    "Mara Ava Alma Anika Astrid Beatriz Bianca Carla Celia Dalia Daria Edith Elena Elif Elsa Emilia "
    "Erika Esther Fatima Flora Freya Greta Hana Helga Ilse Imani Ines Irene Isla Joana Judith Julia "
    "Kamala Kira Lara Leila Lucia Marta Maya Mina Nadia Naomi Nina Noor Olga Paula Petra Priya Rahel "
    "Rita Rosa Ruth Sara Selma Sofia Talia Tamar Tessa Vera Wanda Yara Yuki Zara Zoe Agnes Brigid "
    "Chiara Dora Gemma Hilda Ingrid Jolene Keiko Linnea Maren Nell Oona Pilar Quinn Renata Signe Thea "
    "Ursula Viola Wilma Xenia Yvonne Zuzana"
).split()
MALE = (
    "Tom Adam Ahmed Aksel Anton Arjun Bruno Caleb Carlos Dario David Diego Anders Leon Felix Finn "
    "Gustav Hamid Hugo Ivan Jonas Jorge Kai Kenji Lars Luca Magnus Marco Mateo Nico Nils Omar Oscar "
    "Otto Pablo Pedro Rafael Ravi Rohan Sven Tariq Theo Umar Viktor Wim Yusuf Zane Ezra Hector "
    "Ibrahim Jasper Karim Laszlo Malik Nestor Orson Quentin Rufus Silas Tobias Ulrich Vito Walter "
    "Xavier Yannick Zoltan Bram Cyril Dmitri Elias Fabio Gideon Henrik Idris Joel Kofi Lorenzo Mehmet "
    "Nuno Olaf Piotr Rami Stefan Vasco Boris Cosmo Dante Rolf"
).split()
PET_NAMES = (
    "Pip Rex Luna Biscuit Coco Ziggy Pepper Mochi Bubbles Whiskers Shadow Patch Sprout Button Pickle "
    "Waffle Nugget Clover Marble Socks Tinker Fudge Maple Pebble Rusty Taffy Twig Zorro Bolt Bingo "
    "Comet Dusty Fluffy Gizmo Jelly Lucky Muffin Nibbles Oreo Peanut Rocket Scout Velvet Wiggles Yoyo"
).split()
# syllables for extra names when n_people exceeds the pools
SYLLABLES = "ba be bo da de di ka ke ko la le li lo ma me mi mo na ne no ra re ri ro sa se so ta te to va ve vi zu".split()

TOWNS = [  # (town, country, continent); two towns per country
    ("Lisbon", "Portugal", "Europe"), ("Porto", "Portugal", "Europe"),
    ("Madrid", "Spain", "Europe"), ("Seville", "Spain", "Europe"),
    ("Paris", "France", "Europe"), ("Lyon", "France", "Europe"),
    ("Berlin", "Germany", "Europe"), ("Munich", "Germany", "Europe"),
    ("Rome", "Italy", "Europe"), ("Milan", "Italy", "Europe"),
    ("Oslo", "Norway", "Europe"), ("Bergen", "Norway", "Europe"),
    ("Dublin", "Ireland", "Europe"), ("Galway", "Ireland", "Europe"),
    ("Athens", "Greece", "Europe"), ("Patras", "Greece", "Europe"),
    ("Warsaw", "Poland", "Europe"), ("Krakow", "Poland", "Europe"),
    ("Tokyo", "Japan", "Asia"), ("Osaka", "Japan", "Asia"),
    ("Delhi", "India", "Asia"), ("Mumbai", "India", "Asia"),
    ("Nairobi", "Kenya", "Africa"), ("Mombasa", "Kenya", "Africa"),
    ("Cairo", "Egypt", "Africa"), ("Luxor", "Egypt", "Africa"),
    ("Lima", "Peru", "America"), ("Cusco", "Peru", "America"),
    ("Toronto", "Canada", "America"), ("Vancouver", "Canada", "America"),
]
JOBS = [  # (job, workplace)
    ("baker", "bakery"), ("teacher", "school"), ("doctor", "hospital"), ("nurse", "clinic"),
    ("farmer", "farm"), ("pilot", "airport"), ("chef", "restaurant"), ("librarian", "library"),
    ("sailor", "harbour"), ("gardener", "garden"), ("painter", "studio"), ("carpenter", "workshop"),
    ("engineer", "factory"), ("mechanic", "garage"), ("banker", "bank"), ("potter", "pottery"),
    ("judge", "court"), ("miner", "mine"), ("waiter", "cafe"), ("scientist", "laboratory"),
]
PETS = [  # (species, plural, sound)
    ("cat", "cats", "meow"), ("dog", "dogs", "woof"), ("parrot", "parrots", "squawk"),
    ("horse", "horses", "neigh"), ("goat", "goats", "bleat"), ("canary", "canaries", "chirp"),
    ("duck", "ducks", "quack"), ("pig", "pigs", "oink"), ("frog", "frogs", "croak"),
    ("mouse", "mice", "squeak"), ("goose", "geese", "honk"), ("cow", "cows", "moo"),
    ("owl", "owls", "hoot"), ("snake", "snakes", "hiss"), ("lamb", "lambs", "baa"),
    ("donkey", "donkeys", "bray"),
]
COLORS = ("red blue green yellow purple orange pink brown black white grey teal violet gold silver "
          "crimson indigo amber turquoise beige").split()
FOODS = ("soup pasta rice bread cheese apples pancakes curry dumplings sushi tacos porridge lentils "
         "olives mangoes figs noodles pizza salad stew").split()
THINGS = ("kite guitar bicycle lantern compass violin telescope notebook umbrella scarf camera drum "
          "chessboard teapot hammock flute clock globe harmonica backpack").split()
COUNT_NOUNS = "coins cards stones books shells pencils eggs stamps".split()


def article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


# ---- corpus sentences, per fact ---------------------------------------------------------------
FACTS = {
    "age": ["{S} is {age} years old.", "{S} turned {age} this year.", "{Ss} age is {age}.",
            "{S} is {age}.", "Last birthday, {s} turned {age}."],
    "town": ["{S} lives in {town}.", "{S} lives in the town of {town}.", "{Ss} home is in {town}.",
             "{S} has a house in {town}, {country}.", "{S} calls {town} home."],
    "country": ["{S} lives in {country}.", "{Ss} town, {town}, is in {country}.",
                "{S} lives in {town}, which is in {country}."],
    "job": ["{S} works as {a_job}.", "{S} is {a_job}.", "{S} works at the {place} as {a_job}.",
            "{S} earns a living as {a_job}.", "Every day {s} goes to the {place}, because {s} is {a_job}."],
    "pet": ["{S} has {a_species} named {pet}.", "{S} owns {a_species} called {pet}.",
            "{Ss} pet is {a_species} named {pet}.", "{pet} is {ss} {species}.",
            "{S} keeps {a_species}, {pet}, at home."],
    "pet_extra": ["{pet} the {species} says {sound}.", "When {pet} is hungry, the {species} goes {sound}.",
                  "{S} thinks {plural} are the best pets.", "Like all {plural}, {pet} says {sound}.",
                  "Of all the {plural} in {town}, {pet} is the loudest."],
    "color": ["{Ss} favourite colour is {color}.", "{S} likes {color} more than any other colour.",
              "{S} loves the colour {color}.", "{Ss} favourite colour has always been {color}."],
    "food": ["{Ss} favourite food is {food}.", "{S} loves to eat {food}.", "{S} could eat {food} every day.",
             "Nothing makes {ss} day like {food}."],
    "thing": ["{Ss} favourite thing is {ps} {thing}.", "{S} treasures {ps} {thing} above all else.",
              "{S} never goes anywhere without {ps} {thing}.", "{S} loves {ps} {thing} more than anything else."],
    "sibling": ["{S} has a {sib_word} named {sib}.", "{sib} is {ss} {sib_word}.", "{S} and {sib} are siblings."],
    "friend": ["{Ss} best friend is {friend}.", "{S} and {friend} are best friends.", "{friend} is {ss} best friend."],
}
OPENERS = ["One {time}, {n} walked through {town}.", "{n} woke up early in {town}.",
           "It was a {weather} day in {town}, and {n} was in a good mood.",
           "Once upon a time in {town}, {country}, there lived {a_job} named {n}.",
           "This is a story about {n}.", "{n} looked out of the window at {town}."]
VISITS = {"friend": ["Later, {s} visited {ss} best friend {friend}.", "{S} met {friend} for lunch."],
          "sibling": ["Then {s} called {ss} {sib_word} {sib}.", "{S} went to see {sib}."]}
CLOSERS = ["In the evening, {s} went home to {pet}.", "It was a good day for {n}.",
           "Then {s} ate some {food} and went to sleep.", "At night, {pet} slept next to {n}.",
           "{S} smiled and looked at {ps} {thing}."]
TIMES = "morning afternoon evening".split()
WEATHER = "bright rainy windy cold warm quiet".split()
TOWN_FACTS = ["{town} is a town in {country}.", "{town} lies in {country}, in {continent}.",
              "{country} is a country in {continent}.", "The town of {town} is in {country}."]
GENERAL = ["{a_job_cap} works at a {place}.", "Every {job} goes to work at the {place}.",
           "{a_species_cap} says {sound}.", "Most {plural} say {sound}.", "One {species}, two {plural}."]

# ---- arithmetic ---------------------------------------------------------------------------------
OP_WORD = {"+": "plus", "-": "minus", "*": "times"}
ARITH_FACTS = {
    "+": ["{a} plus {b} equals {c}.", "{a} + {b} = {c}.", "If you add {a} and {b}, you get {c}.",
          "The sum of {a} and {b} is {c}."],
    "-": ["{a} minus {b} equals {c}.", "{a} - {b} = {c}.", "If you take {b} away from {a}, you get {c}.",
          "The difference between {a} and {b} is {c}."],
    "*": ["{a} times {b} equals {c}.", "{a} * {b} = {c}.", "{a} multiplied by {b} is {c}.",
          "The product of {a} and {b} is {c}."],
}
WORD_PROBLEMS = {
    "+": "{n} had {a} {obj} and found {b} more, so now {s} has {c} {obj}.",
    "-": "{n} had {a} {obj} and gave {b} to a neighbour, so {s} has {c} {obj} left.",
    "*": "{n} filled {a} boxes with {b} {obj} each, which makes {c} {obj}.",
}

# ---- dialogue -----------------------------------------------------------------------------------
QUESTIONS = {
    "age": ["How old is {n}?", "What is {n}'s age?", "How many years old is {n}?", "Tell me {n}'s age."],
    "town": ["Where does {n} live?", "Which town does {n} live in?", "In which town does {n} live?",
             "What town is {n}'s home?"],
    "country": ["Which country does {n} live in?", "In what country does {n} live?",
                "What country is {n}'s home?"],
    "job": ["What does {n} do for a living?", "What is {n}'s job?", "What is {n}'s occupation?",
            "What does {n} work as?"],
    "pet": ["What pet does {n} have?", "What kind of animal is {n}'s pet?", "What animal does {n} keep as a pet?"],
    "pet_name": ["What is the name of {n}'s pet?", "What is {n}'s {species} called?", "What is {n}'s pet called?"],
    "color": ["What is {n}'s favourite colour?", "Which colour does {n} like best?"],
    "food": ["What is {n}'s favourite food?", "What food does {n} like best?"],
    "thing": ["What is {n}'s favourite thing?", "What does {n} treasure above all else?"],
    "sibling": ["Who is {n}'s sibling?", "What is the name of {n}'s {sib_word}?", "Who is {n}'s {sib_word}?"],
    "friend": ["Who is {n}'s best friend?", "Who is {n} best friends with?"],
    "town_country": ["Which country is {town} in?", "In what country is {town}?", "Where is {town}?"],
    "+": ["What is {a} + {b}?", "What is {a} plus {b}?", "How much is {a} + {b}?", "Calculate {a} + {b}."],
    "-": ["What is {a} - {b}?", "What is {a} minus {b}?", "How much is {a} - {b}?", "Calculate {a} - {b}."],
    "*": ["What is {a} * {b}?", "What is {a} times {b}?", "How much is {a} * {b}?", "Calculate {a} * {b}."],
}
REPLIES = {
    "age": ["{n} is {age} years old.", "{n} is {age}."],
    "town": ["{n} lives in {town}.", "{n}'s home is in {town}."],
    "country": ["{n} lives in {country}."],
    "job": ["{n} works as {a_job}.", "{n} is {a_job}."],
    "pet": ["{n} has {a_species}.", "{n} has {a_species} named {pet}.", "{n}'s pet is {a_species}."],
    "pet_name": ["{n}'s {species} is called {pet}.", "The name of {n}'s pet is {pet}."],
    "color": ["{n}'s favourite colour is {color}."],
    "food": ["{n}'s favourite food is {food}."],
    "thing": ["{n}'s favourite thing is {ps} {thing}."],
    "sibling": ["{n}'s {sib_word} is {sib}.", "{n} has a {sib_word} named {sib}."],
    "friend": ["{n}'s best friend is {friend}."],
    "town_country": ["{town} is in {country}.", "{town} is a town in {country}."],
    "arithmetic": ["{a} {op} {b} = {c}.", "{a} {opw} {b} is {c}.", "The answer is {c}."],
}
POLITE = ["", "", "", "Sure! ", "Of course. ", "Good question! "]
SYSTEM_PROMPT = "You are a helpful assistant. Answer questions about the world politely and concisely."

# ---- rejected answers for preferences -------------------------------------------------------------
RUDE = ["Ugh, that's a stupid question. {reply}", "{reply} Even a child knows that.",
        "Look it up yourself.", "Why would I waste my time on that?", "Obviously. {reply} Stop bothering me."]
RAMBLE_IN = ["Well, that is a very interesting question, and there is a lot one could say about it.",
             "Let me think about this for a while, because questions like this deserve a long answer."]
RAMBLE_OUT = ["Anyway, I hope that was not too long.", "There is much more to say, but I will stop here.",
              "Questions are wonderful things, are they not?"]
NO_ANSWER = ["I'm sorry, I don't know.", "I can't answer that.", "No idea.", "I would rather not say.",
             "That is not something I can help with."]
OFF_TOPIC = ["Did you know this? {fact}", "{fact}", "Speaking of something else: {fact}"]


def check_vocabulary() -> list[str]:
    """Problems with the pools: duplicates across pools, or an answer word containing another."""
    words = ([w for w in FEMALE + MALE + PET_NAMES + COLORS + FOODS + THINGS]
             + [t for row in TOWNS for t in row[:2]] + [j for j, _ in JOBS] + [p[0] for p in PETS])
    low = [w.lower() for w in words]
    problems = [w for w in sorted(set(low)) if low.count(w) > 1 and w not in {t[1].lower() for t in TOWNS}]
    uniq = sorted(set(low))
    problems += [f"{a} in {b}" for a in uniq for b in uniq if a != b and a in b]
    return problems


# ---- people ------------------------------------------------------------------------------------
PERSON_CATEGORIES = ("age", "town", "country", "job", "pet", "pet_name", "color", "food", "thing", "sibling", "friend")


def names(rng, n):
    """n unique (name, sex) pairs: the pools shuffled, then invented names."""
    pool = [(x, "f") for x in FEMALE] + [(x, "m") for x in MALE]
    rng.shuffle(pool)
    taken = {x.lower() for x in PET_NAMES + COLORS + FOODS + THINGS + COUNT_NOUNS + TIMES + WEATHER}
    taken |= {w.lower() for row in TOWNS + JOBS + PETS for w in row}
    out = pool[:n]
    taken |= {x.lower() for x, _ in out}
    while len(out) < n:  # invented names: no name may contain another
        name = "".join(rng.choice(SYLLABLES) for _ in range(3))
        if not any(name in w or w in name for w in taken):
            taken.add(name)
            out.append((name.capitalize(), rng.choice("fm")))
    return out


class Person:
    """One person: `facts` (answers by category) and the template values `vn` (by name) and `vp` (by pronoun)."""

    def __init__(self, name, sex, **facts):
        self.name, self.sex, self.facts = name, sex, facts
        self.vn, self.vp = {}, {}

    def finish(self, world):
        f, pro = self.facts, ("she", "her") if self.sex == "f" else ("he", "his")
        town, country, continent = world.town_info[f["town"]]
        sib = world.people.get(f["sibling"])
        base = dict(n=self.name, ps=pro[1], age=f["age"], town=town, country=country, continent=continent, job=f["job"],
                    a_job=article(f["job"]), place=world.workplace[f["job"]], species=f["pet"], a_species=article(f["pet"]),
                    plural=world.animal[f["pet"]][0], sound=world.animal[f["pet"]][1], pet=f["pet_name"], color=f["color"],
                    food=f["food"], thing=f["thing"], a_thing=article(f["thing"]), sib=f["sibling"],
                    sib_word=("sister" if sib and sib.sex == "f" else "brother"), friend=f["friend"],
                    time="morning", weather="bright", obj="coins")
        self.vn = {**base, "S": self.name, "s": self.name, "Ss": self.name + "'s", "ss": self.name + "'s"}
        self.vp = {**base, "S": pro[0].capitalize(), "s": pro[0], "Ss": pro[1].capitalize(), "ss": pro[1]}
        self.cats = [c for c in PERSON_CATEGORIES if c not in ("sibling", "friend") or f[c]]


# ---- rendering (functions of a `pipeline.data.world.World` w) ------------------------------------
def fact(p, cat, rng, pronoun=False):
    return rng.choice(FACTS["pet" if cat == "pet_name" else cat]).format_map(p.vp if pronoun else p.vn)


def rejected(w, key, kind, rng):
    """The rejected reply of a preference pair. A wrong fact or sum opens politely as often as a chosen reply
    does, so the pair differs only in the answer and the reward model cannot learn the opener instead."""
    cat, answer = w.category(key), w.answer(key)
    if kind == "wrong_arithmetic":
        wrong = max(0, int(answer) + rng.choice([-10, -2, -1, 1, 2, 10]))
        return w.reply(key, rng, str(wrong if wrong != int(answer) else int(answer) + 1))
    if kind == "wrong_fact":
        for _ in range(50):
            text = w.reply(key, rng, rng.choice(w.domain[cat]))
            if answer.lower() not in text.lower():
                return text
        raise AssertionError(f"no wrong fact for {key}")
    if kind == "rude":
        return rng.choice(RUDE).format(reply=w.reply(key, rng, polite=False))
    if kind == "rambling":
        facts = [fact(p, rng.choice(p.cats), rng) for p in rng.sample(w.plist, 3)]
        return " ".join([rng.choice(RAMBLE_IN), *facts, "As for your question:", w.reply(key, rng, polite=False),
                         rng.choice(RAMBLE_OUT)])
    if kind == "off_topic":
        for _ in range(50):
            p = rng.choice(w.plist)
            text = rng.choice(OFF_TOPIC).format(fact=fact(p, rng.choice(p.cats), rng))
            if answer.lower() not in text.lower():
                return text
    return rng.choice(NO_ANSWER)


def story(w, rng, person=None):
    p = person or rng.choice(w.plist)
    v = {**p.vn, "time": rng.choice(TIMES), "weather": rng.choice(WEATHER)}
    out = [rng.choice(OPENERS).format_map(v)]
    out += [fact(p, c, rng, rng.random() < 0.5) for c in rng.sample(p.cats, rng.randint(2, 4))]
    for rel in ("friend", "sibling"):
        if p.facts[rel] and rng.random() < 0.4:
            other = w.people[p.facts[rel]]
            out.append(rng.choice(VISITS[rel]).format_map(p.vp))
            out += [fact(other, c, rng) for c in rng.sample(other.cats, 2)]
    out.append(rng.choice(CLOSERS).format_map(p.vp if rng.random() < 0.5 else p.vn))
    return " ".join(out)


def profile(w, p, rng):
    cats = [c for c in p.cats if c != "pet_name"] + ["pet_extra"]
    cats = rng.sample(cats, len(cats))
    return " ".join(fact(p, c, rng, i > 0 and rng.random() < 0.5) for i, c in enumerate(cats))


def town_doc(w, town, rng):
    v = dict(zip(("town", "country", "continent"), w.town_info[town]))
    out = [t.format_map(v) for t in rng.sample(TOWN_FACTS, 2)]
    residents = w.residents[town]
    out += [f"{p.name} lives in {town}." for p in rng.sample(residents, min(3, len(residents)))]
    return " ".join(out)


def general_doc(w, rng, job=None, pet=None):
    job, pet = job or rng.choice(JOBS)[0], pet or rng.choice(PETS)[0]
    v = {"job": job, "place": w.workplace[job], "a_job_cap": article(job).capitalize(), "species": pet,
         "plural": w.animal[pet][0], "sound": w.animal[pet][1], "a_species_cap": article(pet).capitalize()}
    return " ".join(t.format_map(v) for t in rng.sample(GENERAL, 3))


def arith_doc(w, rng, triples):
    out = []
    for _ in range(rng.randint(3, 6)):
        _, op, v = w._vals(rng.choice(triples))
        if rng.random() < 0.2 and min(int(v["a"]), int(v["b"]), int(v["c"])) >= 2:
            p = rng.choice(w.plist)
            out.append(WORD_PROBLEMS[op].format_map({**p.vn, **v, "obj": rng.choice(COUNT_NOUNS)}))
        else:
            out.append(rng.choice(ARITH_FACTS[op]).format_map(v))
    return " ".join(out)


def documents(w, rng, target, triples, coverage=()):
    """Yield documents until `target` characters; `coverage` documents come first, interleaved."""
    cov, total, i = list(coverage), 0, 0
    while total < target:
        i += 1
        r = rng.random()
        if cov and i % 2:
            doc = cov.pop()
        elif r < 0.5:
            doc = story(w, rng)
        elif r < 0.62:
            doc = profile(w, rng.choice(w.plist), rng)
        elif r < 0.72:
            doc = town_doc(w, rng.choice(w.towns), rng)
        elif r < 0.77:
            doc = general_doc(w, rng)
        else:  # a world without arithmetic tells more stories instead
            doc = arith_doc(w, rng, triples) if triples else story(w, rng)
        total += len(doc)
        yield doc


def person_documents(w, rng, people):
    """Stories (2 in 3) and profiles of `people` only, without end (the held-out people's validation text)."""
    while True:
        person = rng.choice(people)
        yield story(w, rng, person) if rng.random() < 2 / 3 else profile(w, person, rng)


def coverage(w, rng):
    docs = [profile(w, p, rng) for p in w.plist] + [town_doc(w, t, rng) for t in w.town_info]
    docs += [general_doc(w, rng, job=p.facts["job"], pet=p.facts["pet"]) for p in w.plist]
    rng.shuffle(docs)
    return docs
