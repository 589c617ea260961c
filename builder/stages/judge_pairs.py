"""`builder make-judge-pairs`: Meta-Rewarding's meta-judge (Wu et al., 2024). The model judges its own judgments,
which gives preference pairs for the judge itself.

Input: a make-pairs version. Its `judgments` table already holds K judgments of every candidate with their raw
text and parsed score, so no judgment is recomputed; only the meta-judgments are generated (through the
generation cache).

Rules:
- which judgments are compared (rule `highest_variance@1`): only parsed judgments, and only two of one candidate
  with different scores (a disagreement to settle). Per prompt, candidates are taken by the variance of their
  parsed scores, highest first (where the judge is least sure of itself, as Meta-Rewarding does), then by sample
  index; within a candidate, the larger score gap first, then the judgments' sample indices. The first
  `--comparisons-per-prompt` are compared; the rest are dropped as `over_cap`. Judgment a is the one with the
  higher score, b the lower;
- each comparison is meta-judged twice, a shown first and b shown first. The judgment preferred in both orders
  is chosen, the other rejected; a verdict that changes with the order, or "tie" in both, is a `tie`; an order
  whose meta-judgment does not parse makes the comparison `unparsed_meta_judgment`. Both are dropped, as data;
- with `--balance-scores`, pairs whose chosen judgment gave the higher score and pairs whose chosen gave the
  lower score are kept in equal numbers (a seeded choice by comparison drops the surplus as `score_balance`), so
  the judge is not taught to move its scores one way.

A pair's prompt is the judge prompt the two judgments answered, exactly as the judge saw it; chosen and rejected
are the two judgments' raw text: the `pairs` table has make-pairs' layout, so `builder train dpo` reads it as it is.
"""

import hashlib
import time
from dataclasses import asdict, replace

import polars as pl

from builder.core.cards import render_kind_card
from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.prompts import turn
from builder.core.schemas import drops
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.engines.generators import Generator, load_generator, resolve_dtype
from builder.engines.models import resolve_model
from builder.judging.pairwise import both_orders, outcome, position_flip
from builder.judging.parsers import get_parser
from builder.judging.setup import prepare_judge
from builder.judging.templates import JudgeTemplate, MetaTemplate
from builder.stages.configs import MakeJudgePairsConfig

SELECTION_RULE = "highest_variance@1"
SELECTION_TEXT = ("parsed judgments of one candidate with different scores; per prompt, candidates by the variance of their parsed "
                  "scores (highest first, then sample index), within a candidate the larger score gap first, then the judgments' "
                  "sample indices; the first comparisons_per_prompt are compared; judgment a has the higher score")
BALANCE_TEXT = ("as many pairs whose chosen judgment gave the higher score as pairs whose chosen gave the lower; the larger side "
                "is down-sampled by a seeded hash of the comparison id")
INPUT_TABLES = ("prompts", "candidates", "judgments")


