"""The embedded demo NER dataset: synthetic English news-style sentences that peftlab makes itself.

It exists so that `python -m peftlab task=ner ...` trains and scores a real encoder out of the box,
with no download and in about a minute on a laptop CPU. It is a demo for trying the tool out, not a
benchmark. Nothing here is copied or sampled from an existing corpus: the vocabulary, name parts
and sentence templates are peftlab's own, and `make_demo_ner(seed)` composes the same sentences
for the same seed in every process (a local `random.Random`, seeded by strings, which Python
turns into integers without `hash()`).

Tags are IOB2 over PER, ORG, LOC and MISC. Entities are composed from name parts (first names x
surnames, brands x industries, place roots x "Lake"/"Bay"/"Bank of" ...), so there are hundreds of
distinct names, many of them several tokens long. Each pool of parts is split by the data seed into
a train share and two held-out shares; validation and test names are mostly built from their own
held-out parts, and a few templates never appear in train. A model therefore scores well only by
reading context, capitalisation and name shape, not by remembering names. Context also has to
settle ambiguity: a place root is LOC alone but ORG in "Bank of Varnen" and MISC in "Varnen
Marathon", a surname is PER alone but ORG in "Okafor Logistics", and capitalised words such as
"Lake", "North", "Summer" or "May" are O where they are not part of a name.
"""

from __future__ import annotations

import random

DEMO_SPLIT_SIZES = {"train": 1200, "validation": 200, "test": 200}
ENTITY_TYPES = ("PER", "ORG", "LOC", "MISC")

# Share of each name part that validation/test draw from their own held-out pool rather than the
# train pool: most eval names are unseen, a few repeat train names as real test sets do.
HELD_OUT_PART_RATE = 0.7
TRAIN_SHARE, VALIDATION_SHARE = 0.7, 0.15  # of each pool of name parts; test gets the rest

Pools = dict[str, list[str]]
Sentence = dict[str, list[str]]

COUNTRY_DEMONYMS = {
    "Estoria": "Estorian", "Valdria": "Valdrian", "Norvaland": "Norvalish", "Kestonia": "Kestonian",
    "Ombara": "Ombaran", "Teluvia": "Teluvian", "Sarvennia": "Sarvennian", "Morvask": "Morvaskan",
    "Drelland": "Drellish", "Quorvia": "Quorvian", "Almera": "Almeran", "Bessaria": "Bessarian",
    "Calvadia": "Calvadian", "Ferrosia": "Ferrosian", "Gallund": "Gallundic", "Halveria": "Halverian",
    "Istrovia": "Istrovian", "Jorland": "Jorlandic", "Lumeria": "Lumerian", "Nortessa": "Nortessan",
    "Oskaria": "Oskarian", "Pelagon": "Pelagonian", "Rusvania": "Rusvanian", "Tavoria": "Tavorian",
}

