"""Reward-model metrics: the model judges every response of each human-ranked group (K samples, averaged,
with the same additive template and parser as make-pairs) and its ordering is compared with the human one.

Ranked groups: JSONL/JSON/parquet/CSV rows with `prompt` (or `messages`), `responses` (a list of texts) and
`ranks` (a list of whole numbers, 1 = the human's best; equal numbers are equal ranks).
"""

import time
from dataclasses import asdict
from pathlib import Path

import polars as pl

from builder.core.manifest import Manifest
from builder.core.records import stable_hash
from builder.core.schemas import drops
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.engines.batching import engine_identity, resolve_engine
from builder.engines.generators import load_generator
from builder.engines.models import resolve_model
from builder.judging.health import scores_health
from builder.judging.metrics import group_metrics, summarise_groups
from builder.judging.score import judge_candidates
from builder.judging.setup import prepare_judge
from builder.stages.aggregate import score_candidates
from builder.stages.ranked import ranked_tables
from builder.stages.seed import load_seed
from evaluators.card import render_rm_card
from evaluators.configs import RewardModelConfig
from evaluators.plots import score_histogram


def evaluate_reward_model(config: RewardModelConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    raw, source = load_seed(config.ranked, "ranked", store)
    prompts, candidates, dropped_groups = ranked_tables(raw, source.spec, config.limit)
    setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          config.backend, config.engine_options)
    template, sampling = setup.template, setup.sampling
    judge_ref = resolve_model(config.model, store.root, config.backend == "openai")
    config = resolve_engine(config, [judge_ref], [sampling])
    engine = engine_identity(config.backend, config.dtype, config.batch_size)
    identity = {
        "input": stable_hash(candidates.select("candidate_id", "response", "human_rank").rows()),
        "judge": judge_ref.fingerprint,
        "judge_sampling": asdict(sampling),
        "judge_spec": setup.record,
        "engine": engine,
        "seed": config.seed,
    } | ({"score": config.score} if config.score != "sampled" else {})

    def run(vid: str) -> StageOutput:
        started = time.perf_counter()
        judge = load_generator(judge_ref, config.backend, config.dtype, config.batch_size, config.engine_options)
        judgments = judge_candidates(judge, setup.spec, prompts, candidates, sampling, config.seed, store, config.batch_size, setup.constraint)
        judging_s = time.perf_counter() - started
        scored = score_candidates(candidates, judgments, config.score).sort("candidate_id")
        groups = group_table(scored)
        health = scores_health(judgments, scored)
        tables = {
            "groups": groups,
            "candidates": scored,
            "judgments": judgments.sort("judgment_id"),
            "prompts": prompts,
            "dropped": pl.concat([dropped_groups, _unparsed(judgments)]),
        }
        plot = score_histogram(health["score_histogram"], f"{judge_ref.spec} on {Path(source.spec).name}")
        files = {"scores.png": plot} if plot else {}
        manifest = Manifest(
            kind="rm",
            parent=source.parent,
            inputs={"ranked": {**source.to_json(), "limit": config.limit}},
            models={"judge": {"model": judge_ref.to_json(), "engine": judge.identity}},
            sampling={"judgments": asdict(sampling)},
            judge=template.to_json() | {"spec": setup.record, "score": config.score},
            seed=config.seed,
            stats=summarise_groups(groups.to_dicts()),
            health=health,
            extra={"plots": sorted(files)},
            timing_s={"judgments": round(judging_s, 2)},
        )
        return StageOutput(tables, manifest, render_rm_card, files)

    return build_version(store, "rm", identity, run)


def group_table(scored: pl.DataFrame) -> pl.DataFrame:
    """One row per group: its metrics (metrics.group_metrics) from its responses' mean scores and human ranks."""
    grouped = scored.sort("sample_index").group_by("prompt_id", maintain_order=True).agg("score_mean", "human_rank")
    rows = [
        {"prompt_id": prompt_id, "responses": len(ranks), **group_metrics(scores, ranks)}
        for prompt_id, scores, ranks in grouped.sort("prompt_id").iter_rows()
    ]
    return pl.DataFrame(rows, schema_overrides={"spearman": pl.Float64, "kendall_tau": pl.Float64})


def _unparsed(judgments: pl.DataFrame) -> pl.DataFrame:
    return drops(judgments.filter(pl.col("parse_error").is_not_null()), "judgment", "unparsed_judgment", pl.col("parse_error"))