def make_judge_pairs(config: MakeJudgePairsConfig, store: Store) -> tuple[Version, bool]:
    """Build (or find) the judge-pairs version for this configuration. Returns (version, built_now)."""
    config.validate()
    config = replace(config, dtype=resolve_dtype(config.dtype))
    source = store.load(config.pairs)
    judge_template = source_judge_template(source)
    prompts, candidates, judgments = (source.read(name) for name in INPUT_TABLES)
    setup = prepare_judge("meta", config.judge_template, 1, config.judge_temperature, config.judge_top_p, config.judge_max_new_tokens,
                          config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars, config.backend,
                          config.engine_options)
    meta_ref = resolve_model(config.model or source.manifest.model_spec("judge"), store.root, config.backend == "openai")
    engine = {"backend": config.backend, "dtype": config.dtype, "batch_size": config.batch_size}
    selection = {"rule": SELECTION_RULE, "comparisons_per_prompt": config.comparisons_per_prompt}
    identity = {
        "input": {"version": source.id, "files": {n: [source.manifest.files[f.relative_to(source.folder).as_posix()]["sha256"] for f in source.files_of(n)] for n in INPUT_TABLES}},
        "meta_judge": meta_ref.fingerprint,
        "engine": engine,
        "sampling": asdict(setup.sampling),
        "judge_spec": setup.record,
        "selection": selection,
        "balance_scores": config.balance_scores,
        "seed": config.seed,
    }

    def run(vid: str) -> StageOutput:
        selected, over_cap, unusable = select_comparisons(candidates, judgments, config.comparisons_per_prompt)
        selected = with_judge_prompts(selected, prompts, candidates, judge_template)
        started = time.perf_counter()
        meta_judge = load_generator(meta_ref, config.backend, config.dtype, config.batch_size, config.engine_options)
        fitting, too_long = drop_too_long(selected, meta_judge, setup.template, setup.sampling.max_new_tokens)
        rows = fitting.select("judge_prompt", "judgment_a", "judgment_b").rows()
        verdicts = both_orders(meta_judge, setup.template, rows, setup.sampling, config.seed, store, config.batch_size,
                               setup.constraint, get_parser(setup.spec.parser), "meta-judgments")
        comparisons = decide(fitting.with_columns(verdicts))
        pairs = judge_preference_pairs(comparisons)
        pairs, rebalanced = balance_scores(pairs, config.seed) if config.balance_scores else (pairs, pairs.clear())
        dropped = pl.concat([unusable, over_cap, too_long, undecided(comparisons),
                             drops(rebalanced, "comparison", "score_balance", pl.format("{}: {}", "comparison_id", pl.lit(BALANCE_TEXT)))])
        tables = {
            "comparisons": comparisons.sort("comparison_id"),
            "pairs": pairs.sort("pair_id"),
            "dropped": dropped.sort("level", "prompt_id", "candidate_id", "judgment_id", "detail", nulls_last=True),
        }
        manifest = Manifest(
            kind="judge-pairs",
            parent=source.id,
            inputs={"pairs": {"spec": config.pairs, "version": source.id, "kind": source.manifest.kind}},
            models={"judge": source.manifest.models.get("judge", {}), "meta_judge": {"model": meta_ref.to_json(), "engine": meta_judge.identity}},
            sampling={"judgments": source.manifest.sampling.get("judgments", {}), "meta_judgments": asdict(setup.sampling)},
            judge=setup.template.to_json() | {"spec": setup.record},
            seed=config.seed,
            stats=judge_pairs_stats(judgments, comparisons, tables["pairs"], dropped),
            extra={"selection": selection | {"text": SELECTION_TEXT},
                   "balance_scores": {"on": config.balance_scores} | ({"rule": BALANCE_TEXT} if config.balance_scores else {}),
                   "judge_template": {"name": judge_template.name, "sha256": judge_template.sha256},
                   "context": {"meta_judge": meta_judge.context.to_json()}},
            timing_s={"meta_judgments": round(time.perf_counter() - started, 2)},
        )
        return StageOutput(tables, manifest, render_kind_card)

    return build_version(store, "judge-pairs", identity, run)


def source_judge_template(source: Version) -> JudgeTemplate:
    """The template the source's judgments answered, as its manifest keeps it (checked against its sha256)."""
    if source.manifest.kind != "pairs":
        raise BuilderError(f"{source.id} is a {source.manifest.kind} version; make-judge-pairs compares the judgments of a make-pairs version")
    judge = source.manifest.judge or {}
    template = JudgeTemplate(judge.get("name", "judge"), judge.get("text") or "")
    if not template.text or template.sha256 != judge.get("sha256"):
        raise BuilderError(f"{source.id}: its manifest does not keep the judge template its judgments answered")
    return template


