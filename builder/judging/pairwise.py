"""The pairwise judge: its template (a plain text file), the parser for its verdict, and the order-swap rules.

Every pair is judged twice, once with A shown first and once with B shown first. The verdict is read only
from the judgment's final non-empty line ("Verdict: 1", "Verdict: 2" or "Verdict: tie"), so an answer that
itself writes "Verdict: 1" is quoted above that line and cannot move it; a judgment cut off by the token
limit is never parsed.

Outcome of a pair, from A's side:
- either order unparsed → "unparsed" (counted on its own, never a win, a loss or a tie);
- both orders prefer the same model → "win" or "loss"; both say tie → "tie";
- the preferred model changes with the order (including a tie in one order only) → "tie".
"""

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from builder.core.errors import BuilderError
from builder.core.records import Completion

DEFAULT_TEMPLATE = "pairwise"
PLACEHOLDERS = ("{prompt}", "{response_1}", "{response_2}")
_PLACEHOLDER = re.compile(r"\{(prompt|response_1|response_2)\}")
# ASCII only; possessive quantifiers never backtrack, so a line is read in linear time.
_VERDICT_LINE = re.compile(
    r"[*_\s]*+(?:final\s++)?+verdict[*_\s]*+:[*_\s]*+\[*+\s*+(?:response\s*+)?+(1|2|tie)\s*+\]*+[*_.\s]*+", re.IGNORECASE | re.ASCII
)


@dataclass(frozen=True)
class PairwiseTemplate:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, prompt: str, first: str, second: str) -> str:
        # One pass over the template only: placeholders inside the prompt or the answers stay as they are.
        values = {"prompt": prompt, "response_1": first, "response_2": second}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "text": self.text}


def load_pairwise_template(path: str | None = None) -> PairwiseTemplate:
    if path is None:
        text = resources.files("builder.judging").joinpath("judges", f"{DEFAULT_TEMPLATE}.txt").read_text(encoding="utf-8")
        return PairwiseTemplate(DEFAULT_TEMPLATE, text)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BuilderError(f"cannot read judge template {path}: {error}") from None
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise BuilderError(f"pairwise judge template {path} lacks the placeholder(s) {', '.join(missing)}")
    return PairwiseTemplate(Path(path).stem, text)


@dataclass(frozen=True)
class PairwiseVerdict:
    preferred: str | None  # "1", "2" or "tie" (by position); None when unparsed
    parse_error: str | None  # empty | truncated | no_final_verdict_line


def parse_verdict(completion: Completion) -> PairwiseVerdict:
    lines = [line for line in completion.text.strip().splitlines() if line.strip()]
    if not lines:
        return PairwiseVerdict(None, "empty")
    if completion.finish_reason == "length":
        return PairwiseVerdict(None, "truncated")
    match = _VERDICT_LINE.fullmatch(lines[-1])
    if not match:
        return PairwiseVerdict(None, "no_final_verdict_line")
    return PairwiseVerdict(match.group(1).lower(), None)


def winner(preferred: str | None, a_first: bool) -> str | None:
    """The preferred position, as a model: "a", "b" or "tie" (None stays None)."""
    if preferred in (None, "tie"):
        return preferred
    return "a" if (preferred == "1") == a_first else "b"


def outcome(winner_ab: str = "winner_ab", winner_ba: str = "winner_ba") -> pl.Expr:
    """The final outcome from A's side (see the module docstring), as a polars expression."""
    ab, ba = pl.col(winner_ab), pl.col(winner_ba)
    return (
        pl.when(ab.is_null() | ba.is_null()).then(pl.lit("unparsed"))
        .when(ab != ba).then(pl.lit("tie"))
        .otherwise(ab.replace_strict({"a": "win", "b": "loss", "tie": "tie"}, return_dtype=pl.String))
    )


def position_flip(winner_ab: str = "winner_ab", winner_ba: str = "winner_ba") -> pl.Expr:
    """Both orders parsed, and the preferred model changed with the order. Null when either is unparsed."""
    return pl.when(pl.col(winner_ab).is_not_null() & pl.col(winner_ba).is_not_null()).then(pl.col(winner_ab) != pl.col(winner_ba))
