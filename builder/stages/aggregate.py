"""From judgments to labels, vectorised: average each candidate's parsed scores, pick the highest and
lowest candidate of each prompt, and say why every prompt, candidate or judgment that gave no label was dropped.

Rules (the paper's, made explicit):
- a candidate's score is the mean of its parsed judgments; unparsed judgments are not zeros, they are absent;
- a candidate with no parsed judgment is never a label;
- a prompt with fewer than two scored candidates gives no pair;
- chosen = highest mean, rejected = lowest mean, ties broken by the lower sample index;
- a prompt whose highest and lowest means are equal is dropped as a tie.

With `--score expected` a judgment's score is its expected score (the mean of 0–5 under the judge's own
probabilities at its score token) instead of the sampled digit; a parsed judgment whose engine reported no
probabilities is then absent too (`no_score_probs`).
"""

import polars as pl

from builder.core.prompts import turn
from builder.core.schemas import DROPPED_SCHEMA

SCORE_COLUMNS = {"sampled": "score", "expected": "expected_score"}


def score_candidates(candidates: pl.DataFrame, judgments: pl.DataFrame, score: str = "sampled") -> pl.DataFrame:
    column = SCORE_COLUMNS[score]
    scores = judgments.group_by("candidate_id").agg(
        pl.col(column).mean().alias("score_mean"),
        pl.col(column).count().cast(pl.Int32).alias("n_scored"),
        pl.len().cast(pl.Int32).alias("n_judgments"),
    )
    return candidates.join(scores, on="candidate_id", how="left").with_columns(
        pl.col("n_scored").fill_null(0), pl.col("n_judgments").fill_null(0)
    )


def select_pairs(prompts: pl.DataFrame, scored: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (pairs, prompts dropped at this stage)."""
    by_prompt = (
        scored.filter(pl.col("n_scored") > 0)
        .group_by("prompt_id")
        .agg(
            pl.len().alias("n_scored_candidates"),
            pl.col("candidate_id").sort_by("score_mean", "sample_index", descending=[True, False]).first().alias("chosen_id"),
            pl.col("candidate_id").sort_by("score_mean", "sample_index", descending=[False, False]).first().alias("rejected_id"),
            pl.col("score_mean").max().alias("score_chosen"),
            pl.col("score_mean").min().alias("score_rejected"),
        )
    )
    everyone = prompts.select("prompt_id").join(by_prompt, on="prompt_id", how="left")
    too_few = everyone.filter(pl.col("n_scored_candidates").fill_null(0) < 2)
    ties = everyone.filter((pl.col("n_scored_candidates") >= 2) & (pl.col("score_chosen") == pl.col("score_rejected")))
    winners = everyone.filter((pl.col("n_scored_candidates") >= 2) & (pl.col("score_chosen") > pl.col("score_rejected")))

    response = scored.select("candidate_id", "response", "n_tokens")
    pairs = (
        winners.join(prompts.select("prompt_id", "messages"), on="prompt_id")
        .join(response.rename({"candidate_id": "chosen_id", "response": "chosen_text", "n_tokens": "chosen_tokens"}), on="chosen_id")
        .join(response.rename({"candidate_id": "rejected_id", "response": "rejected_text", "n_tokens": "rejected_tokens"}), on="rejected_id")
        .select(
            pl.format("{}>{}", "chosen_id", "rejected_id").alias("pair_id"),
            "prompt_id",
            pl.col("messages").alias("prompt"),
            turn("assistant", "chosen_text").alias("chosen"),
            turn("assistant", "rejected_text").alias("rejected"),
            "chosen_id",
            "rejected_id",
            "score_chosen",
            "score_rejected",
            (pl.col("score_chosen") - pl.col("score_rejected")).alias("score_margin"),
            "chosen_tokens",
            "rejected_tokens",
        )
        .sort("prompt_id")
    )
    dropped = pl.concat(
        [
            _prompt_drop(too_few, "too_few_scored", pl.format("{} scored candidates", pl.col("n_scored_candidates").fill_null(0))),
            _prompt_drop(ties, "tie", pl.format("all scored candidates average {}", pl.col("score_chosen").round(3))),
        ]
    )
    return pairs, dropped


def _prompt_drop(frame: pl.DataFrame, reason: str, detail: pl.Expr) -> pl.DataFrame:
    return frame.select(
        pl.lit("prompt").alias("level"),
        "prompt_id",
        pl.lit(None, pl.String).alias("candidate_id"),
        pl.lit(None, pl.String).alias("judgment_id"),
        pl.lit(reason).alias("reason"),
        detail.alias("detail"),
    ).cast(DROPPED_SCHEMA)


def unlabelled(scored: pl.DataFrame, judgments: pl.DataFrame, score: str = "sampled") -> pl.DataFrame:
    """Judgments that did not parse (or, for expected scores, have no probabilities), and candidates left
    without any score."""
    no_probs = pl.col("parse_error").is_null() & pl.col("expected_score").is_null() & pl.lit(score == "expected")
    bad_judgments = judgments.filter(pl.col("parse_error").is_not_null() | no_probs).select(
        pl.lit("judgment").alias("level"),
        "prompt_id",
        "candidate_id",
        "judgment_id",
        pl.when(no_probs).then(pl.lit("no_score_probs")).otherwise(pl.lit("unparsed_judgment")).alias("reason"),
        pl.when(no_probs).then(pl.lit("the engine reported no score probabilities")).otherwise(pl.col("parse_error")).alias("detail"),
    )
    unscored = scored.filter(pl.col("n_scored") == 0).select(
        pl.lit("candidate").alias("level"),
        "prompt_id",
        "candidate_id",
        pl.lit(None, pl.String).alias("judgment_id"),
        pl.lit("no_parsed_score").alias("reason"),
        pl.format("0 of {} judgments parsed", "n_judgments").alias("detail"),
    )
    return pl.concat([bad_judgments.cast(DROPPED_SCHEMA), unscored.cast(DROPPED_SCHEMA)])


def build_labels(prompts: pl.DataFrame, candidates: pl.DataFrame, judgments: pl.DataFrame, score: str = "sampled"):
    """(candidates with their scores, pairs, dropped rows) from the three raw tables; `score`: sampled | expected."""
    scored = score_candidates(candidates, judgments, score)
    pairs, dropped_prompts = select_pairs(prompts, scored)
    return scored, pairs, pl.concat([unlabelled(scored, judgments, score), dropped_prompts])
