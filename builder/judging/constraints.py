"""Verifiable instruction constraints: rules a response either follows or breaks, checked by code.

A `Constraint` is a kind and its parameters (JSON-serialisable). Each kind has three parts, registered together:
- `check_<kind>(response, **params) -> (passed, detail)`: a small pure function whose docstring states the rule;
  the detail says what was measured ("4 bullets, wanted 3");
- a describe function giving the instruction sentence a user reads;
- a sampler `(rng, task) -> params` so a composer can make varied instances (the task is passed so that a kind
  such as `repeat_request` can quote it; the others ignore it).

Shared definitions, used by every checker that counts them:
- a word is a run of letters or digits, joined through inner apostrophes or hyphens ("don't", "well-known");
- a sentence is a stretch of text ending in . ! ? (also 。！？…), possibly followed by closing quotes or
  brackets, then whitespace or the end; a line break also ends one; a stretch counts only if it has a letter
  or digit;
- a paragraph is a block of text between blank lines (lines holding only whitespace).

Checkers never raise on any string and run in linear time. Standard library only.
"""

import json
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# --- what a word, a sentence, a paragraph is -------------------------------------------------------------------

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_ALNUM = re.compile(r"[^\W_]")
# Possessive quantifiers and the look-behind keep every pattern here linear: no retry inside a run of marks.
_SENTENCE_END = re.compile(r"(?<![.!?。！？…])[.!?。！？…]++[\"'”’)\]]*+(?=\s|$)|\n")
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*+\n)+")


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    pieces, start = [], 0
    for end in _SENTENCE_END.finditer(text):
        pieces.append(text[start:end.end()])
        start = end.end()
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if _ALNUM.search(piece)]


def paragraphs(text: str) -> list[str]:
    return [block.strip() for block in _BLANK_LINES.split(text) if block.strip()]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- the registry ----------------------------------------------------------------------------------------------

Checker = Callable[..., tuple[bool, str]]
Describer = Callable[..., str]
Sampler = Callable[[random.Random, str], dict]


@dataclass(frozen=True)
class Kind:
    name: str
    check: Checker
    describe: Describer
    sample: Sampler


_REGISTRY: dict[str, Kind] = {}


def _kind(describe: Describer, sample: Sampler) -> Callable[[Checker], Checker]:
    """Registers `check_<name>` under <name> with its describe function and parameter sampler."""
    def register(check: Checker) -> Checker:
        name = check.__name__.removeprefix("check_")
        _REGISTRY[name] = Kind(name, check, describe, sample)
        return check
    return register


def _no_params(rng: random.Random, task: str) -> dict:
    return {}


def _pick(name: str, *values) -> Sampler:
    return lambda rng, task: {name: rng.choice(values)}


def _count(low: int, high: int) -> Sampler:
    return lambda rng, task: {"n": rng.randint(low, high)}


@dataclass(frozen=True)
class Constraint:
    kind: str
    params: dict = field(default_factory=dict, hash=False)

    def describe(self) -> str:
        """The instruction sentence a user reads."""
        return _REGISTRY[self.kind].describe(**self.params)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "params": self.params}


@dataclass(frozen=True)
class CheckResult:
    kind: str
    passed: bool
    detail: str


def check(constraint: Constraint, response: str) -> CheckResult:
    passed, detail = _REGISTRY[constraint.kind].check(response, **constraint.params)
    return CheckResult(constraint.kind, passed, detail)


def check_all(constraints: Iterable[Constraint], response: str) -> list[CheckResult]:
    return [check(c, response) for c in constraints]


def sample(kind: str, rng: random.Random, task: str = "") -> Constraint:
    """A random instance of one kind."""
    return Constraint(kind, _REGISTRY[kind].sample(rng, task))


def to_json(constraints: Iterable[Constraint]) -> str:
    return json.dumps([c.to_dict() for c in constraints], ensure_ascii=False, sort_keys=True)


def from_json(text: str) -> list[Constraint]:
    constraints = [Constraint(item["kind"], item.get("params", {})) for item in json.loads(text)]
    unknown = sorted({c.kind for c in constraints} - _REGISTRY.keys())
    if unknown:
        raise ValueError(f"unknown constraint kind(s): {', '.join(unknown)}")
    return constraints


