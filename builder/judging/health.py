"""Judge health: the numbers that show collapse, length bias, position bias and reward hacking coming.

Thresholds for warnings (stated, not tuned): collapse when one score holds more than 80% of at least 5
parsed scores; length bias when the Spearman correlation of response length and mean score exceeds 0.5, or
when the chosen response is the longer one in more than 75% of at least 5 pairs; position bias when more
than 50% of pairs flip with the order, or when the first position wins less than 30% or more than 70% of
at least 10 parsed per-order verdicts; parse trouble when more than half the judgments did not parse.
"""

import json

import polars as pl

from builder.core.store import Version

COLLAPSE_SHARE = 0.8
_SCORE_LINE_IN_RESPONSE = r"(?i)score\s*:\s*\d"


def scores_health(judgments: pl.DataFrame | pl.LazyFrame, candidates: pl.DataFrame | pl.LazyFrame) -> dict:
    """judgments: score (null if unparsed); candidates: response, score_mean. In memory or lazy (a version's
    parts, scanned: only these columns are read)."""
    judgments, candidates = judgments.lazy(), candidates.lazy()
    n_judgments = judgments.select(pl.len()).collect().item()
    histogram = judgments.select("score").drop_nulls().group_by("score").len().sort("score").collect()
    parsed = int(histogram["len"].sum())
    top_share = histogram["len"].max() / parsed if parsed else None
    scored = candidates.filter(pl.col("score_mean").is_not_null()).select(pl.col("response").str.len_chars().alias("n_chars"), "score_mean")
    return {
        "judgments": n_judgments,
        "judgments_parsed": parsed,
        "parse_failure_rate": _ratio(n_judgments - parsed, n_judgments),
        "score_histogram": {f"{s:g}": n for s, n in histogram.iter_rows()},
        "most_common_score_share": top_share,
        "collapse": bool(top_share is not None and parsed >= 5 and top_share > COLLAPSE_SHARE),
        "length_score_spearman": _spearman(scored, "n_chars", "score_mean"),
        "responses_with_score_line": candidates.filter(pl.col("response").str.contains(_SCORE_LINE_IN_RESPONSE)).select(pl.len()).collect().item(),
    }


def pairs_health(tables: dict[str, pl.DataFrame | pl.LazyFrame]) -> dict:
    gap = pl.col("chosen_tokens") - pl.col("rejected_tokens")
    pairs = tables["pairs"].lazy().select(pl.len().alias("n"), gap.mean().alias("gap"), (gap > 0).sum().alias("longer")).collect().row(0, named=True)
    return scores_health(tables["judgments"], tables["candidates"]) | {
        "pairs": pairs["n"],
        "chosen_minus_rejected_tokens": _round(pairs["gap"]),
        "chosen_longer_rate": _ratio(pairs["longer"], pairs["n"]),
    }


def h2h_health(tables: dict[str, pl.DataFrame]) -> dict:
    verdicts = tables["verdicts"]
    per_order = pl.concat([verdicts["verdict_ab"], verdicts["verdict_ba"]]).fill_null("unparsed")
    return {
        "judgments": per_order.len(),
        "parse_failure_rate": _ratio((per_order == "unparsed").sum(), per_order.len()),
        "verdict_histogram": dict(per_order.value_counts().sort(per_order.name).iter_rows()),
        "matches": tables["summary"].to_dicts(),
    }


def version_health(version: Version) -> dict:
    """The health of any version, from its own tables."""
    kind = version.manifest.kind
    read = version.scan
    if kind == "pairs":
        return {"kind": kind} | pairs_health({n: read(n) for n in ("judgments", "candidates", "pairs")})
    if kind == "h2h":
        return {"kind": kind} | h2h_health({n: read(n) for n in ("verdicts", "summary")})
    if kind in ("rm", "judge"):
        return {"kind": kind} | scores_health(read("judgments"), read("candidates"))
    return {"kind": kind}


def warnings_for(health: dict) -> list[str]:
    found = []
    if health.get("collapse"):
        found.append(f"judge collapse: {100 * health['most_common_score_share']:.0f}% of parsed scores are the same score")
    if (health.get("parse_failure_rate") or 0) > 0.5:
        found.append(f"{100 * health['parse_failure_rate']:.0f}% of judgments did not parse: the judge does not follow the template")
    if (health.get("length_score_spearman") or 0) > 0.5:
        found.append(f"length bias: longer responses score higher (Spearman {health['length_score_spearman']:.2f})")
    if health.get("pairs", 0) >= 5 and (health.get("chosen_longer_rate") or 0) > 0.75:
        found.append(f"length bias: the chosen response is the longer one in {100 * health['chosen_longer_rate']:.0f}% of pairs")
    if health.get("responses_with_score_line"):
        found.append(f"{health['responses_with_score_line']} responses contain a 'Score: N' line (possible reward hacking; the parser reads only the judgment's last line)")
    return found + h2h_warnings(health.get("matches", []))


def h2h_warnings(matches: list[dict]) -> list[str]:
    found = []
    for m in matches:
        if (m["position_flip_rate"] or 0) > 0.5:
            found.append(f"{m['match']}: position bias: {100 * m['position_flip_rate']:.0f}% of pairs flip with the order")
        parsed = 2 * m["prompts"] - m["unparsed_judgments"]
        rate = m["first_position_win_rate"]
        if rate is not None and parsed >= 10 and not 0.3 <= rate <= 0.7:
            found.append(f"{m['match']}: position bias: the answer shown first wins {100 * rate:.0f}% of decisive verdicts")
        if m["prompts"] and m["unparsed"] / m["prompts"] > 0.5:
            found.append(f"{m['match']}: {m['unparsed']} of {m['prompts']} pairs unparsed: the judge does not follow the verdict format")
    return found


def health_json(health: dict) -> str:
    return json.dumps(health, indent=2, default=str)


def _spearman(frame: pl.LazyFrame, x: str, y: str) -> float | None:
    found = frame.select(pl.len().alias("n"), pl.col(x).n_unique().alias("nx"), pl.col(y).n_unique().alias("ny"),
                         pl.corr(x, y, method="spearman").alias("rho")).collect().row(0, named=True)
    if found["n"] < 3 or found["nx"] < 2 or found["ny"] < 2:
        return None
    return _round(found["rho"], 3)


def _ratio(part, whole) -> float | None:
    return round(part / whole, 4) if whole else None


def _round(value, digits: int = 2) -> float | None:
    return None if value is None else round(float(value), digits)