def select_comparisons(candidates: pl.DataFrame, judgments: pl.DataFrame, per_prompt: int) -> tuple[pl.DataFrame, ...]:
    """(the comparisons to make, a dropped row for each possible one over the cap, dropped rows for the judgments and
    candidates that cannot be compared). See the module docstring for the rule."""
    parsed = judgments.filter(pl.col("score").is_not_null()).select(
        "judgment_id", "candidate_id", "prompt_id", "sample_index", "raw", "score", "n_tokens")
    spread = parsed.group_by("candidate_id").agg(pl.col("score").var(ddof=0).alias("score_variance"), pl.len().alias("n_parsed"))
    side = lambda s: {c: f"{c}_{s}" for c in ("judgment_id", "sample_index", "raw", "score", "n_tokens")}
    possible = (
        parsed.rename(side("a")).join(parsed.rename(side("b")).drop("prompt_id"), on="candidate_id")
        .filter(pl.col("score_a") > pl.col("score_b"))
        .join(spread, on="candidate_id")
        .join(candidates.select("candidate_id", pl.col("sample_index").alias("candidate_index")), on="candidate_id")
        .sort(["prompt_id", "score_variance", "candidate_index", (pl.col("score_a") - pl.col("score_b")), "sample_index_a", "sample_index_b"],
              descending=[False, True, False, True, False, False])
        .with_columns(pl.int_range(pl.len()).over("prompt_id").alias("rank"))
        .with_columns(pl.format("{}-j{}-vs-j{}", "candidate_id", "sample_index_a", "sample_index_b").alias("comparison_id"))
    )
    chosen = possible.filter(pl.col("rank") < per_prompt).select(
        "comparison_id", "prompt_id", "candidate_id", "score_variance", "judgment_id_a", "judgment_id_b", "score_a", "score_b",
        pl.col("raw_a").alias("judgment_a"), pl.col("raw_b").alias("judgment_b"), "n_tokens_a", "n_tokens_b")
    over_cap = drops(possible.filter(pl.col("rank") >= per_prompt), "comparison", "over_cap",
                     pl.format("{}: the prompt's {} comparisons went to higher-ranked judgment pairs", "comparison_id", pl.lit(per_prompt)))
    unparsed = drops(judgments.filter(pl.col("score").is_null()), "judgment", "unparsed_judgment", pl.col("parse_error"))
    lonely = candidates.join(spread, on="candidate_id", how="left").filter(~pl.col("candidate_id").is_in(possible["candidate_id"].implode()))
    no_pair = drops(lonely, "candidate", pl.when(pl.col("n_parsed").fill_null(0) < 2).then(pl.lit("too_few_parsed_judgments"))
                    .otherwise(pl.lit("judgments_agree")), pl.format("{} parsed judgments", pl.col("n_parsed").fill_null(0)))
    return chosen, over_cap, pl.concat([unparsed, no_pair])


def with_judge_prompts(comparisons: pl.DataFrame, prompts: pl.DataFrame, candidates: pl.DataFrame, template: JudgeTemplate) -> pl.DataFrame:
    """Each comparison with the judge prompt its two judgments answered, rendered as make-pairs rendered it."""
    inputs = candidates.select("candidate_id", "prompt_id", "response").join(prompts.select("prompt_id", "prompt"), on="prompt_id")
    rendered = inputs.select("candidate_id", pl.Series("judge_prompt", [template.render(p, r) for p, r in inputs.select("prompt", "response").iter_rows()],
                                                       pl.String))
    return comparisons.join(rendered, on="candidate_id", how="left", maintain_order="left")