# --- length ----------------------------------------------------------------------------------------------------

@_kind(describe=lambda n: f"Write at least {n} words.",
       sample=_pick("n", 60, 80, 100, 120, 150))
def check_min_words(response: str, n: int) -> tuple[bool, str]:
    """At least n words (see `words`)."""
    count = len(words(response))
    return count >= n, f"{_plural(count, 'word')}, wanted at least {n}"


@_kind(describe=lambda n: f"Keep your answer to at most {n} words.",
       sample=_pick("n", 50, 60, 80, 100, 120, 150))
def check_max_words(response: str, n: int) -> tuple[bool, str]:
    """At most n words (see `words`)."""
    count = len(words(response))
    return count <= n, f"{_plural(count, 'word')}, wanted at most {n}"


def _sample_word_range(rng: random.Random, task: str) -> dict:
    low = rng.choice([50, 80, 100, 120])
    return {"low": low, "high": low + rng.choice([40, 60, 80])}


@_kind(describe=lambda low, high: f"Your answer must be between {low} and {high} words long.",
       sample=_sample_word_range)
def check_words_between(response: str, low: int, high: int) -> tuple[bool, str]:
    """Between low and high words, both included (see `words`)."""
    count = len(words(response))
    return low <= count <= high, f"{_plural(count, 'word')}, wanted {low} to {high}"


@_kind(describe=lambda n: f"Keep the whole response under {n} characters, spaces included.",
       sample=_pick("n", 600, 800, 1000, 1200))
def check_max_characters(response: str, n: int) -> tuple[bool, str]:
    """Fewer than n characters (Unicode code points, whitespace included) once leading and trailing whitespace
    is stripped."""
    length = len(response.strip())
    return length < n, f"{_plural(length, 'character')}, wanted fewer than {n}"


@_kind(describe=lambda n: f"Write at least {n} sentences.", sample=_count(3, 6))
def check_min_sentences(response: str, n: int) -> tuple[bool, str]:
    """At least n sentences (see `sentences`: a line break ends a sentence, so a list item counts as one)."""
    count = len(sentences(response))
    return count >= n, f"{_plural(count, 'sentence')}, wanted at least {n}"


@_kind(describe=lambda n: f"Use no more than {n} sentences in total.", sample=_count(6, 10))
def check_max_sentences(response: str, n: int) -> tuple[bool, str]:
    """At most n sentences (see `sentences`: a line break ends a sentence, so a title line counts as one)."""
    count = len(sentences(response))
    return count <= n, f"{_plural(count, 'sentence')}, wanted at most {n}"


@_kind(describe=lambda n: f"Keep every sentence short: no sentence may be longer than {n} words.",
       sample=_pick("n", 12, 15, 20, 25))
def check_max_sentence_words(response: str, n: int) -> tuple[bool, str]:
    """No sentence (see `sentences`) has more than n words (see `words`)."""
    longest = max((len(words(s)) for s in sentences(response)), default=0)
    return longest <= n, f"longest sentence has {_plural(longest, 'word')}, wanted at most {n}"


# --- layout ----------------------------------------------------------------------------------------------------

@_kind(describe=lambda n: f"Write exactly {n} paragraphs, separated from each other by a blank line.",
       sample=_count(2, 4))
def check_paragraph_count(response: str, n: int) -> tuple[bool, str]:
    """Exactly n paragraphs: blocks of text separated by one or more blank lines."""
    count = len(paragraphs(response))
    return count == n, f"{_plural(count, 'paragraph')}, wanted {n}"


_BULLET = re.compile(r"^[ \t]*+[-*+][ \t]++(?=[^\n]*?[^\W_])", re.MULTILINE)


@_kind(describe=lambda n: f"Answer in exactly {n} bullet points, each on its own line starting with '- '.",
       sample=_count(2, 6))
def check_bullet_count(response: str, n: int) -> tuple[bool, str]:
    """Exactly n bullets: lines that start (after indentation) with '-', '*' or '+', then a space, then text
    with a letter or digit. Nested bullets count too."""
    count = len(_BULLET.findall(response))
    return count == n, f"{_plural(count, 'bullet')}, wanted {n}"