# Name parts that are split between train and the held-out validation/test shares.
NAME_PARTS: dict[str, tuple[str, ...]] = {
    "first": (
        "Maria", "Amara", "Tomasz", "Ingrid", "Kwame", "Lucia", "Ravi", "Noor", "Elena", "Mateo",
        "Sione", "Yuki", "Farah", "Jonas", "Aisha", "Pavel", "Leila", "Tobias", "Chidi", "Marta",
        "Hana", "Diego", "Freya", "Omar", "Zara", "Lars", "Nadia", "Kenji", "Ines", "Rohan",
        "Selin", "Bruno", "Ayla", "Felix", "Mira", "Dario", "Esther", "Kofi", "Linnea", "Arjun",
        "Sofia", "Emeka", "Greta", "Luca", "Priya", "Anton", "Wanjiru", "Hugo", "Talia", "Idris",
        "Rose", "May", "Hope", "Grace", "Joy", "Nikolai", "Paloma", "Sven", "Thandi", "Ruben",
    ),
    "surname": (
        "Okafor", "Lindqvist", "Moreau", "Haddad", "Brennan", "Kowalczyk", "Tanaka", "Mendes",
        "Achebe", "Varga", "Castellano", "Nakamura", "Osei", "Petrakis", "Halvorsen", "Quispe",
        "Abara", "Delacroix", "Novak", "Ferreira", "Mwangi", "Oyelaran", "Sorensen", "Karimi",
        "Whitlock", "Balogun", "Iversen", "Duarte", "Kaur", "Morozov", "Fitzgerald", "Rahman",
        "Ellery", "Santoro", "Adeyemi", "Falk", "Marchetti", "Ndlovu", "Okonkwo", "Thorsen",
        "Vasquez", "Yilmaz", "Zhou", "Albescu", "Brightwater", "Carrow", "Dunmore", "Everly",
        "Galloway", "Hartmann", "Ibarra", "Jovanovic", "Kimura", "Lowell", "Nilsen", "Oduya",
        "Pereira", "Rasmussen", "Toivonen", "Valcourt",
    ),
    "place": (
        "Varnen", "Brisholm", "Taloura", "Keldmoor", "Sanvila", "Dunmere", "Orlatz", "Merrowdale",
        "Caldris", "Vellhaven", "Korsund", "Tessaly", "Amberlo", "Quenford", "Rivalto", "Selmark",
        "Ostrel", "Glenhart", "Marisco", "Havrik", "Lunmore", "Bexwick", "Corvena", "Drasmo",
        "Elbrin", "Fennick", "Halvik", "Ilmara", "Jorvale", "Kestavik", "Lorento", "Nessby",
        "Orvanto", "Pellham", "Quarro", "Rothmere", "Saltreve", "Ulvena", "Vasskar", "Wendmoor",
        "Yarrowby", "Zelmira", "Borvale", "Cresthill", "Eskerby", "Frostmere", "Grellan", "Isenholt",
        "Karsk", "Lindrel", "Morvane", "Norrvik", "Palomir", "Quillan", "Redmarsh", "Sorvenna",
        "Tiberne", "Velmora", "Wexholm", "Zandor",
    ),
    "country": tuple(COUNTRY_DEMONYMS),
    "brand": (
        "Northwind", "Bluecrest", "Ironleaf", "Silverline", "Redpine", "Stonebridge", "Brightpath",
        "Coldharbor", "Greenhollow", "Highmark", "Lumenta", "Novaris", "Ortelia", "Quantiva",
        "Solvane", "Tessera", "Veltrix", "Zenhaus", "Arcwell", "Brightforge", "Cobaltix", "Deltara",
        "Evergate", "Foxbury", "Goldwren", "Harborline", "Kitewood", "Larkspur", "Meridex",
        "Oakvale", "Pinecroft", "Rivermark", "Sunderly", "Tidewell", "Westmoor", "Yellowfin",
    ),
    "festival": (
        "Lantern", "Harvest", "Kite", "Ember", "Lotus", "Tide", "Comet", "Maple", "Cedar", "Willow",
        "Aurora", "Thistle", "Meadow", "Beacon", "Starlight", "Firefly", "Orchard", "Driftwood",
        "Saffron", "Moonrise",
    ),
    "model": (
        "Nova", "Atlas", "Zephyr", "Orbit", "Pulse", "Vega", "Quill", "Halo", "Sprite", "Fathom",
        "Lynx", "Talon", "Strider", "Kestrel", "Cirrus", "Onyx", "Ripple", "Summit", "Vertex", "Glint",
    ),
}

# Shared vocabulary: name shape words and fillers that every split uses alike.
VOCAB: dict[str, tuple[str, ...]] = {
    "initial": tuple(f"{letter}." for letter in "ABCDEFGHJKLMNPRSTW"),
    "industry": (
        "Freight", "Logistics", "Textiles", "Energy", "Foods", "Media", "Pharma", "Robotics",
        "Shipping", "Insurance", "Telecom", "Motors", "Airlines", "Mining", "Software", "Brewing",
    ),
    "org_suffix": ("Systems", "Group", "Holdings", "Partners", "Industries", "Corp", "Ltd"),
    "club_suffix": ("Rovers", "United", "Athletic", "Wanderers", "Rangers", "FC", "City"),
    "season": ("Summer", "Winter", "Spring", "Autumn", "Midsummer"),
    "model_suffix": ("2", "3", "Pro", "Mini", "Plus"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": (
        "January", "February", "March", "April", "May", "June", "July", "August", "September",
        "October", "November", "December",
    ),
    "day_number": tuple(str(day) for day in range(1, 29)),
    "year": tuple(str(year) for year in range(1985, 2025)),
    "number": tuple(str(n) for n in range(2, 60)) + ("75", "120", "250", "400", "1,200", "3.5", "12.5"),
    "score": tuple(f"{won}-{lost}" for won in range(1, 5) for lost in range(won)),
    "ordinal": ("second", "third", "fourth", "fifth"),
}

