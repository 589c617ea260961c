"""How the judge's answers ended, for the manifest, `builder show` and the card: how many reached the token
limit, how long the rationales are, and (for expected scores) how sure the judge was."""

import polars as pl

from builder.core.records import Constraint
from builder.engines.guided import budget_reserve


def judgment_stats(judgments: pl.DataFrame | pl.LazyFrame, constraint: Constraint | None, max_new_tokens: int) -> dict:
    """`length_limit_rate`: judgments cut by the token limit, plus (guided) those whose rationale ran into the
    tokens kept for the final line, so the engine closed it; `rationale_chars`: quantiles of the parsed
    judgments' rationales, in characters."""
    guided = constraint is not None and constraint.regex is not None
    budget = max_new_tokens - budget_reserve(constraint) if guided else max_new_tokens
    hit = (pl.col("finish_reason") == "length") | (pl.col("n_tokens") >= budget)
    judgments = judgments.lazy()
    counts = judgments.select(pl.len().alias("all"), hit.sum().alias("hit"), (pl.col("finish_reason") == "length").sum().alias("cut"),
                              pl.col("score").is_not_null().sum().alias("parsed")).collect().row(0, named=True)
    parsed = judgments.filter(pl.col("score").is_not_null())
    chars = pl.col("rationale").str.len_chars()
    quantiles = (("min", 0.0), ("p25", 0.25), ("median", 0.5), ("p75", 0.75), ("max", 1.0))
    found = parsed.select(chars.quantile(v, "nearest").alias(q) for q, v in quantiles).collect().row(0, named=True)
    with_probs = parsed.filter(pl.col("score_probs").is_not_null()).select(
        pl.len().alias("n"), pl.col("score_probs").list.max().mean().alias("top")).collect().row(0, named=True)
    return {
        "length_limit_rate": _rate(counts["hit"], counts["all"]),
        "cut_rate": _rate(counts["cut"], counts["all"]),
        "rationale_chars": {q: None if not counts["parsed"] else int(found[q]) for q, _ in quantiles},
        "score_probs_rate": _rate(with_probs["n"], counts["parsed"]),
        "mean_top_prob": None if not with_probs["n"] else round(float(with_probs["top"]), 3),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
