"""The pairwise judge: its template (a plain text file), the parser for its verdict, and the order-swap rules.
The same rules serve the meta-judge, which compares two judgments instead of two answers.

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

from builder.core.records import Completion, Constraint, Sampling, make_request
from builder.core.store import Store
from builder.engines.generators import Generator
from builder.engines.runner import run_requests
from builder.judging.parsers import final_verdict_line
from builder.judging.spec import load_judge
from builder.judging.templates import MetaTemplate, PairwiseTemplate

DEFAULT_TEMPLATE = "pairwise"
VERDICT_COLUMNS = ("verdict", "parse_error", "winner", "raw", "request_key")


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


def both_orders(
    judge: Generator, template: PairwiseTemplate | MetaTemplate, rows: list[tuple[str, str, str]], sampling: Sampling, seed: int,
    store: Store, batch_size: int, constraint: Constraint | None = None, parser=final_verdict_line, label: str = "judgments",
) -> pl.DataFrame:
    """Each (context, a, b) judged with a shown first (`_ab`) and with b shown first (`_ba`), through the judge's
    generation cache: per order the raw text, the verdict by position, its parse error, the winner as a, b or
    tie, and the request's key; one row per input row, in order."""
    request = lambda text: make_request(judge.identity, [{"role": "user", "content": text}], sampling, seed, constraint)
    ab = [request(template.render(context, a, b)) for context, a, b in rows]
    ba = [request(template.render(context, b, a)) for context, a, b in rows]
    done = run_requests(judge, ab + ba, store.generation_cache(judge.identity), batch_size, label)
    columns = {}
    for order, requests, a_first in (("ab", ab, True), ("ba", ba, False)):
        completions = [done[r.key][0] for r in requests]
        parsed = [parse_verdict(c, parser) for c in completions]
        columns |= {
            f"raw_{order}": [c.text for c in completions],
            f"verdict_{order}": [v.preferred for v in parsed],
            f"parse_error_{order}": [v.parse_error for v in parsed],
            f"winner_{order}": [winner(v.preferred, a_first) for v in parsed],
            f"request_key_{order}": [r.key for r in requests],
        }
    return pl.DataFrame(columns, schema={f"{c}_{o}": pl.String for o in ("ab", "ba") for c in VERDICT_COLUMNS})