# Slot -> (entity type or None for O, the shapes it takes). Repeated shapes weight the draw;
# `<part>` draws from NAME_PARTS or VOCAB, any other word is kept as written.
SLOTS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "PER": ("PER", ("<first> <surname>",) * 6 + ("<first>", "<first> <initial> <surname>")),
    "SURNAME": ("PER", ("<surname>",)),
    "ORG": ("ORG", (
        "<brand> <industry> <org_suffix>", "<brand> <industry>", "<surname> <industry>",
        "<place> <industry> <org_suffix>", "<brand>", "<brand> <org_suffix>", "<surname> & <surname>",
    )),
    "CLUB": ("ORG", ("<place> <club_suffix>",) * 3 + ("Sporting <place>",)),
    "INST": ("ORG", (
        "Bank of <place>", "University of <place>", "<place> City Council", "<place> General Hospital",
        "National Bank of <country>", "<place> Institute of Technology", "<country> Railways",
    )),
    "LOC": ("LOC", (
        "<place>", "<place>", "<country>", "Lake <place>", "Mount <place>", "<place> Valley",
        "Port <place>", "North <place>", "<place> Bay",
    )),
    "CITY": ("LOC", ("<place>",)),
    "COUNTRY": ("LOC", ("<country>",)),
    "EVENT": ("MISC", (
        "<season> <festival> Festival", "<festival> Festival", "<place> Marathon", "<place> Open",
        "<country> Cup", "<place> Film Festival", "<country> Grand Prix",
    )),
    "DEMONYM": ("MISC", ("<demonym>",)),
    "AWARD": ("MISC", ("<surname> Prize", "<surname> Medal", "<place> Prize", "<place> Book Award")),
    "PRODUCT": ("MISC", ("<brand> <model>", "<brand> <model> <model_suffix>", "<model> <model_suffix>")),
    "DATE": (None, ("<day_number> <month>", "<month> <day_number>", "<month> <day_number> , <year>")),
    "DAY": (None, ("<weekday>",)),
    "MONTH": (None, ("<month>",)),
    "YEAR": (None, ("<year>",)),
    "NUM": (None, ("<number>",)),
    "MONEY": (None, ("$ <number> million", "$ <number> billion", "<number> million dollars")),
    "SCORE": (None, ("<score>",)),
    "ORDINAL": (None, ("<ordinal>",)),
    "ROLE": (None, ("chief executive", "spokeswoman", "spokesman", "chairman", "finance director", "press officer")),
    "JOB": (None, ("teacher", "nurse", "farmer", "lawyer", "student", "retired engineer", "doctor", "painter")),
}

