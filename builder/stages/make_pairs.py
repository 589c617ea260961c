"""One iteration's data: prompts → N candidates each → K judgments each → averaged scores → pairs.

Every stage is a pure function of the tables before it, except the two generation stages, which go through
the generation cache so that a killed run continues where it stopped and gives the same version.
"""

import time
from dataclasses import asdict

import polars as pl

from builder.core.manifest import Manifest
from builder.core.prompts import load_prompts
from builder.core.records import (
    Request,
    Sampling,
    make_request,
    request_key,
    stable_hash,
)
from builder.core.registry import judge_label_quality
from builder.core.schemas import CANDIDATES_SCHEMA
from builder.core.stage import StageOutput, build_version
from builder.core.stats import pairs_stats
from builder.core.store import Store, Version
from builder.engines.batching import engine_identity, resolve_engine
from builder.engines.generators import Generator, load_generator
from builder.engines.models import resolve_model
from builder.engines.runner import answer_lazily
from builder.judging.health import pairs_health
from builder.judging.judgment_stats import judgment_stats
from builder.judging.score import judge_candidates
from builder.judging.setup import prepare_judge
from builder.judging.verify import check_candidates, label_quality, prompt_constraints
from builder.stages.aggregate import CHECKS_FIRST, JUDGE_ONLY, LENGTH_CONTROL_RULE, RULES, SCORE_COLUMNS, build_labels, select_pairs
from builder.stages.configs import MakePairsConfig
from builder.stages.fit_context import context_record, drop_too_long
from builder.stages.pairs_card import render_pairs_card


def make_pairs(config: MakePairsConfig, store: Store) -> tuple[Version, bool]:
    """Build (or find) the version for this configuration. Returns (version, built_now)."""
    config.validate()
    prompts, dropped_prompts, source = load_prompts(config.prompts, store, config.limit)
    judge_backend, judge_options = config.judge_engine()
    setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          judge_backend, judge_options)
    spec, template, judge_sampling, constraint, judge_spec = setup.spec, setup.template, setup.sampling, setup.constraint, setup.record
    policy_ref = resolve_model(config.model, store.root, config.backend == "openai")
    judge_ref = policy_ref if config.judge is None else resolve_model(config.judge, store.root, judge_backend == "openai")
    candidate_sampling = Sampling(config.n_samples, config.temperature, config.top_p, config.max_new_tokens)
    config = resolve_engine(config, [policy_ref, judge_ref], [candidate_sampling, judge_sampling], judge_backend)
    engine = engine_identity(config.backend, config.dtype, config.batch_size, judge_backend)
    identity = {
        "input": stable_hash(prompts.select("prompt_id", "source", "source_row", "source_id").rows()),
        "policy": policy_ref.fingerprint,
        "judge": judge_ref.fingerprint,
        "engine": engine,
        "candidates": asdict(candidate_sampling),
        "judgments": asdict(judge_sampling),
        "judge_spec": judge_spec,
        "score": config.score,
        "seed": config.seed,
    } | ({"judge_engine": {"backend": judge_backend}} if judge_backend != config.backend else {}) \
      | ({"length_control": config.length_control} if config.length_control is not None else {}) \
      | ({"labels": {"rule": CHECKS_FIRST}} if config.verify else {})  # off: the identity (and id) of earlier versions
    constraints = prompt_constraints(prompts)
    rule = CHECKS_FIRST if config.verify else JUDGE_ONLY

    def run(vid: str) -> StageOutput:
        options = {"dtype": config.dtype, "batch_size": config.batch_size, "engine_options": config.engine_options}
        policy = load_generator(policy_ref, config.backend, **options)
        same_engine = judge_ref == policy_ref and (judge_backend, judge_options) == (config.backend, config.engine_options)
        judge = policy if same_engine else load_generator(judge_ref, judge_backend, **options | {"engine_options": judge_options})
        fitting, too_long = drop_too_long(prompts, policy, judge, template, config.max_new_tokens, config.judge_max_new_tokens)

        started = time.perf_counter()
        candidates = generate_candidates(policy, fitting, candidate_sampling, config.seed, store, config.batch_size)
        candidates_s = time.perf_counter() - started
        judgments = judge_candidates(judge, spec, fitting, candidates, judge_sampling, config.seed, store, config.batch_size, constraint)
        judgments_s = time.perf_counter() - started - candidates_s

        checks = check_candidates(constraints, candidates) if constraints else None
        scored, pairs, dropped = build_labels(fitting, candidates, judgments, checks, rule, config.length_control, config.score)
        tables = {
            "prompts": fitting,
            "candidates": scored.sort("candidate_id"),
            "judgments": judgments.sort("judgment_id"),
            "pairs": pairs,
            "dropped": pl.concat([dropped_prompts, too_long, dropped]).sort("level", "prompt_id", "candidate_id", "judgment_id", nulls_last=True),
        } | ({"checks": checks.sort("candidate_id", "constraint_index")} if checks is not None else {})
        quality = label_quality(pairs)
        if not quality["verified_pairs"]:
            quality |= judge_label_quality(store, judge_ref.fingerprint, template.sha256)
        else:
            quality["basis"] = "verifiers"
        extra = {"context": context_record(policy, judge), "batch_size": config.batch_size,
                 "labels": {"rule": rule, "text": RULES[rule], "verified_prompts": len(constraints)}}
        if config.length_control is not None:
            extra["length_control"] = length_control_record(fitting, scored, pairs, config.length_control)
        manifest = Manifest(
            kind="pairs",
            parent=source.parent_version,
            inputs={"prompts": {**source.to_json(), "limit": config.limit, "prompts_fingerprint": identity["input"]}},
            models={"policy": {"model": policy_ref.to_json(), "engine": policy.identity},
                    "judge": {"model": judge_ref.to_json(), "engine": judge.identity}},
            sampling={"candidates": asdict(candidate_sampling), "judgments": asdict(judge_sampling)},
            judge=template.to_json() | {"spec": judge_spec, "score": config.score},
            seed=config.seed,
            stats=pairs_stats(tables) | judgment_stats(judgments, constraint, judge_sampling.max_new_tokens)
            | {"tie_rate_by_score": tie_rates(fitting, candidates, judgments), "label_quality": quality},
            health=pairs_health(tables),
            extra=extra,
            timing_s={"candidates": round(candidates_s, 2), "judgments": round(judgments_s, 2)},
        )
        return StageOutput(tables, manifest, render_pairs_card)

    return build_version(store, "pairs", identity, run)


