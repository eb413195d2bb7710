"""The corpus's text: natural English example phrases from WordNet 3.0, plus everyday sentences of our own that
exercise the English cleaners (numbers, dates, money, abbreviations), mixed, deduplicated and split.

WordNet's glosses quote about 48,000 example phrases ("we were at last able to buy a car"). They are cleaned up
(capitalised, given end punctuation) and kept when they have 3-20 words, no acronyms and no symbols the cleaners
cannot spell. The everyday generator fills hand-written sentence frames with coherent slot values, so its sentences
read naturally (an ASR scores odd template sentences badly, and a model learns odd prosody from them).

WordNet 3.0 is (c) 2006 Princeton University under the WordNet 3.0 licence (permissive: use, copy, modify and
distribute for any purpose, keeping its copyright notice); Debian ships it as `wordnet-base`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputTextError, TortoiseClvpError
from ..frontend.text import english_cleaners
from .tokenizer import ALPHABET

WORDNET_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
WORDNET_LICENCE = (
    "WordNet 3.0 (c) 2006 Princeton University, WordNet 3.0 licence: permission to use, copy, modify and "
    "distribute for any purpose without fee, keeping the copyright notice (https://wordnet.princeton.edu/license-and-commercial-use)"
)
WORDNET_PACKAGE_HINT = "install Debian's wordnet-base (apt-get install wordnet-base) or set CorpusConfig.wordnet_dir"

_GLOSS_SEPARATOR = " | "
_QUOTED_RE = re.compile(r'"([^"]+)"')
_ALLOWED_RE = re.compile(r"[A-Za-z0-9 ,.'?!;:$-]+")  # anything else (brackets, slashes, &, %, _ ...) is dropped
_ACRONYM_RE = re.compile(r"\b[A-Z]{2,}")  # lowercased by the cleaners, then spelled or read unpredictably
_ODD_RE = re.compile(r"\.\.|--|\s-|-\s|^-|'\s|\s'|[,;:]\s*[,;:.?!]|\b[A-Za-z]\.[A-Za-z]")  # ellipses, dashes, U.N.
_END_MARKS = ".?!"
_SPEAKABLE = frozenset(ALPHABET) | {" "}


class CorpusTextError(TortoiseClvpError):
    """The corpus's text sources are missing or too small for the configured counts."""


@dataclass(frozen=True)
class SentenceSplit:
    """Disjoint sentence lists: train (spoken by training voices), valid (held out, training voices), unseen
    (held out, spoken only by the unseen voices)."""

    train: tuple[str, ...]
    valid: tuple[str, ...]
    unseen: tuple[str, ...]


def tidy_sentence(phrase: str, min_words: int, max_words: int) -> str | None:
    """A phrase as a clean sentence (capitalised, end punctuation), or None if it is not usable for the corpus."""
    text = " ".join(phrase.split()).strip(" ,;:")
    if not text or not _ALLOWED_RE.fullmatch(text) or _ACRONYM_RE.search(text) or _ODD_RE.search(text):
        return None
    if not min_words <= len(text.split()) <= max_words:
        return None
    text = text[0].upper() + text[1:]
    if text[-1] not in _END_MARKS:
        text += "."
    try:
        cleaned = english_cleaners(text)
    except InputTextError:
        return None
    return text if set(cleaned) <= _SPEAKABLE else None


def wordnet_phrases(wordnet_dir: Path, min_words: int, max_words: int) -> list[str]:
    """Every usable quoted example phrase of WordNet's glosses, tidied, in file order (duplicates kept)."""
    phrases: list[str] = []
    for name in WORDNET_FILES:
        path = Path(wordnet_dir) / name
        if not path.is_file():
            raise CorpusTextError(f"WordNet file {path} not found: {WORDNET_PACKAGE_HINT}")
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or _GLOSS_SEPARATOR not in line:  # the licence header, or no gloss
                continue
            gloss = line.split(_GLOSS_SEPARATOR, 1)[1]
            for quoted in _QUOTED_RE.findall(gloss):
                sentence = tidy_sentence(quoted, min_words, max_words)
                if sentence is not None:
                    phrases.append(sentence)
    return phrases


