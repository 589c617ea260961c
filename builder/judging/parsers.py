"""Named, versioned parsers of a judge's raw text. A judge's `judge.yaml` names its parser (`parser:
final_score_line@1`); the name and version go into the judge spec and so into every version's identity: a
parser whose behaviour changes gets a new version number, never an edit in place.

A parser is a pure function of the raw text (stripped) that returns Parsed(value, rationale, parse_error):
the value is read only from the final non-empty line, so text quoted from a response above that line cannot
move it. Every pattern is linear-time (no two adjacent quantifiers over overlapping characters) and reads
ASCII digits only. Truncation (the token limit) is the caller's to say: a cut answer is never parsed.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from builder.core.errors import BuilderError

MAX_SCORE = 5
# Possessive quantifiers never backtrack (a line is read in linear time); ASCII only (no "ſcore", no "５").
# `Score: 4`, `score : 4`, `Score:** 4`, `Score: 4/5`, `Score: 4 points`, `Score: 4.0`.
_SCORE_LINE = re.compile(
    r"[*_\s]*+score[*_\s]*+:[*_\s]*+([0-9]++(?:\.[0-9]++)?+)\s*+(?:/\s*+5|points?)?+[*_.\s]*+", re.IGNORECASE | re.ASCII
)
_VERDICT_LINE = re.compile(
    r"[*_\s]*+(?:final\s++)?+verdict[*_\s]*+:[*_\s]*+\[*+\s*+(?:response\s*+)?+(1|2|tie)\s*+\]*+[*_.\s]*+", re.IGNORECASE | re.ASCII
)


@dataclass(frozen=True)
class Parsed:
    value: float | str | None  # a score 0–5, or a verdict "1" | "2" | "tie"; None when unparsed
    rationale: str
    parse_error: str | None  # empty | no_final_score_line | score_out_of_range | no_final_verdict_line


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


def final_score_line(text: str) -> Parsed:
    """`Score: N` on the final non-empty line, N a whole number from 0 to 5."""
    lines = _lines(text)
    if not lines:
        return Parsed(None, "", "empty")
    match = _SCORE_LINE.fullmatch(lines[-1])
    if not match:
        return Parsed(None, text.strip(), "no_final_score_line")
    rationale = "\n".join(lines[:-1]).strip()
    score = exact_score(match.group(1))
    if score is None:
        return Parsed(None, rationale, "score_out_of_range")
    return Parsed(float(score), rationale, None)


def exact_score(number: str) -> int | None:
    """The whole number 0–5 that ASCII digits like "4", "04" or "4.0" spell exactly; None for anything else
    ("4.5", "7", and "4.9999999999999999", which a float would round to 5). Read as text, never as a float."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0") or "0"
    if fraction.strip("0") or len(whole) > 1 or int(whole) > MAX_SCORE:
        return None
    return int(whole)


def final_verdict_line(text: str) -> Parsed:
    """`Verdict: 1`, `Verdict: 2` or `Verdict: tie` on the final non-empty line (by position in the prompt)."""
    lines = _lines(text)
    if not lines:
        return Parsed(None, "", "empty")
    match = _VERDICT_LINE.fullmatch(lines[-1])
    if not match:
        return Parsed(None, text.strip(), "no_final_verdict_line")
    return Parsed(match.group(1).lower(), "\n".join(lines[:-1]).strip(), None)


PARSERS: dict[str, Callable[[str], Parsed]] = {
    "final_score_line@1": final_score_line,
    "final_verdict_line@1": final_verdict_line,
}
DEFAULT_PARSER = {"pointwise": "final_score_line@1", "pairwise": "final_verdict_line@1"}
PARSER_KIND = {"final_score_line@1": "pointwise", "final_verdict_line@1": "pairwise"}


def get_parser(name: str) -> Callable[[str], Parsed]:
    if name not in PARSERS:
        raise BuilderError(f"unknown judge parser {name!r} (available: {', '.join(PARSERS)})")
    return PARSERS[name]
