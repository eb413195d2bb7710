"""Text front end: Tortoise's English cleaners, its BPE tokenizer and its long-text splitter.

Everything here reproduces the original (tortoise/utils/tokenizer.py, tortoise/utils/text.py) character for
character, quirks included, because the models were trained on exactly this text: `1234` is read as a year
("twelve thirty-four"), `£` is transliterated to "ps" before the pounds rule could see it, `$5.5` is
"five dollars, five cents". Inputs the original crashed on (numbers too long to spell, garbage ids) raise
the library's own errors instead.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

import inflect
from tokenizers import Tokenizer
from unidecode import unidecode

from ..config import TOKENS
from ..errors import CheckpointError, InputTextError, describe

__all__ = ["TOKENIZER_FILENAME", "BpeTokenizer", "basic_cleaners", "english_cleaners", "split_and_recombine_text"]

# --------------------------------------------------------------------------------------------- cleaners

_WHITESPACE_RE = re.compile(r"\s+")

# Applied one after another in this order (not as one alternation): an expansion glued to the next word
# removes that word's boundary, so "dr.st." becomes "doctorst." and not "doctorsaint". "mrs" precedes "mr".
_ABBREVIATIONS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(rf"\b{short}\."), full)
    for short, full in (
        ("mrs", "misess"),
        ("mr", "mister"),
        ("dr", "doctor"),
        ("st", "saint"),
        ("co", "company"),
        ("jr", "junior"),
        ("maj", "major"),
        ("gen", "general"),
        ("drs", "doctors"),
        ("rev", "reverend"),
        ("lt", "lieutenant"),
        ("hon", "honorable"),
        ("sgt", "sergeant"),
        ("capt", "captain"),
        ("esq", "esquire"),
        ("ltd", "limited"),
        ("col", "colonel"),
        ("ft", "fort"),
    )
)

# The original also has a pounds rule (r"£([0-9,]*[0-9]+)" -> r"\1 pounds"). It can never fire: unidecode runs
# first and turns "£" into "PS", so "£250" is spoken "ps two hundred fifty" ("pstwo hundred fifty"). Left out.
_COMMA_NUMBER_RE = re.compile(r"([0-9][0-9,]+[0-9])")
_DOLLARS_RE = re.compile(r"\$([0-9.,]*[0-9]+)")
_DECIMAL_RE = re.compile(r"([0-9]+\.[0-9]+)")
_ORDINAL_RE = re.compile(r"[0-9]+(st|nd|rd|th)")
_NUMBER_RE = re.compile(r"[0-9]+")

# Integers strictly inside this range are read like years: 1999 -> "nineteen ninety-nine".
_YEAR_LOW, _YEAR_HIGH = 1000, 3000
_MILLENNIUM = 2000  # "two thousand", and 2001-2009 -> "two thousand one" ... "two thousand nine"
_MILLENNIUM_SPELLED_UNTIL = 2010
_CENTURY = 100

_INFLECT = inflect.engine()


def _check_str(text: object) -> str:
    if not isinstance(text, str):
        hint = " (decode bytes with .decode('utf-8') first)" if isinstance(text, (bytes, bytearray)) else ""
        raise TypeError(f"text must be a str, got {type(text).__name__}{hint}")
    return text


def _number_words(number: int | str, **options: object) -> str:
    """inflect's `number_to_words`, with its too-many-digits error turned into an `InputTextError`."""
    try:
        return _INFLECT.number_to_words(number, **options)  # type: ignore[arg-type]
    except (inflect.NumOutOfRangeError, ValueError) as error:
        raise _number_too_long(str(number)) from error


def _parse_int(digits: str) -> int:
    try:
        return int(digits)
    except ValueError as error:  # Python refuses more than 4300 digits
        raise _number_too_long(digits) from error


def _number_too_long(digits: str) -> InputTextError:
    shown = digits if len(digits) <= 40 else f"{digits[:20]}…{digits[-10:]}"
    return InputTextError(
        f"the number {shown} ({len(digits)} characters) is too long to be spelled out in words; "
        "write it in words or split it into shorter groups of digits"
    )


