"""The numbers every version carries in its manifest, card and `builder show`."""

import polars as pl


def pairs_stats(tables: dict[str, pl.DataFrame]) -> dict:
    prompts, candidates, judgments, pairs, dropped = (tables[n] for n in ("prompts", "candidates", "judgments", "pairs", "dropped"))
    parsed = judgments.filter(pl.col("score").is_not_null())
    histogram = parsed.group_by("score").len().sort("score")
    drops = dropped.group_by("level", "reason").len().sort("level", "reason")
    ties = dropped.filter(pl.col("reason") == "tie").height
    return {
        "judgments_parsed": parsed.height,
        "parse_failure_rate": _rate(judgments.height - parsed.height, judgments.height),
        "tie_rate": _rate(ties, prompts.height),
        "pair_rate": _rate(pairs.height, prompts.height),
        "score_histogram": {f"{s:g}": n for s, n in histogram.iter_rows()},
        "drops": {f"{level}:{reason}": n for level, reason, n in drops.iter_rows()},
        "parse_errors": dict(judgments.group_by("parse_error").len().drop_nulls().sort("parse_error").iter_rows()),
        "mean_tokens": {
            "candidates": _mean(candidates["n_tokens"]),
            "chosen": _mean(pairs["chosen_tokens"]),
            "rejected": _mean(pairs["rejected_tokens"]),
        },
        "mean_score": {"chosen": _mean(pairs["score_chosen"]), "rejected": _mean(pairs["score_rejected"])},
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(column: pl.Series) -> float | None:
    return None if column.len() == 0 else round(float(column.mean()), 2)
