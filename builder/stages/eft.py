"""`builder make-eft`: judge training data from human-ranked groups, as in the paper.

The model judges every response of each training group K times with the judge template; a group is kept
only where the model's mean scores order its responses exactly as the humans did:

    for every two responses the humans ranked differently, the better-ranked one has the strictly higher
    mean score. A model tie, or a response without any parsed score, breaks agreement; two responses the
    humans ranked equal constrain nothing; a group whose responses all share one human rank is dropped
    (`no_human_order`), since it cannot agree or disagree. A rejected group's reason is
    `unscored_response` when one of its responses has no parsed score, else `disagrees_with_human_ranking`.

From each kept group, every response gives one EFT example: the judge prompt as the user turn and the one
parsed judgment whose score is closest to the response's mean (the lowest sample index on a tie) as the
assistant turn, ready for SFT in the `messages` column (the judge prompt exactly as the model saw it). A deterministic share of the groups is held out first (`--held-out`), never judged here,
and written as the `heldout` table in the ranked format, for `builder eval reward-model`.
"""

import hashlib
import time
from dataclasses import asdict

import polars as pl

from builder.core.cards import render_kind_card
from builder.core.manifest import Manifest
from builder.core.prompts import turn
from builder.core.records import stable_hash
from builder.core.schemas import drops
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.engines.batching import engine_identity, resolve_engine
from builder.engines.generators import load_generator
from builder.engines.models import resolve_model
from builder.judging.judge import JudgeTemplate
from builder.judging.metrics import group_metrics
from builder.judging.score import judge_candidates
from builder.judging.setup import prepare_judge
from builder.stages.aggregate import score_candidates, unlabelled
from builder.stages.configs import MakeEftConfig
from builder.stages.ranked import ranked_tables
from builder.stages.seed import load_seed