def drop_too_long(comparisons: pl.DataFrame, meta_judge: Generator, template: MetaTemplate, max_new_tokens: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the comparisons whose meta prompt fits the meta-judge's context with `max_new_tokens` to write, a dropped row
    for each other). Both orders have the same length."""
    details = [meta_judge.context.overflow([{"role": "user", "content": template.render(p, a, b)}], max_new_tokens)
               for p, a, b in comparisons.select("judge_prompt", "judgment_a", "judgment_b").iter_rows()]
    marked = comparisons.with_columns(pl.Series("detail", details, pl.String))
    too_long = drops(marked.filter(pl.col("detail").is_not_null()), "comparison", "too_long_for_context",
                     pl.format("{}: meta-judge: {}", "comparison_id", "detail"))
    return marked.filter(pl.col("detail").is_null()).drop("detail"), too_long


def decide(comparisons: pl.DataFrame) -> pl.DataFrame:
    """The final verdict of each comparison: a or b when both orders prefer it, tie when the orders disagree (or
    both say tie), unparsed when either order did not parse."""
    verdict = outcome().replace_strict({"win": "a", "loss": "b", "tie": "tie", "unparsed": "unparsed"}, return_dtype=pl.String)
    return comparisons.with_columns(verdict.alias("verdict"), position_flip().alias("order_dependent"))


def judge_preference_pairs(comparisons: pl.DataFrame) -> pl.DataFrame:
    """One pair per decided comparison, in make-pairs' layout: the judge prompt as the user turn, the preferred
    judgment as chosen, the other as rejected."""
    a_won = pl.col("verdict") == "a"
    winner = lambda column: pl.when(a_won).then(pl.col(f"{column}_a")).otherwise(pl.col(f"{column}_b"))
    loser = lambda column: pl.when(a_won).then(pl.col(f"{column}_b")).otherwise(pl.col(f"{column}_a"))
    return (
        comparisons.filter(pl.col("verdict").is_in(["a", "b"]))
        .with_columns(winner("judgment").alias("chosen_text"), loser("judgment").alias("rejected_text"))
        .select(
            pl.format("{}>{}", winner("judgment_id"), loser("judgment_id")).alias("pair_id"),
            "prompt_id",
            turn("user", "judge_prompt").alias("prompt"),
            turn("assistant", "chosen_text").alias("chosen"),
            turn("assistant", "rejected_text").alias("rejected"),
            winner("judgment_id").alias("chosen_id"),
            loser("judgment_id").alias("rejected_id"),
            "candidate_id",
            "comparison_id",
            winner("score").alias("chosen_judgment_score"),
            loser("score").alias("rejected_judgment_score"),
            winner("n_tokens").alias("chosen_tokens"),
            loser("n_tokens").alias("rejected_tokens"),
        )
    )


def undecided(comparisons: pl.DataFrame) -> pl.DataFrame:
    """A dropped row for every comparison without a winner: `tie` (order-dependent, or tie in both orders) or
    `unparsed_meta_judgment`."""
    ties = comparisons.filter(pl.col("verdict") == "tie")
    unparsed = comparisons.filter(pl.col("verdict") == "unparsed")
    why = pl.when(pl.col("order_dependent")).then(pl.lit("order-dependent")).otherwise(pl.lit("tie in both orders"))
    return pl.concat([
        drops(ties, "comparison", "tie", pl.format("{}: {} (a first: {}, b first: {})", "comparison_id", why,
                                                   pl.col("verdict_ab"), pl.col("verdict_ba"))),
        drops(unparsed, "comparison", "unparsed_meta_judgment",
              pl.format("{}: a first: {}, b first: {}", "comparison_id", pl.col("parse_error_ab").fill_null("parsed"),
                        pl.col("parse_error_ba").fill_null("parsed"))),
    ])


def balance_scores(pairs: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(pairs kept, pairs down-sampled): as many whose chosen judgment gave the higher score as the lower."""
    higher = pl.col("chosen_judgment_score") > pl.col("rejected_judgment_score")
    keep = min(pairs.filter(higher).height, pairs.filter(~higher).height)
    order = pl.Series([hashlib.sha256(f"{seed}:{c}".encode()).hexdigest() for c in pairs["comparison_id"].to_list()], dtype=pl.String)
    ranked = pairs.with_columns(order.alias("draw")).with_columns(pl.col("draw").rank("ordinal").over(higher).alias("place"))
    kept = ranked.filter(pl.col("place") <= keep).drop("draw", "place")
    return kept, ranked.filter(pl.col("place") > keep).drop("draw", "place")


def judge_pairs_stats(judgments: pl.DataFrame, comparisons: pl.DataFrame, pairs: pl.DataFrame, dropped: pl.DataFrame) -> dict:
    """The meta-judge's figures: how often the order decided, how often the higher score won, and the judges'
    score distribution before and after (Meta-Rewarding watches it: judge pairs that favour one end of the
    scale teach the judge to drift there)."""
    decided = comparisons.filter(pl.col("verdict").is_in(["a", "b"]))
    per_order = pl.concat([comparisons["verdict_ab"], comparisons["verdict_ba"]])
    positional = per_order.filter(per_order.is_in(["1", "2"]))
    return {
        "judgments_parsed": judgments["score"].count(),
        "comparisons": comparisons.height,
        "decided": decided.height,
        "tie_rate": _rate(comparisons.filter(pl.col("verdict") == "tie").height, comparisons.height),
        "order_dependent_rate": _rate(comparisons["order_dependent"].sum() or 0, comparisons["order_dependent"].count()),
        "unparsed_rate": _rate(comparisons.filter(pl.col("verdict") == "unparsed").height, comparisons.height),
        "first_position_rate": _rate((positional == "1").sum(), positional.len()),
        "higher_score_won_rate": _rate(decided.filter(pl.col("verdict") == "a").height, decided.height),
        "pairs": pairs.height,
        "judge_score_histogram": _histogram(judgments["score"]),
        "chosen_score_histogram": _histogram(pairs["chosen_judgment_score"]),
        "rejected_score_histogram": _histogram(pairs["rejected_judgment_score"]),
        "mean_tokens": {"chosen": _mean(pairs["chosen_tokens"]), "rejected": _mean(pairs["rejected_tokens"])},
        "drops": {f"{level}:{reason}": n for level, reason, n in dropped.group_by("level", "reason").len().sort("level", "reason").iter_rows()},
    }


def _histogram(scores: pl.Series) -> dict[str, int]:
    counts = scores.drop_nulls().value_counts().sort(scores.name)
    return {f"{s:g}": n for s, n in counts.iter_rows()}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _mean(column: pl.Series) -> float | None:
    return None if column.len() == 0 else round(float(column.mean()), 2)