_NUMBERED_ITEM = re.compile(r"^[ \t]*+\d++[.)][ \t]++(?=[^\n]*?[^\W_])", re.MULTILINE)


@_kind(describe=lambda n: f"Present your answer as a numbered list of exactly {n} items (1., 2., 3., ...).",
       sample=_count(3, 7))
def check_numbered_items(response: str, n: int) -> tuple[bool, str]:
    """Exactly n numbered items: lines that start (after indentation) with digits and '.' or ')', then a space,
    then text with a letter or digit."""
    count = len(_NUMBERED_ITEM.findall(response))
    return count == n, f"{_plural(count, 'numbered item')}, wanted {n}"


def _section_pattern(marker: str) -> re.Pattern:
    return re.compile(rf"^[ \t#*]*+{re.escape(marker)}[ \t]++\d++(?!\w)", re.MULTILINE)


@_kind(describe=lambda marker, n: (
           f"Divide your response into {n} sections. Start each section with a line that begins with "
           f"'{marker} X', where X is the section number ({marker} 1, {marker} 2, ...)."),
       sample=lambda rng, task: {"marker": rng.choice(["SECTION", "Section", "PART", "Part"]),
                                 "n": rng.randint(2, 4)})
def check_section_count(response: str, marker: str, n: int) -> tuple[bool, str]:
    """Exactly n lines that start with the marker (case-sensitive), a space and a number; markdown '#' or '*'
    before the marker is allowed ("## SECTION 2")."""
    count = len(_section_pattern(marker).findall(response))
    return count == n, f"{_plural(count, f'{marker!r} line')}, wanted {n}"


_HEADING = re.compile(r"^[ \t]{0,3}+#{1,6}+[ \t]++(?=[^\n]*?[^\W_])", re.MULTILINE)


@_kind(describe=lambda n: (f"Use at least {n} markdown headings (lines starting with '#')." if n > 1
                           else "Include at least one markdown heading (a line starting with '#')."),
       sample=_count(1, 3))
def check_markdown_headings(response: str, n: int) -> tuple[bool, str]:
    """At least n markdown headings: lines starting with 1 to 6 '#' (at most 3 spaces of indentation), a space,
    then text with a letter or digit."""
    count = len(_HEADING.findall(response))
    return count >= n, f"{_plural(count, 'heading')}, wanted at least {n}"


# --- whole-response format -------------------------------------------------------------------------------------

_FENCE = re.compile(r"\A```[ \t]*(?:json)?[ \t]*\n(.*)\n[ \t]*```\Z", re.DOTALL | re.IGNORECASE)


@_kind(describe=lambda: "Format your entire response as a JSON object or array, with no text outside it.",
       sample=_no_params)
def check_json_format(response: str) -> tuple[bool, str]:
    """The whole response, stripped (and unwrapped from one ```json fenced block if it is one), parses as a JSON
    object or array."""
    text = response.strip()
    if fenced := _FENCE.match(text):
        text = fenced.group(1).strip()
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        return False, f"not valid JSON ({type(error).__name__})"
    if not isinstance(value, (dict, list)):
        return False, f"valid JSON but a {type(value).__name__}, not an object or array"
    return True, f"valid JSON {type(value).__name__}"


_TITLE = re.compile(r"<<([^<>\n]+)>>")


@_kind(describe=lambda: "Give your answer a title wrapped in double angle brackets, like <<My Title>>.",
       sample=_no_params)
def check_title(response: str) -> tuple[bool, str]:
    """Somewhere, on one line, text with a letter or digit between '<<' and '>>'."""
    for match in _TITLE.finditer(response):
        if _ALNUM.search(match.group(1)):
            return True, f"title <<{match.group(1).strip()[:60]}>>"
    return False, "no <<title>>"


_QUOTE_PAIRS = (('"', '"'), ("“", "”"))


@_kind(describe=lambda: "Wrap your entire response in double quotation marks.", sample=_no_params)
def check_quoted(response: str) -> tuple[bool, str]:
    """The stripped response starts with a double quote and ends with one ("..." or “...”), with text between."""
    text = response.strip()
    for opening, closing in _QUOTE_PAIRS:
        if len(text) >= 2 and text.startswith(opening) and text.endswith(closing) and text[1:-1].strip():
            return True, "wrapped in double quotes"
    return False, f"starts with {text[:1]!r} and ends with {text[-1:]!r}"