# Sentence templates: `{SLOT}` is filled from SLOTS, every other token is O.
TEMPLATES = (
    "{PER} joined {ORG} as {ROLE} in {YEAR} .",
    "{ORG} said on {DAY} it would open a new office in {CITY} .",
    "Dr. {SURNAME} told reporters in {CITY} that the results were encouraging .",
    "{CLUB} beat {CLUB} {SCORE} at home on {DAY} .",
    "The {EVENT} drew {NUM} visitors to {LOC} this year .",
    "{DEMONYM} officials met {PER} , the {ROLE} of {ORG} , in {COUNTRY} .",
    "{PER} won the {AWARD} for a study of water quality in {LOC} .",
    "Shares in {ORG} fell {NUM} percent after the {DEMONYM} regulator opened an inquiry .",
    "{INST} will host the {EVENT} on {DATE} .",
    "In {LOC} , {PER} and {PER} signed the agreement on behalf of {ORG} .",
    "The {PRODUCT} , made by {ORG} , goes on sale in {COUNTRY} next month .",
    "According to {INST} , unemployment in {CITY} fell to {NUM} percent .",
    "{PER} ( {CLUB} ) finished second in the {EVENT} .",
    "Mr. {SURNAME} , {NUM} , has lived in {LOC} since {YEAR} .",
    "The {DEMONYM} team arrived in {CITY} on {DATE} ahead of the {EVENT} .",
    '" We are very proud of this , " said {PER} of {ORG} .',
    "{DEMONYM} and {DEMONYM} boats may fish in {LOC} from {MONTH} .",
    "{ORG} has agreed to buy {ORG} for {MONEY} .",
    "Police in {CITY} are looking for {PER} .",
    "{PER} , who coaches {CLUB} , was named {DEMONYM} coach of the year .",
    "Flights between {CITY} and {CITY} resume on {DAY} , {ORG} said .",
    "The {AWARD} went to {PER} , a {JOB} from {CITY} .",
    "{SURNAME} scored twice as {CLUB} won the cup final in {CITY} .",
    "Residents near {LOC} complained about noise from the {EVENT} .",
    "{ORG} 's {ROLE} , {PER} , resigned on {DATE} .",
    "Heavy rain forced {INST} to close roads around {LOC} .",
    "{PER} thanked {PER} and the people of {CITY} .",
    "The {DEMONYM} government owns a stake in {ORG} .",
    "The {PRODUCT} was the best-selling phone in {COUNTRY} last year .",
    "At the {EVENT} , {PER} met {PER} of {INST} to discuss funding .",
    "The {CITY} council approved a new bridge over the river on {DAY} .",
    "{ORG} employs {NUM} people in {LOC} and makes the {PRODUCT} there .",
    "Born in {CITY} , {PER} studied law at {INST} .",
    "{PER} will lead the {DEMONYM} delegation .",
    "Tickets for the {EVENT} sold out within {NUM} hours .",
    "{CLUB} signed {PER} from {CLUB} for {MONEY} .",
    "Ms. {SURNAME} said {ORG} had not been told about the plan .",
    "The road from {LOC} to {LOC} reopened on {DATE} .",
    "{PER} , {PER} and {PER} were elected to the board of {ORG} .",
    "{ORG} reported a profit of {MONEY} for {YEAR} .",
    "Last {DAY} , {DEMONYM} fans celebrated in the streets of {CITY} .",
    "{PER} said the new {PRODUCT} would be built in {CITY} .",
    "{INST} and {ORG} signed a research deal worth {MONEY} on {DATE} .",
    "North of {CITY} , the road to {LOC} was closed by snow .",
    "In {MONTH} , {PER} moved from {CITY} to {COUNTRY} .",
    "After {NUM} years at {ORG} in {CITY} , {PER} left to start {ORG} , which now sells the "
    "{PRODUCT} in {COUNTRY} and {COUNTRY} .",
    "{PER} , {ROLE} at {INST} , said on {DAY} that the {DEMONYM} survey of {LOC} , which began in "
    "{YEAR} , would be published in {MONTH} .",
    "{PER} resigned as {ROLE} on {DAY} .",
    "{PER} reviewed the {PRODUCT} for a {DEMONYM} magazine .",
    "{CLUB} lost again on {DAY} .",
    "Heavy snow closed {LOC} again .",
    "Talks with {ORG} may resume in {MONTH} , {PER} said .",
    "Prices at {ORG} rose {NUM} percent , the {DEMONYM} statistics office said .",
    "{SURNAME} , the {DEMONYM} champion , won the {EVENT} for the {ORDINAL} time .",
    "Visitors to the {EVENT} in {LOC} spent {MONEY} .",
    "{COUNTRY} will play {COUNTRY} in the final of the {EVENT} .",
    # no entity at all, several opening with a capitalised word that is a name elsewhere
    "Prices rose {NUM} percent in {MONTH} , the report said .",
    "Summer storms cut power to {NUM} homes on {DAY} .",
    "Lake levels fell by {NUM} metres during the dry season .",
    "Bank shares fell {NUM} percent on {DAY} after the rate decision .",
    "North winds may bring snow to the hills by {DAY} .",
    "The match was abandoned after {NUM} minutes because of fog .",
    "Hope is fading for a deal before {DATE} , analysts said .",
    "Union members voted to strike for {NUM} days from {DATE} .",
    "The festival ended {NUM} hours early on {DAY} because of rain .",
    "Port workers said they had not been paid since {DATE} .",
    "Most of the city was quiet on the morning of {DATE} .",
)

