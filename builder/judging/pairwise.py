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

from dataclasses import dataclass

import polars as pl

from builder.core.records import Completion
from builder.judging.parsers import final_verdict_line
from builder.judging.spec import load_judge
from builder.judging.templates import PairwiseTemplate

DEFAULT_TEMPLATE = "pairwise"


def load_pairwise_template(path: str | None = None) -> PairwiseTemplate:
    """The template of the shipped pairwise judge, of a judge folder, or of a bare template file."""
    return load_judge(path, "pairwise").template


@dataclass(frozen=True)
class PairwiseVerdict:
    preferred: str | None  # "1", "2" or "tie" (by position); None when unparsed
    parse_error: str | None  # empty | truncated | no_final_verdict_line


def parse_verdict(completion: Completion, parser=final_verdict_line) -> PairwiseVerdict:
    """A cut-off judgment is `truncated`, whatever it ends with; otherwise the parser reads its text."""
    if completion.finish_reason == "length" and completion.text.strip():
        return PairwiseVerdict(None, "truncated")
    parsed = parser(completion.text)
    return PairwiseVerdict(parsed.value, parsed.parse_error)


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