# Everyday sentences -------------------------------------------------------------------------------------------------
_FIRST_NAMES = (
    "Anna", "Ben", "Carlos", "Diana", "Emma", "Frank", "Grace", "Henry", "Isabel", "Jack", "Kate", "Leo", "Maria",
    "Nick", "Olivia", "Paul", "Rosa", "Sam", "Tina", "Victor", "Wendy", "Yusuf", "Zoe", "Omar", "Priya", "Hannah",
)  # fmt: skip
_SURNAMES = (
    "Smith", "Patel", "Garcia", "Chen", "Brown", "Miller", "Novak", "Okafor", "Kim", "Lopez", "Wilson", "Murphy",
    "Nguyen", "Fischer", "Rossi", "Walker", "Cohen", "Silva", "Turner", "Baker", "Hughes", "Kowalski",
)  # fmt: skip
_TITLES = ("Dr.", "Mr.", "Mrs.", "Capt.", "Sgt.", "Lt.", "Col.", "Rev.")
_CITIES = (
    "Boston", "Denver", "Chicago", "Dallas", "Seattle", "Portland", "Atlanta", "Miami", "London", "Paris", "Dublin",
    "Toronto", "St. Louis", "St. Paul", "Phoenix", "Madrid", "Berlin", "Vienna", "Sydney", "Memphis",
)  # fmt: skip
_PLACES = (
    "the library", "the bakery", "the train station", "the hospital", "the museum", "the park", "the post office",
    "the airport", "the pharmacy", "the city hall", "the market", "the stadium", "the dentist", "the bank",
)  # fmt: skip
_ITEMS = (
    "a new coat", "two concert tickets", "the blue bicycle", "a used car", "a pair of boots", "the old piano",
    "a bag of apples", "a winter jacket", "the kitchen table", "a box of chocolates", "a new laptop", "the lamp",
)  # fmt: skip
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
    "December",
)  # fmt: skip

# Frames: {slot} names below; each reads naturally whatever values are drawn.
_FRAMES = (
    "The train to {city} leaves at {hour} o'clock.",
    "My appointment with {title} {surname} is on {weekday} at {hour}.",
    "{title} {surname} will be back on {month} {ordinal}.",
    "Did you really pay {price} for {item}?",
    "We paid {price} for {item} at the market.",
    "I was born on {month} {ordinal}, {year}.",
    "The museum opened in {year} and gets about {big} visitors a year.",
    "Our team won {small} games in a row!",
    "There are {count} students at the new school.",
    "Can you pick me up at {place} around {hour}?",
    "It is {small} degrees outside, so bring a warm jacket.",
    "Please call {title} {surname} before {hour} tomorrow.",
    "The store closes at {hour} on {weekday}.",
    "{name} ran {small} miles on {weekday} morning.",
    "The bill came to {price}, including the tip.",
    "The flight to {city} takes about {small} hours.",
    "Room {count} is on the {floor} floor.",
    "The rent went up to {rent} a month.",
    "{name} and {name2} got married on {month} {ordinal}, {year}.",
    "We will meet at {place} at half past {hour}.",
    "Have you ever been to {city}?",
    "Wow, that cake costs {price}!",
    "Turn left at the corner and drive {small} more blocks.",
    "Mr. and Mrs. {surname} have {small} children.",
    "The package should arrive by {weekday}, {month} {ordinal}.",
    "Is {title} {surname} still working at {place}?",
    "I need {small} eggs, a cup of milk and some flour.",
    "{name} turned {age} last {weekday}!",
    "The concert starts at {hour} and ends around {hour2}.",
    "Tickets cost {price} for adults and {price2} for children.",
    "{name} saved {price} by taking the bus.",
    "In {year}, the bridge over the river was finally finished.",
    "The recipe says to bake it for {minutes} minutes.",
    "Why is {place} closed on {weekday}?",
    "The meeting was moved to {weekday} at {hour}.",
    "{title} {surname} retired in {year} after {years} years of service.",
    "The package weighs about {small} pounds.",
    "We drove {count} miles to see {name}'s family.",
    "Happy birthday, {name}!",
    "Thanks so much for the flowers, {name}!",
    "I can't believe it's already {month}!",
    "Where did you park the car, {name}?",
    "Our library has more than {big} books.",
    "The town has about {big} people.",
    "The game ended {small} to {small2}.",
    "Please take {small} tablets after dinner.",
    "How long does it take to get to {city} by train?",
    "{name} {surname} Jr. plays the piano every {weekday}.",
    "Dr. {surname} says you should rest for {small} days.",
    "The new bridge cost {bigprice} to build.",
    "Did {name} call you back on {weekday}?",
    "We moved to {city} in {year}.",
    "The bus leaves {place} every {minutes} minutes.",
    "What time does {place} open on {weekday}?",
    "She bought {item} for only {price}!",
    "That was the best day of my life!",
    "Our parade on St. Patrick's Day starts at noon.",
    "The school was founded in {year} by {title} {surname}.",
    "I will be away from {month} {ordinal} to the {ordinal2}.",
    "It snowed {small} inches last night!",
    "Could you lend me {price} until {weekday}?",
    "The hotel in {city} charges {price} a night.",
    "{name} read {small} books over the summer.",
    "Is it true that {name} sold {item} for {price}?",
)
_EVERYDAY_SLOTS = {
    "name": lambda rng: rng.choice(_FIRST_NAMES),
    "name2": lambda rng: rng.choice(_FIRST_NAMES),
    "surname": lambda rng: rng.choice(_SURNAMES),
    "title": lambda rng: rng.choice(_TITLES),
    "city": lambda rng: rng.choice(_CITIES),
    "place": lambda rng: rng.choice(_PLACES),
    "item": lambda rng: rng.choice(_ITEMS),
    "weekday": lambda rng: rng.choice(_WEEKDAYS),
    "month": lambda rng: rng.choice(_MONTHS),
    "ordinal": lambda rng: _ordinal(rng.randint(1, 28)),
    "ordinal2": lambda rng: _ordinal(rng.randint(1, 28)),
    "floor": lambda rng: _ordinal(rng.randint(2, 12)),
    "year": lambda rng: str(rng.randint(1900, 2025)),
    "hour": lambda rng: str(rng.randint(1, 12)),
    "hour2": lambda rng: str(rng.randint(1, 12)),
    "small": lambda rng: str(rng.randint(2, 12)),
    "small2": lambda rng: str(rng.randint(0, 9)),
    "count": lambda rng: str(rng.randint(12, 950)),
    "minutes": lambda rng: str(rng.choice((10, 15, 20, 25, 30, 40, 45, 50, 60))),
    "years": lambda rng: str(rng.randint(10, 40)),
    "age": lambda rng: str(rng.randint(16, 95)),
    "big": lambda rng: f"{rng.randint(3, 95)},{rng.randint(0, 9)}00",
    "price": lambda rng: _price(rng),
    "price2": lambda rng: f"${rng.randint(2, 15)}",
    "rent": lambda rng: f"${rng.randint(6, 24)}00",
    "bigprice": lambda rng: f"${rng.randint(2, 90)} million",
}
_SLOT_RE = re.compile(r"\{(\w+)\}")