def _postscript_pattern(marker: str) -> re.Pattern:
    return re.compile(rf"^[ \t]*+{re.escape(marker)}(?=[^\n]*?[^\W_])", re.MULTILINE)


@_kind(describe=lambda marker: f"At the end of your response, add a postscript that starts with \"{marker}\".",
       sample=_pick("marker", "P.S.", "P.P.S."))
def check_postscript(response: str, marker: str) -> tuple[bool, str]:
    """A line that starts with the marker (case-sensitive) and has text after it, below some other text."""
    text = response.strip()
    last = None
    for last in _postscript_pattern(marker).finditer(text):
        pass
    found = last is not None and _ALNUM.search(text, 0, last.start()) is not None
    return found, f"postscript {marker!r} found" if found else f"no line starting with {marker!r} after the body"


_SEPARATOR = re.compile(r"(?<!\*)\*{6}(?!\*)")


@_kind(describe=lambda: ("Give two different responses, separated by a line of six asterisks (******) "
                         "and nothing else."),
       sample=_no_params)
def check_two_responses(response: str) -> tuple[bool, str]:
    """Exactly one run of exactly six asterisks splits the response into two parts, each with a letter or
    digit, and the two parts differ (after stripping)."""
    parts = [part.strip() for part in _SEPARATOR.split(response)]
    if len(parts) != 2:
        return False, f"{_plural(len(parts), 'part')} around '******', wanted 2"
    if not all(_ALNUM.search(part) for part in parts):
        return False, "a part around '******' is empty"
    if parts[0] == parts[1]:
        return False, "the two responses are identical"
    return True, "two different responses"


# --- words -----------------------------------------------------------------------------------------------------

def _word_pattern(word: str) -> re.Pattern:
    return re.compile(rf"(?<![^\W_]){re.escape(word)}(?![^\W_])", re.IGNORECASE)


def _word_count(response: str, word: str) -> int:
    return len(_word_pattern(word).findall(response))