def length_control_record(prompts: pl.DataFrame, scored: pl.DataFrame, pairs: pl.DataFrame, rho: float) -> dict:
    """The rule, its parameter, and what it changed: the chosen-minus-rejected length gap with and without it."""
    plain, _ = select_pairs(prompts, scored)
    changed = pairs.join(plain.select("prompt_id", pl.col("chosen_id").alias("plain_id")), on="prompt_id")
    return {
        "rho": rho, "rule": LENGTH_CONTROL_RULE,
        "chosen_changed": changed.filter(pl.col("chosen_id") != pl.col("plain_id")).height,
        "chosen_minus_rejected_tokens": _mean_gap(pairs), "chosen_minus_rejected_tokens_without": _mean_gap(plain),
    }


def _mean_gap(pairs: pl.DataFrame) -> float | None:
    gap = (pairs["chosen_tokens"] - pairs["rejected_tokens"]).mean()
    return None if gap is None else round(gap, 2)


def tie_rates(prompts: pl.DataFrame, candidates: pl.DataFrame, judgments: pl.DataFrame) -> dict:
    """The tie rate each scoring would give on the same judgments (expected: where the judge reported probabilities)."""
    rates = {}
    for score in SCORE_COLUMNS:
        _, _, dropped = build_labels(prompts, candidates, judgments, score=score)
        rates[score] = round(dropped.filter(pl.col("reason") == "tie").height / prompts.height, 4) if prompts.height else None
    return rates


def generate_candidates(policy: Generator, prompts: pl.DataFrame, sampling: Sampling, seed: int, store: Store, batch_size: int) -> pl.DataFrame:
    asked = pl.concat(
        [
            pl.DataFrame(
                {
                    "key": [request_key(policy.identity, m, sampling, seed) for m in chunk],
                    "length": [sum(len(turn["content"]) for turn in m) for m in chunk],
                },
                schema={"key": pl.String, "length": pl.Int64},
            )
            for chunk in (part["messages"].to_list() for part in prompts.select("messages").iter_slices(1 << 16))
        ]
    )

    def build(rows: list[int]) -> list[Request]:
        return [make_request(policy.identity, m, sampling, seed) for m in prompts["messages"][rows].to_list()]

    answers = answer_lazily(policy, asked, build, store.generation_cache(policy.identity), batch_size, "candidates")
    return (
        prompts.select("prompt_id", asked["key"].alias("request_key"))
        .with_row_index("order")
        .join(answers, left_on="request_key", right_on="key")
        .sort("order", "sample")
        .select(
            pl.format("{}-c{}", "prompt_id", "sample").alias("candidate_id"),
            "prompt_id",
            pl.col("sample").alias("sample_index"),
            pl.col("text").alias("response"),
            "finish_reason",
            "n_tokens",
            "request_key",
        )
        .cast(CANDIDATES_SCHEMA)
    )


def candidate_requests(policy: Generator, prompts: pl.DataFrame, sampling: Sampling, seed: int) -> list[Request]:
    return [make_request(policy.identity, messages, sampling, seed) for messages in prompts["messages"].to_list()]