def held_out_ids(prompt_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A stable, seeded choice of groups: the same group is held out whatever else is in the file."""
    def position(prompt_id: str) -> float:
        return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:12], 16) / 16**12

    return {p for p in prompt_ids if position(p) < fraction}


def make_eft(config: MakeEftConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    raw, source = load_seed(config.ranked, "ranked", store)
    prompts, candidates, dropped_groups = ranked_tables(raw, source.spec, config.limit, source.fingerprint)
    heldout = held_out_ids(prompts["prompt_id"].to_list(), config.held_out, config.seed)
    setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          config.backend, config.engine_options)
    template, sampling = setup.template, setup.sampling
    model_ref = resolve_model(config.model, store.root, config.backend == "openai")
    config = resolve_engine(config, [model_ref], [sampling])
    engine = engine_identity(config.backend, config.dtype, config.batch_size)
    identity = {
        "input": stable_hash(candidates.select("candidate_id", "response", "human_rank").rows()),
        "held_out": config.held_out, "model": model_ref.fingerprint, "sampling": asdict(sampling),
        "judge_spec": setup.record, "engine": engine, "seed": config.seed,
    } | ({"score": config.score} if config.score != "sampled" else {}) | ({"rebalance": REBALANCE_RULE} if config.rebalance else {})

    def run(vid: str) -> StageOutput:
        train_prompts = prompts.filter(~pl.col("prompt_id").is_in(list(heldout)))
        train = candidates.filter(~pl.col("prompt_id").is_in(list(heldout)))
        started = time.perf_counter()
        judge = load_generator(model_ref, config.backend, config.dtype, config.batch_size, config.engine_options)
        judgments = judge_candidates(judge, setup.spec, train_prompts, train, sampling, config.seed, store, config.batch_size, setup.constraint)
        judging_s = time.perf_counter() - started
        scored = score_candidates(train, judgments, config.score).sort("candidate_id")
        groups = agreement(scored)
        all_examples = eft_examples(groups, scored, judgments, train_prompts, template)
        examples, down_sampled = rebalance(all_examples, config.seed) if config.rebalance else (all_examples, all_examples.clear())
        tables = {
            "eft": examples,
            "groups": groups,
            "candidates": scored,
            "judgments": judgments.sort("judgment_id"),
            "heldout": ranked_format(prompts.filter(pl.col("prompt_id").is_in(list(heldout))), candidates),
            "prompts": prompts,
            "dropped": pl.concat([dropped_groups, rejected(groups), unlabelled(scored, judgments), rebalanced(down_sampled)]),
        }
        judged = groups.filter(pl.col("reason").fill_null("") != "no_human_order").height
        agreeing = int(groups["agrees"].sum())
        extra = {"agreement_rule": "every pair of differently ranked responses strictly ordered the same way by mean score"}
        if config.rebalance:
            extra["rebalance"] = {"rule": REBALANCE_RULE, "scores_before": score_counts(all_examples),
                                  "scores_after": score_counts(examples), "down_sampled": down_sampled.height}
        manifest = Manifest(
            kind="eft",
            parent=source.parent,
            inputs={"ranked": {"spec": source.spec, "fingerprint": source.fingerprint, "limit": config.limit, "held_out": config.held_out}},
            models={"judge": {"model": model_ref.to_json(), "engine": judge.identity}},
            sampling={"judgments": asdict(sampling)},
            judge=template.to_json() | {"spec": setup.record},
            seed=config.seed,
            extra=extra,
            stats={
                "groups": prompts.height,
                "heldout_groups": len(heldout),
                "train_groups": train_prompts.height,
                "agreeing_groups": agreeing,
                "agreement_rate": round(agreeing / judged, 4) if judged else None,
                "eft_examples": examples.height,
                "judgments": judgments.height,
                "unparsed_judgments": int(judgments["score"].null_count()),
            } | ({"rebalanced_away": down_sampled.height} if config.rebalance else {}),
            timing_s={"judgments": round(judging_s, 2)},
        )
        return StageOutput(tables, manifest, render_kind_card)

    return build_version(store, "eft", identity, run)



def agreement(scored: pl.DataFrame) -> pl.DataFrame:
    grouped = scored.sort("sample_index").group_by("prompt_id", maintain_order=True).agg("score_mean", "human_rank")
    rows = []
    for prompt_id, scores, ranks in grouped.sort("prompt_id").iter_rows():
        metrics = group_metrics(scores, ranks)
        agrees = metrics["exact_match"]
        reason = (None if agrees else "no_human_order" if metrics["pairs"] == 0
                  else "unscored_response" if None in scores else "disagrees_with_human_ranking")
        rows.append({"prompt_id": prompt_id, "responses": len(ranks), "ordered_pairs": metrics["pairs"],
                     "pairs_agreeing": metrics["pairs_agreeing"], "agrees": agrees, "reason": reason})
    schema = {"prompt_id": pl.String, "responses": pl.Int64, "ordered_pairs": pl.Int64, "pairs_agreeing": pl.Int64,
              "agrees": pl.Boolean, "reason": pl.String}
    return pl.DataFrame(rows, schema=schema)


def eft_examples(groups: pl.DataFrame, scored: pl.DataFrame, judgments: pl.DataFrame, prompts: pl.DataFrame,
                 template: JudgeTemplate) -> pl.DataFrame:
    """One example per response of each agreeing group: its parsed judgment closest to the response's mean."""
    kept = groups.filter(pl.col("agrees")).select("prompt_id")
    examples = (
        judgments.filter(pl.col("score").is_not_null())
        .join(kept, on="prompt_id")
        .join(scored.select("candidate_id", "response", "score_mean", "human_rank"), on="candidate_id")
        .sort((pl.col("score") - pl.col("score_mean")).abs(), "sample_index")
        .group_by("candidate_id", maintain_order=True)
        .first()
        .join(prompts.select("prompt_id", "prompt"), on="prompt_id")
        .sort("candidate_id")
    )
    judge_prompts = pl.Series("judge_prompt", [template.render(p, r) for p, r in examples.select("prompt", "response").iter_rows()], pl.String)
    return examples.with_columns(judge_prompts).select(
        "prompt_id", "candidate_id", "judgment_id", "prompt", "response", pl.col("raw").alias("judgment"), "score", "human_rank",
        pl.concat_list(turn("user", "judge_prompt"), turn("assistant", "raw")).alias("messages"),
    )


REBALANCE_RULE = "the most common score is down-sampled to the count of the next most common (seeded, by example)"


def score_counts(examples: pl.DataFrame) -> dict[str, int]:
    return {f"{score:g}": n for score, n in examples.group_by("score").len().sort("score").iter_rows()}


def rebalance(examples: pl.DataFrame, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(kept, down-sampled): the examples of the most common score are cut to the count of the next most common
    score, keeping those with the lowest seeded hash of their candidate id, so the score distribution is flatter
    (the paper's EFT rebalancing). With a single score, or two scores tied for most common, nothing changes."""
    counts = examples.group_by("score").len().sort("len", "score", descending=[True, False])
    if counts.height < 2 or counts["len"][0] == counts["len"][1]:
        return examples, examples.clear()
    top, keep = counts["score"][0], counts["len"][1]
    candidates = examples.filter(pl.col("score") == top)["candidate_id"].to_list()
    cut = sorted(candidates, key=lambda c: hashlib.sha256(f"{seed}:{c}".encode()).hexdigest())[keep:]
    down = pl.col("candidate_id").is_in(cut)
    return examples.filter(~down), examples.filter(down)


def rebalanced(down_sampled: pl.DataFrame) -> pl.DataFrame:
    """An EFT example (one judgment of a candidate) left out to flatten the score distribution."""
    return drops(down_sampled, "judgment", "rebalanced", pl.format("score {} down-sampled", pl.col("score").cast(pl.Int64)))


def ranked_format(prompts: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Groups back in the ranked seed format (prompt, responses, ranks), readable by make-eft and reward-model."""
    lists = candidates.sort("sample_index").group_by("prompt_id", maintain_order=True).agg(
        pl.col("response").alias("responses"), pl.col("human_rank").alias("ranks")
    )
    return prompts.select("prompt_id", "prompt", "source_id").join(lists, on="prompt_id").sort("prompt_id")


def rejected(groups: pl.DataFrame) -> pl.DataFrame:
    return drops(groups.filter(pl.col("reason").is_not_null()), "prompt", pl.col("reason"),
                 pl.format("{} of {} ordered pairs agree", "pairs_agreeing", "ordered_pairs"))
