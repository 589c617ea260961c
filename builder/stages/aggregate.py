"""From judgments to labels, vectorised: average each candidate's parsed scores, pick the highest and
lowest candidate of each prompt, and say why every prompt, candidate or judgment that gave no label was dropped.

Rules (the paper's, made explicit):
- a candidate's score is the mean of its parsed judgments; unparsed judgments are not zeros, they are absent;
- a candidate with no parsed judgment is never a label;
- a prompt with fewer than two scored candidates gives no pair;
- chosen = highest mean, rejected = lowest mean, ties broken by the lower sample index;
- a prompt whose highest and lowest means are equal is dropped as a tie;
- with length control ρ (off by default): chosen = the shortest (fewest tokens, then the lower sample index)
  of the candidates whose mean is within ρ of the highest and above the lowest, so that a longer answer
  is not preferred for a score difference the judge cannot really tell apart (Meta-Rewarding's remedy for
  self-rewarding's drift to longer answers); rejected stays the lowest mean.

With verifiers (`make-pairs --verify`) the rule is `checks_first` (RULES below): the share of its prompt's
constraints a candidate passes comes before the judge's mean (and before length control), so a candidate that
fails a check is never chosen over one that passes them all. Prompts without constraints are ranked by the
judge alone. `checks_margin` (`--verify-rule checks_margin`) keeps only the pairs the verifiers can tell apart: a
prompt whose candidates all pass the same share of its constraints gives no pair (`no_check_margin`) instead of
one the judge alone decides, so every verified pair's chosen passes more of its constraints than its rejected. Under
it, an answer cut at the length limit is never a label (`cut_at_length_limit`): a trainer renders every answer of a
pair through the chat template, which closes it with an end-of-turn token the model never wrote, so a cut rejected
answer would teach the model not to end its answers (on SmolLM2-135M with 160 tokens, about half were cut, and DPO on
such pairs made its answers longer). `checks_margin_ended` counts ending within the length limit as one more check, after
the prompt's constraints: of two answers passing the same share of them, one that ended ranks above one that was cut. A
cut answer may then be rejected, never chosen, so a prompt whose ended answers all pass the same share still gives a
pair where an answer was cut, and the model learns to end within the limit the eval also sets (on SmolLM2-135M, its
cut answers followed a third fewer instructions than its ended ones). On prompts without constraints it is
checks_margin.

With `--score expected` a judgment's score is its expected score (the mean of 0–5 under the judge's own
probabilities at its score token) instead of the sampled digit; a parsed judgment whose engine reported no
probabilities is then absent too (`no_score_probs`).
"""

import polars as pl

from builder.core.prompts import turn
from builder.core.schemas import drops
from builder.judging.verify import with_checks

JUDGE_ONLY, CHECKS_FIRST, CHECKS_MARGIN, CHECKS_MARGIN_ENDED = "judge_only", "checks_first", "checks_margin", "checks_margin_ended"
MARGIN_RULES = (CHECKS_MARGIN, CHECKS_MARGIN_ENDED)
RULES = {
    JUDGE_ONLY: "candidates are ranked by the judge's mean score, then by the lower sample index; chosen = first, "
                "rejected = last; equal means are a tie",
    CHECKS_FIRST: "candidates are ranked by the share of their prompt's constraints they pass, then by the judge's mean "
                  "score, then by the lower sample index; chosen = first, rejected = last; a prompt whose chosen and "
                  "rejected are equal on both is a tie; a candidate without a parsed score is never a label",
    CHECKS_MARGIN: "as checks_first over the candidates that ended (one cut at the length limit is never a label), and a "
                   "prompt with constraints whose ended candidates all pass the same share of them gives no pair "
                   "(no_check_margin): a verified pair's chosen passes more of its constraints than its rejected",
    CHECKS_MARGIN_ENDED: "as checks_margin, except that on a prompt with constraints ending within the length limit counts "
                         "after them: of two candidates passing the same share, one that ended ranks above one that was "
                         "cut; a cut candidate may be rejected, never chosen, and a verified pair's chosen passes more of "
                         "its constraints than its rejected, or as many and ended where the rejected was cut",
}

SCORE_COLUMNS = {"sampled": "score", "expected": "expected_score"}

# select_pairs keeps each prompt's candidates in chosen-first and in rejected-first order as lists (chosen_ids,
# rejected_scores, ...); a pair's columns are the lists' i-th items.
LISTED = (("ids", pl.col("candidate_id")), ("scores", pl.col("score_mean")), ("checks", pl.col("checks_rank")),
          ("ended", pl.col("ended_rank")))
