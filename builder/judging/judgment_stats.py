"""How the judge's answers ended, for the manifest, `builder show` and the card: how many reached the token
limit, how long the rationales are, and (for expected scores) how sure the judge was."""

import polars as pl

from builder.core.records import Constraint
from builder.engines.guided import budget_reserve


def judgment_stats(judgments: pl.DataFrame, constraint: Constraint | None, max_new_tokens: int) -> dict:
    """`length_limit_rate`: judgments cut by the token limit, plus (guided) those whose rationale ran into the
    tokens kept for the final line, so the engine closed it; `rationale_chars`: quantiles of the parsed
    judgments' rationales, in characters."""
    guided = constraint is not None and constraint.regex is not None
    budget = max_new_tokens - budget_reserve(constraint) if guided else max_new_tokens
    hit = (pl.col("finish_reason") == "length") | (pl.col("n_tokens") >= budget)
    parsed = judgments.filter(pl.col("score").is_not_null())
    chars = parsed["rationale"].str.len_chars()
    with_probs = parsed.filter(pl.col("score_probs").is_not_null())
    return {
        "length_limit_rate": _rate(judgments.filter(hit).height, judgments.height),
        "cut_rate": _rate(judgments.filter(pl.col("finish_reason") == "length").height, judgments.height),
        "rationale_chars": {q: None if chars.is_empty() else int(chars.quantile(v, "nearest"))
                            for q, v in (("min", 0.0), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1.0))},
        "score_probs_rate": _rate(with_probs.height, parsed.height),
        "mean_top_prob": None if with_probs.is_empty() else round(float(with_probs["score_probs"].list.max().mean()), 3),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