def _expand_dollars(match: re.Match[str]) -> str:
    amount = match.group(1)
    parts = amount.split(".")
    if len(parts) > 2:
        return f"{amount} dollars"  # the original's "unexpected format" fallback, e.g. "$1.2.3"
    # The original calls int() on each part as is and crashes when a comma survives the comma rule
    # ("$,5", "$1,.5"); dropping the commas reads those amounts and changes nothing else.
    dollars_text, cents_text = (part.replace(",", "") for part in (parts + [""])[:2])
    dollars = _parse_int(dollars_text) if dollars_text else 0
    cents = _parse_int(cents_text) if cents_text else 0  # quirk kept: "$5.5" is five dollars, five *cents*
    spoken = []
    if dollars:
        spoken.append(f"{dollars} dollar" if dollars == 1 else f"{dollars} dollars")
    if cents:
        spoken.append(f"{cents} cent" if cents == 1 else f"{cents} cents")
    return ", ".join(spoken) if spoken else "zero dollars"


def _expand_number(match: re.Match[str]) -> str:
    number = _parse_int(match.group(0))
    if not _YEAR_LOW < number < _YEAR_HIGH:
        return _number_words(number, andword="")
    if number == _MILLENNIUM:
        return "two thousand"
    if _MILLENNIUM < number < _MILLENNIUM_SPELLED_UNTIL:
        return "two thousand " + _number_words(number % _CENTURY)
    if number % _CENTURY == 0:
        return _number_words(number // _CENTURY) + " hundred"
    return _number_words(number, andword="", zero="oh", group=2).replace(", ", " ")


def _expand_numbers(text: str) -> str:
    text = _COMMA_NUMBER_RE.sub(lambda m: m.group(1).replace(",", ""), text)
    text = _DOLLARS_RE.sub(_expand_dollars, text)
    text = _DECIMAL_RE.sub(lambda m: m.group(1).replace(".", " point "), text)
    text = _ORDINAL_RE.sub(lambda m: _number_words(m.group(0)), text)
    return _NUMBER_RE.sub(_expand_number, text)


def _expand_abbreviations(text: str) -> str:
    for pattern, full in _ABBREVIATIONS:
        text = pattern.sub(full, text)
    return text


def english_cleaners(text: str) -> str:
    """Tortoise's default cleaner: ASCII transliteration, lowercase, numbers and abbreviations spelled out,
    whitespace collapsed, double quotes removed (in that order, which decides how e.g. "£" or "Dr." come out).

    Raises `InputTextError` for a number too long to spell out.
    """
    text = unidecode(_check_str(text)).lower()
    text = _expand_abbreviations(_expand_numbers(text))
    return _WHITESPACE_RE.sub(" ", text).replace('"', "")


def basic_cleaners(text: str) -> str:
    """The original's `use_basic_cleaners=True` variant: lowercase and collapse whitespace, nothing else."""
    return _WHITESPACE_RE.sub(" ", _check_str(text).lower())


# -------------------------------------------------------------------------------------------- tokenizer

TOKENIZER_FILENAME = "tokenizer.json"  # its name in the model directory
_SPACE_TOKEN = "[SPACE]"
_STOP_TOKEN = "[STOP]"
_UNKNOWN_TOKEN = "[UNK]"


class BpeTokenizer:
    """Tortoise's text tokenizer: a cleaner, then spaces as `[SPACE]` tokens, then the BPE of `tokenizer.json`.

    `encode` gives the ids the original `VoiceBpeTokenizer.encode` gives; `decode` inverts it up to cleaning.
    """

    def __init__(self, path: str | os.PathLike[str], *, use_basic_cleaners: bool = False) -> None:
        """Load the vocabulary from `path`: a tokenizer.json, or the model directory holding one.

        Raises `CheckpointError` if it is missing, unreadable or not Tortoise's vocabulary.
        """
        self.path = os.fspath(path)
        if os.path.isdir(self.path):
            self.path = os.path.join(self.path, TOKENIZER_FILENAME)
        if not os.path.isfile(self.path):
            raise CheckpointError(
                f"tokenizer file not found: {self.path}. It ships as {TOKENIZER_FILENAME} in the model "
                "directory; pass that directory or the file itself."
            )
        try:
            self._tokenizer = Tokenizer.from_file(self.path)
        except Exception as error:  # the tokenizers library raises bare Exceptions for unreadable files
            raise CheckpointError(
                f"cannot read {self.path} as a tokenizer.json ({describe(error)}). "
                "The file is corrupt or of another kind: download it again."
            ) from None
        self._unknown_id = self._tokenizer.token_to_id(_UNKNOWN_TOKEN)
        expected = {_SPACE_TOKEN: TOKENS.space, _STOP_TOKEN: TOKENS.text_stop}
        found = {token: self._tokenizer.token_to_id(token) for token in expected}
        if found != expected or self._unknown_id is None:
            raise CheckpointError(
                f"{self.path} is not Tortoise's text vocabulary: expected special tokens {expected} and "
                f"{_UNKNOWN_TOKEN}, found {found} and {_UNKNOWN_TOKEN}={self._unknown_id}."
            )
        self._silent_ids = frozenset({TOKENS.space, TOKENS.text_stop, self._unknown_id})
        self.use_basic_cleaners = use_basic_cleaners

    @property
    def vocab_size(self) -> int:
        """Number of ids the vocabulary defines (every id `encode` returns is below it)."""
        return self._tokenizer.get_vocab_size()

    def clean(self, text: str) -> str:
        """Apply this tokenizer's cleaner (english by default, basic when built with `use_basic_cleaners`)."""
        return basic_cleaners(text) if self.use_basic_cleaners else english_cleaners(text)

    def encode(self, text: str) -> list[int]:
        """Clean `text` and turn it into BPE ids (no start/stop ids added).

        Raises `InputTextError` when nothing speakable is left (empty text, only whitespace, only emoji or
        symbols the vocabulary does not know), and `TypeError` for a non-str.
        """
        _check_str(text)
        if not text.strip():
            raise InputTextError("the text is empty (or only whitespace); give at least one word to speak")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise InputTextError(
                f"the text holds an invalid character ({error.reason}, at index {error.start}); it was probably "
                "decoded wrongly: decode it as UTF-8, or with errors='replace'"
            ) from None
        cleaned = self.clean(text)
        ids = self._tokenizer.encode(cleaned.replace(" ", _SPACE_TOKEN)).ids
        if all(token in self._silent_ids for token in ids):
            raise InputTextError(
                f"nothing speakable is left of the text {_preview(text)} after cleaning (it became "
                f"{_preview(cleaned)}): emoji and most symbols are dropped or unknown to the tokenizer. "
                "Write at least one word, number or punctuation mark."
            )
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Turn ids back into (cleaned) text: `[SPACE]` becomes a space, `[STOP]` and `[UNK]` disappear.

        Accepts a list of ints or a 1-D tensor/array; ids outside the vocabulary raise `ValueError`.
        """
        values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if not all(isinstance(value, int) and 0 <= value < self.vocab_size for value in values):
            raise ValueError(f"ids must be a flat sequence of ints in [0, {self.vocab_size}), got {values[:20]}")
        # Without a decoder, the library joins tokens with spaces; the spoken spaces are the [SPACE] tokens.
        joined = self._tokenizer.decode(values, skip_special_tokens=False).replace(" ", "")
        return joined.replace(_SPACE_TOKEN, " ").replace(_STOP_TOKEN, "").replace(_UNKNOWN_TOKEN, "")


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


# --------------------------------------------------------------------------------------------- splitter

_QUOTE = '"'
_CURLY_QUOTES_RE = re.compile("[\u201c\u201d]")  # “ ” -> " (single curly quotes are left alone)
_SENTENCE_MARKS = "!?"  # always end a sentence; "." only when a space or the end follows
_BOUNDARY_MARKS = "!?."  # a run of these after a sentence end stays with that sentence
_WORD_BREAKS = "!?. "  # where a forced split may fall
_NOTHING_TO_SAY_RE = re.compile(r"[\s.,;:!?]*")
_END = ""  # what `peek` returns past the visible text


class _Cursor:
    """Walks the text one character at a time, building the current chunk and tracking open quotes."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.last = len(text) - 1
        self.pos = -1
        self.chunk = ""
        self.in_quote = False

    def forward(self, steps: int = 1) -> str:
        for _ in range(steps):
            self.pos += 1
            self.chunk += self.text[self.pos]
            self._toggle_quote()
        return self.text[self.pos]

    def back(self, steps: int = 1) -> str:
        for _ in range(steps):
            self.pos -= 1
            self.chunk = self.chunk[:-1]
            # Original quirk kept: the quote test looks at the character now under the cursor, not the one
            # just dropped, so stepping back over a quote leaves the quote state as it was.
            self._toggle_quote()
        return self.text[self.pos]

    def peek(self, offset: int) -> str:
        """The character `offset` ahead, or `_END`. Like the original, the text's last character reads as `_END`."""
        index = self.pos + offset
        return self.text[index] if 0 <= index < self.last else _END

    def take(self) -> str:
        chunk, self.chunk = self.chunk, ""
        return chunk

    def _toggle_quote(self) -> None:
        if self.text[self.pos] == _QUOTE:
            self.in_quote = not self.in_quote


def split_and_recombine_text(text: str, desired_length: int = 200, max_length: int = 300) -> list[str]:
    """Split long text into chunks of about `desired_length` characters, at most `max_length` (one more when a
    closing quote sits at the limit, as in the original), cutting at sentence ends outside quotes where possible,
    else at a word break.

    Tortoise's recipe for reading text longer than the model's context, reproduced exactly: whitespace is
    collapsed, curly double quotes become straight ones, chunks of only punctuation are dropped.
    """
    _check_str(text)
    if not 0 < desired_length <= max_length:
        raise ValueError(f"need 0 < desired_length <= max_length, got {desired_length} and {max_length}")
    cursor = _Cursor(_CURLY_QUOTES_RE.sub(_QUOTE, _WHITESPACE_RE.sub(" ", text)))
    chunks: list[str] = []
    sentence_ends: list[int] = []

    def commit() -> None:
        chunks.append(cursor.take())
        sentence_ends.clear()

    while cursor.pos < cursor.last:
        char = cursor.forward()
        if len(cursor.chunk) >= max_length:
            if sentence_ends and len(cursor.chunk) > desired_length / 2:
                cursor.back(cursor.pos - sentence_ends[-1])
            else:
                while char not in _WORD_BREAKS and cursor.pos > 0 and len(cursor.chunk) > desired_length:
                    char = cursor.back()
            commit()
        elif not cursor.in_quote and (
            char in _SENTENCE_MARKS or (char == "." and cursor.peek(1) in (" ", _END))
        ):
            while (
                cursor.pos < cursor.last
                and len(cursor.chunk) < max_length
                and (cursor.peek(1) == _END or cursor.peek(1) in _BOUNDARY_MARKS)
            ):
                cursor.forward()
            sentence_ends.append(cursor.pos)
            if len(cursor.chunk) >= desired_length:
                commit()
        elif cursor.in_quote and cursor.peek(1) == _QUOTE and cursor.peek(2) in (" ", _END):
            # a closing quote followed by a space is a boundary too
            cursor.forward(2)
            sentence_ends.append(cursor.pos)
    chunks.append(cursor.chunk)
    stripped = (chunk.strip() for chunk in chunks)
    return [chunk for chunk in stripped if not _NOTHING_TO_SAY_RE.fullmatch(chunk)]
