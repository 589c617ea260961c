"""The numbers every version carries in its manifest, card and `builder show`."""

import polars as pl


def pairs_stats(tables: dict[str, pl.DataFrame | pl.LazyFrame]) -> dict:
    """Tables in memory or lazy (a version's parts, scanned): only the columns and aggregates needed are read."""
    prompts, candidates, judgments, pairs, dropped = (tables[n].lazy() for n in ("prompts", "candidates", "judgments", "pairs", "dropped"))
    n_prompts, n_judgments, n_pairs = (height(t) for t in (prompts, judgments, pairs))
    histogram = judgments.filter(pl.col("score").is_not_null()).group_by("score").len().sort("score").collect()
    parsed = int(histogram["len"].sum())
    drops = dropped.group_by("level", "reason").len().sort("level", "reason").collect()
    ties = int(drops.filter(pl.col("reason") == "tie")["len"].sum())
    means = pairs.select(pl.col("chosen_tokens", "rejected_tokens", "score_chosen", "score_rejected").mean()).collect().row(0, named=True)
    return {
        "judgments_parsed": parsed,
        "parse_failure_rate": _rate(n_judgments - parsed, n_judgments),
        "tie_rate": _rate(ties, n_prompts),
        "pair_rate": _rate(n_pairs, n_prompts),
        "score_histogram": {f"{s:g}": n for s, n in histogram.iter_rows()},
        "drops": {f"{level}:{reason}": n for level, reason, n in drops.iter_rows()},
        "parse_errors": dict(judgments.group_by("parse_error").len().drop_nulls().sort("parse_error").collect().iter_rows()),
        "mean_tokens": {
            "candidates": _mean(candidates.select(pl.col("n_tokens").mean()).collect().item()),
            "chosen": _mean(means["chosen_tokens"]),
            "rejected": _mean(means["rejected_tokens"]),
        },
        "mean_score": {"chosen": _mean(means["score_chosen"]), "rejected": _mean(means["score_rejected"])},
    }


def height(table: pl.DataFrame | pl.LazyFrame) -> int:
    """Rows of a table in memory or lazy (from a parquet file's metadata alone)."""
    return table.lazy().select(pl.len()).collect().item()


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(value: float | None) -> float | None:
    return None if value is None else round(float(value), 2)