def _ordinal(day: int) -> str:
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _price(rng: random.Random) -> str:
    dollars = rng.choice((rng.randint(1, 20), rng.randint(20, 99), rng.randint(100, 900)))
    return f"${dollars}" if rng.random() < 0.5 else f"${dollars}.{rng.choice((25, 50, 75, 99, 10, 95))}"


def everyday_sentences(rng: random.Random, count: int) -> list[str]:
    """`count` distinct everyday sentences from the frames, drawn with `rng`."""
    sentences: dict[str, None] = {}
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise CorpusTextError(f"the everyday generator cannot make {count} distinct sentences; lower the count")
        frame = rng.choice(_FRAMES)
        sentences.setdefault(_SLOT_RE.sub(lambda m: _EVERYDAY_SLOTS[m.group(1)](rng), frame))
    return list(sentences)


def _key(sentence: str) -> str:
    """What makes two sentences the same for deduplication: their cleaned words."""
    return re.sub(r"[^a-z ]", "", english_cleaners(sentence))


def split_sentences(
    wordnet_dir: Path,
    seed: int,
    train: int,
    valid: int,
    unseen: int,
    everyday_share: float,
    min_words: int = 3,
    max_words: int = 20,
) -> SentenceSplit:
    """Draw train + valid + unseen distinct sentences (a share of them everyday ones) and split them at random.

    The three lists come from the same mixture, so the held-out sentences measure generalisation, not a shift.
    """
    total = train + valid + unseen
    rng = random.Random(seed)
    n_everyday = round(total * everyday_share)
    pool: dict[str, str] = {}
    for sentence in everyday_sentences(rng, n_everyday):
        pool.setdefault(_key(sentence), sentence)
    phrases = wordnet_phrases(wordnet_dir, min_words, max_words) if len(pool) < total else []
    rng.shuffle(phrases)
    for sentence in phrases:
        if len(pool) >= total:
            break
        pool.setdefault(_key(sentence), sentence)
    if len(pool) < total:
        raise CorpusTextError(
            f"only {len(pool)} distinct sentences are available, {total} are configured; lower the counts"
        )
    sentences = list(pool.values())
    rng.shuffle(sentences)
    return SentenceSplit(
        train=tuple(sentences[valid + unseen :]),
        valid=tuple(sentences[:valid]),
        unseen=tuple(sentences[valid : valid + unseen]),
    )