# Templates that train never shows: validation and test also check unseen sentence shapes.
EVAL_ONLY_TEMPLATES = (
    "Speaking in {CITY} , {SURNAME} denied that {ORG} had cut jobs .",
    "{LOC} is home to the {EVENT} and to {CLUB} .",
    "A spokesman for {INST} declined to comment on {DAY} .",
    "{PER} , a {DEMONYM} writer , lives near {LOC} with a dog and two cats .",
    "Fans of {CLUB} travelled from {COUNTRY} to watch the {EVENT} .",
    "{ORG} and {ORG} will merge by {YEAR} , {PER} confirmed .",
    "None of the {NUM} passengers were hurt , officials said on {DAY} .",
)


def make_demo_ner(seed: int = 0) -> dict[str, list[Sentence]]:
    """{"train": [...], "validation": [...], "test": [...]}; each sentence {"tokens": [...],
    "tags": [...]} with IOB2 tags over ENTITY_TYPES. The same seed always gives the same data;
    the seed is the dataset's own (0 is what peftlab ships), not the training seed."""
    shares = _split_name_parts(random.Random(f"demo_ner/{seed}/names"))
    splits = {}
    for split, size in DEMO_SPLIT_SIZES.items():
        # one generator per split: changing one split's size leaves the others as they were
        rng = random.Random(f"demo_ner/{seed}/{split}")
        fallback = None if split == "train" else shares["train"]
        templates = TEMPLATES if split == "train" else TEMPLATES + EVAL_ONLY_TEMPLATES
        splits[split] = [_sentence(rng.choice(templates), rng, shares[split], fallback) for _ in range(size)]
    return splits


def _split_name_parts(rng: random.Random) -> dict[str, Pools]:
    """Shuffle each pool of name parts and cut it into disjoint train/validation/test shares,
    so that names composed for validation and test mostly never occur in train."""
    shares: dict[str, Pools] = {"train": {}, "validation": {}, "test": {}}
    for pool, parts in NAME_PARTS.items():
        shuffled = list(parts)
        rng.shuffle(shuffled)
        train_end = round(len(shuffled) * TRAIN_SHARE)
        validation_end = train_end + round(len(shuffled) * VALIDATION_SHARE)
        shares["train"][pool] = shuffled[:train_end]
        shares["validation"][pool] = shuffled[train_end:validation_end]
        shares["test"][pool] = shuffled[validation_end:]
    for share in shares.values():
        # a demonym is held out together with its country, never seen through the other
        share["demonym"] = [COUNTRY_DEMONYMS[country] for country in share["country"]]
    return shares


def _sentence(template: str, rng: random.Random, own: Pools, fallback: Pools | None) -> Sentence:
    """Fill one template; the same entity never fills two slots of one sentence
    (no "flights between Varnen and Varnen")."""
    tokens: list[str] = []
    tags: list[str] = []
    used: list[list[str]] = []
    for word in template.split():
        if not (word.startswith("{") and word.endswith("}")):
            tokens.append(word)
            tags.append("O")
            continue
        entity_type, shapes = SLOTS[word[1:-1]]
        filled = _fill(rng.choice(shapes), rng, own, fallback)
        if entity_type is None:
            tokens += filled
            tags += ["O"] * len(filled)
            continue
        while filled in used:
            filled = _fill(rng.choice(shapes), rng, own, fallback)
        used.append(filled)
        tokens += filled
        tags += [f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(filled) - 1)
    return {"tokens": tokens, "tags": tags}


def _fill(shape: str, rng: random.Random, own: Pools, fallback: Pools | None) -> list[str]:
    """Tokens of one shape: `<part>` drawn from this split's names (or, for validation and test,
    sometimes from train's) or from the shared vocabulary, other words as written."""
    tokens = []
    for word in shape.split():
        if not word.startswith("<"):
            tokens.append(word)
            continue
        part = word[1:-1]
        if part in VOCAB:
            tokens.append(rng.choice(VOCAB[part]))
        elif fallback is not None and rng.random() >= HELD_OUT_PART_RATE:
            tokens.append(rng.choice(fallback[part]))
        else:
            tokens.append(rng.choice(own[part]))
    return tokens