def _quoted_list(items: list[str]) -> str:
    quoted = [f"'{item}'" for item in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


INCLUDE_POOL = ("balance", "future", "simple", "reason", "example", "together", "careful", "light", "change",
                "step", "plan", "curious", "patience", "morning", "journey", "practice", "surprise", "honest",
                "budget", "window", "garden", "signal", "bridge", "quiet")
FORBIDDEN_POOL = ("very", "really", "just", "basically", "actually", "literally", "stuff", "things", "good",
                  "great", "important", "many", "also", "however", "simply", "like")
FREQUENT_POOL = ("time", "idea", "people", "water", "you", "first", "world", "small", "help", "every")


@_kind(describe=lambda keywords: f"Include the words {_quoted_list(keywords)} in your response.",
       sample=lambda rng, task: {"keywords": rng.sample(INCLUDE_POOL, rng.randint(1, 3))})
def check_include_keywords(response: str, keywords: list[str]) -> tuple[bool, str]:
    """Every keyword appears at least once as a whole word (not inside a longer word), in any letter case."""
    missing = [k for k in keywords if not _word_pattern(k).search(response)]
    return not missing, f"missing {_quoted_list(missing)}" if missing else "all keywords present"


@_kind(describe=lambda forbidden: f"Do not use the words {_quoted_list(forbidden)} anywhere in your response.",
       sample=lambda rng, task: {"forbidden": rng.sample(FORBIDDEN_POOL, rng.randint(1, 3))})
def check_forbidden_words(response: str, forbidden: list[str]) -> tuple[bool, str]:
    """None of the words appears as a whole word, in any letter case ("justice" does not contain "just")."""
    used = [w for w in forbidden if _word_pattern(w).search(response)]
    return not used, f"used {_quoted_list(used)}" if used else "no forbidden word used"


@_kind(describe=lambda word, n: f"Use the word '{word}' at least {n} times.",
       sample=lambda rng, task: {"word": rng.choice(FREQUENT_POOL), "n": rng.randint(2, 4)})
def check_keyword_frequency(response: str, word: str, n: int) -> tuple[bool, str]:
    """The word appears at least n times as a whole word, in any letter case."""
    count = _word_count(response, word)
    return count >= n, f"'{word}' {_plural(count, 'time')}, wanted at least {n}"


@_kind(describe=lambda letter, n: f"Use the letter '{letter}' at least {n} times.",
       sample=lambda rng, task: {"letter": rng.choice("bcdfghklmpwy"), "n": rng.randint(5, 15)})
def check_letter_frequency(response: str, letter: str, n: int) -> tuple[bool, str]:
    """The letter occurs at least n times anywhere, in either case."""
    count = response.casefold().count(letter.casefold())
    return count >= n, f"'{letter}' {_plural(count, 'time')}, wanted at least {n}"


# --- letter case -----------------------------------------------------------------------------------------------

@_kind(describe=lambda: "Write your entire response in lowercase letters; no capital letters at all.",
       sample=_no_params)
def check_all_lowercase(response: str) -> tuple[bool, str]:
    """No uppercase (or titlecase) letter anywhere, and at least one letter."""
    capitals = sum(1 for c in response if c.isupper() or c.istitle())
    if capitals:
        return False, _plural(capitals, "capital letter")
    return (True, "all lowercase") if any(c.isalpha() for c in response) else (False, "no letters")


@_kind(describe=lambda: "Write your entire response in capital letters only.", sample=_no_params)
def check_all_uppercase(response: str) -> tuple[bool, str]:
    """No lowercase letter anywhere, and at least one letter."""
    lowercase = sum(1 for c in response if c.islower())
    if lowercase:
        return False, _plural(lowercase, "lowercase letter")
    return (True, "all capitals") if any(c.isalpha() for c in response) else (False, "no letters")


def _capital_words(response: str) -> list[str]:
    """Words with at least two letters, every letter a capital ("NASA", "COVID-19"; not "I", not "P.S.")."""
    return [w for w in words(response) if w.isupper() and sum(c.isalpha() for c in w) >= 2]


def _describe_max_capital_words(n: int) -> str:
    if n == 0:
        return "Do not write any word entirely in capital letters."
    return f"Write at most {_plural(n, 'word')} entirely in capital letters."


@_kind(describe=_describe_max_capital_words, sample=_count(0, 3))
def check_max_capital_words(response: str, n: int) -> tuple[bool, str]:
    """At most n words written entirely in capitals (words of two or more letters, all of them capitals)."""
    count = len(_capital_words(response))
    return count <= n, f"{_plural(count, 'all-capital word')}, wanted at most {n}"


@_kind(describe=lambda n: f"Write at least {n} words entirely in capital letters, for emphasis.",
       sample=_count(2, 6))
def check_min_capital_words(response: str, n: int) -> tuple[bool, str]:
    """At least n words written entirely in capitals (words of two or more letters, all of them capitals)."""
    count = len(_capital_words(response))
    return count >= n, f"{_plural(count, 'all-capital word')}, wanted at least {n}"


# --- beginning and end -----------------------------------------------------------------------------------------

START_PHRASES = ("Here is my answer:", "Let me explain.", "Sure!", "In short:", "To begin with:",
                 "Here is what I think:", "Thanks for asking.", "Happy to help!")
END_PHRASES = ("Is there anything else you want to know?", "I hope this helps.", "That is all for now.",
               "Thanks for reading!", "Let me know what you think.", "Any other questions?")


@_kind(describe=lambda phrase: f"Begin your response with the exact words \"{phrase}\"",
       sample=lambda rng, task: {"phrase": rng.choice(START_PHRASES)})
def check_starts_with(response: str, phrase: str) -> tuple[bool, str]:
    """After leading whitespace, the response begins with the phrase exactly (case and punctuation included)."""
    text = response.lstrip()
    return text.startswith(phrase), f"starts with {text[:len(phrase)]!r}, wanted {phrase!r}"


@_kind(describe=lambda phrase: f"End your response with the exact words \"{phrase}\" with nothing after them.",
       sample=lambda rng, task: {"phrase": rng.choice(END_PHRASES)})
def check_ends_with(response: str, phrase: str) -> tuple[bool, str]:
    """Ignoring trailing whitespace, the response ends with the phrase exactly (case and punctuation included)."""
    text = response.rstrip()
    ending = text[len(text) - len(phrase):] if len(text) >= len(phrase) else text
    return text.endswith(phrase), f"ends with {ending!r}, wanted {phrase!r}"


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


@_kind(describe=lambda request: (f"Before answering, repeat the request word for word (only this request, not "
                                 f"these instructions): \"{request}\" Then give your answer."),
       sample=lambda rng, task: {"request": task})
def check_repeat_request(response: str, request: str) -> tuple[bool, str]:
    """The response begins with the request, comparing with whitespace runs collapsed and letter case ignored."""
    wanted = _normalise(request)
    begins = bool(wanted) and _normalise(response).startswith(wanted)
    return begins, "begins with the request" if begins else "does not begin with the request"


_END_MARK_NAMES = {"?": "a question mark", "!": "an exclamation mark"}


@_kind(describe=lambda mark: f"Finish your response with {_END_MARK_NAMES.get(mark, repr(mark))} ({mark}).",
       sample=_pick("mark", "?", "!"))
def check_end_punctuation(response: str, mark: str) -> tuple[bool, str]:
    """The last character that is not whitespace is the mark."""
    text = response.rstrip()
    return text.endswith(mark), f"ends with {text[-1:]!r}, wanted {mark!r}"


# --- characters ------------------------------------------------------------------------------------------------

_COMMAS = ",，、"


@_kind(describe=lambda: "Do not use any commas in your response.", sample=_no_params)
def check_no_commas(response: str) -> tuple[bool, str]:
    """No comma anywhere (',' and the CJK commas '，' and '、')."""
    count = sum(response.count(c) for c in _COMMAS)
    return count == 0, _plural(count, "comma")


@_kind(describe=lambda: "Do not use any digits; write every number out in words.", sample=_no_params)
def check_no_digits(response: str) -> tuple[bool, str]:
    """No digit character anywhere (any script's digits)."""
    count = sum(1 for c in response if c.isdigit())
    return count == 0, _plural(count, "digit")


_PLACEHOLDER = re.compile(r"\[([^\[\]\n]{1,80})\]")


@_kind(describe=lambda n: (f"Include at least {n} placeholders in square brackets, such as [name] or [date]."
                           if n > 1 else "Include at least one placeholder in square brackets, such as [name]."),
       sample=_count(1, 4))
def check_min_placeholders(response: str, n: int) -> tuple[bool, str]:
    """At least n placeholders: '[' text ']' on one line, with a letter or digit inside and no nested brackets."""
    count = sum(1 for m in _PLACEHOLDER.finditer(response) if _ALNUM.search(m.group(1)))
    return count >= n, f"{_plural(count, 'placeholder')}, wanted at least {n}"


_HIGHLIGHT = re.compile(r"\*{1,2}(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*{1,2}")


@_kind(describe=lambda n: (f"Highlight at least {n} parts of your answer with markdown emphasis, like *this part*."
                           if n > 1 else "Highlight at least one part of your answer with markdown emphasis, "
                                         "like *this part*."),
       sample=_count(1, 4))
def check_min_highlights(response: str, n: int) -> tuple[bool, str]:
    """At least n highlights: text on one line between single or double asterisks, with no space just inside
    them (*this* and **this** count; a '* ' bullet marker does not)."""
    count = sum(1 for m in _HIGHLIGHT.finditer(response) if _ALNUM.search(m.group(1)))
    return count >= n, f"{_plural(count, 'highlight')}, wanted at least {n}"


_QUESTION_MARKS = "?？"


@_kind(describe=lambda n: (f"Ask at least {n} questions in your response, each ending with a question mark."
                           if n > 1 else "Include at least one question, ending with a question mark."),
       sample=_count(1, 3))
def check_min_question_marks(response: str, n: int) -> tuple[bool, str]:
    """At least n question marks ('?' or '？')."""
    count = sum(response.count(c) for c in _QUESTION_MARKS)
    return count >= n, f"{_plural(count, 'question mark')}, wanted at least {n}"


KINDS: tuple[str, ...] = tuple(_REGISTRY)