FIRST_PAIR = {("chosen", "ids"): "chosen_id", ("rejected", "ids"): "rejected_id", ("chosen", "scores"): "score_chosen",
              ("rejected", "scores"): "score_rejected", ("chosen", "checks"): "checks_chosen", ("rejected", "checks"): "checks_rejected",
              ("chosen", "ended"): "ended_chosen", ("rejected", "ended"): "ended_rejected"}


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


LENGTH_CONTROL_RULE = ("chosen = the shortest (tokens, then sample index) candidate whose mean is within rho of the highest "
                       "and above the lowest; rejected = the lowest mean")


def chosen_first(length_control: float | None) -> tuple[list[pl.Expr], list[bool]]:
    """Sort keys (and their directions) that put one prompt's chosen candidate first among its scored candidates,
    after the checks rank."""
    if length_control is None:
        return [pl.col("score_mean"), pl.col("sample_index")], [True, False]
    eligible = (pl.col("score_mean") >= pl.col("score_mean").max() - length_control) & (pl.col("score_mean") > pl.col("score_mean").min())
    return [eligible, pl.col("n_tokens"), pl.col("sample_index")], [True, False, False]


def select_pairs(prompts: pl.DataFrame, scored: pl.DataFrame, rule: str = JUDGE_ONLY,
                 length_control: float | None = None, pairs_per_prompt: int = 1) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Returns (pairs, prompts dropped at this stage). `rule` is a key of RULES. A prompt gives a pair, or a drop,
    by its best candidate against its worst; with `pairs_per_prompt` above 1, its further pairs are nearest_pairs."""
    checks, ended = pl.col("checks_rank"), pl.col("ended_rank")
    keys, descending = chosen_first(length_control)
    best, first = (ended, checks, *keys), [True, True, *descending]  # a cut candidate is never chosen while one ended
    worst, last = (checks, ended, pl.col("score_mean"), pl.col("sample_index")), [False, False, False, False]
    rank = pl.col("check_share").fill_null(0.0) if rule != JUDGE_ONLY else pl.lit(0.0)
    ended_rank = pl.col("finish_reason") != "length" if rule == CHECKS_MARGIN_ENDED else pl.lit(True)
    by_prompt = (
        scored.filter((pl.col("n_scored") > 0) & labelable(rule))
        .with_columns(rank.alias("checks_rank"), ended_rank.alias("ended_rank"))
        .group_by("prompt_id")
        .agg(
            pl.len().alias("n_scored_candidates"),
            (pl.col("check_share").is_not_null().any() if "check_share" in scored.columns else pl.lit(False)).alias("verified"),
            *(column.sort_by(*best, descending=first).alias(f"chosen_{name}") for name, column in LISTED),
            *(column.sort_by(*worst, descending=last).alias(f"rejected_{name}") for name, column in LISTED),
        )
        .with_columns(*(pl.col(f"{side}_{name}").list.first().alias(first_pair) for (side, name), first_pair in FIRST_PAIR.items()))
        .with_columns(((pl.col("checks_chosen") == pl.col("checks_rejected")) & (pl.col("ended_chosen") == pl.col("ended_rejected")))
                      .alias("same_rank"))
        .with_columns((pl.col("same_rank") & (pl.col("score_chosen") == pl.col("score_rejected"))).alias("tied"),
                      (pl.col("verified") & pl.col("same_rank") & pl.lit(rule in MARGIN_RULES)).alias("no_margin"))
    )
    everyone = prompts.select("prompt_id").join(by_prompt, on="prompt_id", how="left")
    if rule in MARGIN_RULES:  # the prompts left unjudged because their checks could not tell any two candidates apart
        margins = check_margins(scored, rule).filter(~pl.col("has_margin")).select("prompt_id", "ended", "unjudged_share")
        everyone = everyone.join(margins, on="prompt_id", how="left")
        everyone = everyone.with_columns(pl.col("no_margin").fill_null(False) | pl.col("ended").is_not_null())
    else:
        everyone = everyone.with_columns(pl.lit(None, pl.UInt32).alias("ended"), pl.lit(None, pl.Float64).alias("unjudged_share"),
                                         pl.col("no_margin").fill_null(False))
    too_few = everyone.filter((pl.col("n_scored_candidates").fill_null(0) < 2) & ~pl.col("no_margin"))
    no_margin = everyone.filter(pl.col("no_margin"))
    ties = everyone.filter((pl.col("n_scored_candidates") >= 2) & pl.col("tied") & ~pl.col("no_margin"))
    winners = nearest_pairs(everyone.filter((pl.col("n_scored_candidates") >= 2) & ~pl.col("tied") & ~pl.col("no_margin")), rule, pairs_per_prompt)

    verified = "passed" in scored.columns  # the prompts carry constraints: each side says whether it passed them all
    response = scored.select("candidate_id", "response", "n_tokens", *(["passed", "check_share"] if verified else []))
    side = lambda name: {"candidate_id": f"{name}_id", "response": f"{name}_text", "n_tokens": f"{name}_tokens",  # noqa: E731
                         "passed": f"{name}_passed", "check_share": f"{name}_check_share"}
    pairs = (
        winners.join(prompts.select("prompt_id", "messages"), on="prompt_id", maintain_order="left")
        .join(response.rename(side("chosen"), strict=False), on="chosen_id", maintain_order="left")
        .join(response.rename(side("rejected"), strict=False), on="rejected_id", maintain_order="left")
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
            *(["chosen_passed", "rejected_passed", "chosen_check_share", "rejected_check_share"] if verified else []),
        )
        .sort("prompt_id", maintain_order=True)  # a prompt's pairs stay nearest-first
    )
    dropped = pl.concat(
        [
            _prompt_drop(too_few, "too_few_scored", pl.format("{} scored candidates", pl.col("n_scored_candidates").fill_null(0))),
            _prompt_drop(ties, "tie", pl.format("all scored candidates average {}", pl.col("score_chosen").round(3))),
            _prompt_drop(no_margin, "no_check_margin",
                         pl.when(pl.col("ended") == 0).then(pl.lit("every candidate was cut at the length limit"))
                         .otherwise(pl.format("every candidate that ended passes {} of its constraints",
                                              pl.coalesce("unjudged_share", "checks_chosen").round(3)))),
        ]
    )
    return pairs, dropped


def nearest_pairs(winners: pl.DataFrame, rule: str, pairs_per_prompt: int) -> pl.DataFrame:
    """Up to `pairs_per_prompt` pairs per prompt: its best against its worst, then the pairs nearest to that one (the
    i-th candidate in chosen-first order against the j-th in rejected-first order, by i + j, then i) wherever the
    first is ranked strictly above the second (under checks_margin on a verified prompt: passes more constraints) and
    may be chosen (one cut at the length limit never is). A candidate may be in several pairs, as the best one is
    against every failing one."""
    if pairs_per_prompt == 1:
        return winners.drop(f"{side}_{name}" for side, name in FIRST_PAIR)

    def side(name: str) -> pl.DataFrame:
        columns = [f"{name}_{listed}" for listed, _ in LISTED]
        return (winners.select("prompt_id", "verified", *columns).with_columns(pl.int_ranges(pl.col(f"{name}_ids").list.len()).alias(f"{name}_index"))
                .explode(*columns, f"{name}_index").rename({f"{name}_{listed}": FIRST_PAIR[(name, listed)] for listed, _ in LISTED}))
    same_checks = pl.col("checks_chosen") == pl.col("checks_rejected")
    more_checks = (pl.col("checks_chosen") > pl.col("checks_rejected")) | (same_checks & (pl.col("ended_chosen") > pl.col("ended_rejected")))
    same_rank = same_checks & (pl.col("ended_chosen") == pl.col("ended_rejected"))
    ranked_above = more_checks | (same_rank & (pl.col("score_chosen") > pl.col("score_rejected")))
    if rule in MARGIN_RULES:
        ranked_above = pl.when(pl.col("verified")).then(more_checks).otherwise(ranked_above)
    first = (pl.col("chosen_index") == 0) & (pl.col("rejected_index") == 0)
    return (side("chosen").join(side("rejected").drop("verified"), on="prompt_id")
            .filter(first | (ranked_above & pl.col("ended_chosen")))
            .sort("prompt_id", pl.col("chosen_index") + pl.col("rejected_index"), "chosen_index")
            .group_by("prompt_id", maintain_order=True).head(pairs_per_prompt)
            .drop("chosen_index", "rejected_index"))


def labelable(rule: str) -> pl.Expr:
    """Which candidates may be chosen or rejected: any, except under the margin rules one cut at the length limit
    (under checks_margin_ended, one cut on a prompt with constraints may still be rejected)."""
    ended = pl.col("finish_reason") != "length"
    if rule == CHECKS_MARGIN_ENDED:
        return ended | pl.col("check_share").is_not_null()
    return ended if rule == CHECKS_MARGIN else pl.lit(True)


def check_margins(candidates: pl.DataFrame, rule: str = CHECKS_MARGIN) -> pl.DataFrame:
    """Per prompt that carries constraints: whether the verifiers tell some of its candidates apart (`has_margin`;
    under checks_margin, of those that ended; under checks_margin_ended, whether any candidate ranks below the best
    one that ended), how many ended, and the share the ended ones all pass when nothing tells them apart (`unjudged_share`)."""
    share, ended = pl.col("check_share"), pl.col("finish_reason") != "length"
    best = share.filter(ended).max()
    has_margin = best > share.filter(ended).min()
    if rule == CHECKS_MARGIN_ENDED:
        has_margin = (share < best).any() | (~ended & (share == best)).any()
    return (candidates.filter(share.is_not_null()).group_by("prompt_id")
            .agg(has_margin.fill_null(False).alias("has_margin"),
                 ended.sum().alias("ended"), share.filter(ended).first().alias("unjudged_share")))


def to_judge(candidates: pl.DataFrame, checks: pl.DataFrame | None, rule: str) -> pl.DataFrame:
    """The candidates whose judgments can change a label: all of them, except under the margin rules, where an answer
    that may not be a label is not judged, nor are the answers of a prompt the verifiers cannot order (it gives no pair
    whatever the judge says)."""
    if rule not in MARGIN_RULES:
        return candidates
    if checks is None:
        return candidates.filter(pl.col("finish_reason") != "length")
    checked = with_checks(candidates, checks)
    margins = check_margins(checked, rule)
    labels = checked.filter(labelable(rule)).select(candidates.columns)
    return labels.join(margins.filter(~pl.col("has_margin")).select("prompt_id"), on="prompt_id", how="anti", maintain_order="left")


def _prompt_drop(frame: pl.DataFrame, reason: str, detail: pl.Expr) -> pl.DataFrame:
    return drops(frame, "prompt", reason, detail)


def unlabelled(scored: pl.DataFrame, judgments: pl.DataFrame, score: str = "sampled", rule: str = JUDGE_ONLY) -> pl.DataFrame:
    """Judgments that did not parse (or, for expected scores, have no probabilities), and candidates left
    without any score."""
    no_probs = pl.col("parse_error").is_null() & pl.col("expected_score").is_null() & pl.lit(score == "expected")
    bad = judgments.filter(pl.col("parse_error").is_not_null() | no_probs)
    bad_judgments = drops(bad, "judgment", pl.when(no_probs).then(pl.lit("no_score_probs")).otherwise(pl.lit("unparsed_judgment")),
                          pl.when(no_probs).then(pl.lit("the engine reported no score probabilities")).otherwise(pl.col("parse_error")))
    never_judged = (pl.col("n_judgments") == 0) & pl.lit(rule in MARGIN_RULES)  # to_judge left it out: the prompt's drop says why
    unscored = drops(scored.filter((pl.col("n_scored") == 0) & ~never_judged), "candidate", "no_parsed_score",
                     pl.format("0 of {} judgments parsed", "n_judgments"))
    if rule not in MARGIN_RULES:
        return pl.concat([bad_judgments, unscored])
    cut = drops(scored.filter(~labelable(rule)), "candidate", "cut_at_length_limit",
                pl.format("cut at {} tokens: a trainer would close it with an end-of-turn token it never wrote", "n_tokens"))
    return pl.concat([bad_judgments, unscored, cut])


def build_labels(prompts: pl.DataFrame, candidates: pl.DataFrame, judgments: pl.DataFrame,
                 checks: pl.DataFrame | None = None, rule: str = JUDGE_ONLY, length_control: float | None = None,
                 score: str = "sampled", pairs_per_prompt: int = 1):
    """(candidates with their scores, pairs, dropped rows) from the raw tables; `score`: sampled | expected. With
    `checks` (the verifiers' rows), candidates and pairs also say which answers passed, and `rule` says whether
    that decides."""
    scored = score_candidates(candidates, judgments, score)
    if checks is not None:
        scored = with_checks(scored, checks)
    pairs, dropped_prompts = select_pairs(prompts, scored, rule, length_control, pairs_per_prompt)
    return scored, pairs, pl.concat([unlabelled(scored, judgments, score, rule), dropped_prompts])
