"""Head-to-head: answers of A and B to the same prompts, each pair judged in both orders, one verdict dataset.

Several matches go into one version (A1 vs B1, A2 vs B2 …, or every A vs one baseline B), so that a run
over the iterations of a loop gives one table and one plot.
"""

import time
from dataclasses import asdict

import numpy as np
import polars as pl

from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.prompts import load_prompts
from builder.core.records import Constraint, Sampling, stable_hash
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.engines.batching import engine_identity, resolve_engine
from builder.engines.generators import Generator, load_generator
from builder.engines.models import ModelRef, resolve_model
from builder.engines.options import EngineOptions
from builder.judging.metrics import length_controlled_win_rate, shares_with_ci
from builder.judging.pairwise import (
    PairwiseTemplate,
    both_orders,
    outcome,
    position_flip,
)
from builder.judging.parsers import final_verdict_line, get_parser
from builder.judging.setup import prepare_judge
from evaluators.answers import (
    Contestant,
    aligned,
    generate_answers,
    labelled,
    read_answers,
    resolve_contestant,
)
from evaluators.card import render_h2h_card
from evaluators.configs import HeadToHeadConfig
from evaluators.plots import outcome_bars


def head_to_head(config: HeadToHeadConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    sampling = lambda temperature: Sampling(1, temperature, config.top_p, config.max_new_tokens)
    a_side = [resolve_contestant(spec, sampling(config.a_temperature), store, config.backend == "openai") for spec in config.a]
    b_side = [resolve_contestant(spec, sampling(config.b_temperature), store, config.backend == "openai") for spec in config.b]
    contestants = labelled(list({c: None for c in a_side + b_side}))
    by_key = {(c.spec, c.sampling): c for c in contestants}
    a_side, b_side = [by_key[c.spec, c.sampling] for c in a_side], [by_key[c.spec, c.sampling] for c in b_side]
    matches = list(zip(a_side, b_side * len(a_side) if len(b_side) == 1 else b_side))
    for a, b in matches:
        if a == b:
            raise BuilderError(f"{a.label} cannot play itself")

    answer_files = {c: read_answers(c, store) for c in contestants if c.kind != "model"}
    if config.prompts is None and answer_files and len(answer_files) == len(contestants):
        reference, (prompts, _) = next(iter(answer_files.items()))
        prompts, source_spec, source_fingerprint = prompts.head(config.limit) if config.limit else prompts, reference.spec, reference.fingerprint
    else:
        prompts, _, source = load_prompts(config.prompts, store, config.limit)
        source_spec, source_fingerprint = source.spec, source.fingerprint
    for c, (_, answers) in answer_files.items():
        aligned(answers, prompts, c, source_spec)  # fail before any model is loaded

    judge_backend, judge_options = config.judge_engine()
    setup = prepare_judge("pairwise", config.judge_template, 1, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          judge_backend, judge_options)
    template, judge_sampling = setup.template, setup.sampling
    judge_ref = resolve_model(config.judge, store.root, judge_backend == "openai")
    generating = [c for c in contestants if c.model is not None]
    config = resolve_engine(config, [judge_ref] + [c.model for c in generating], [judge_sampling] + [c.sampling for c in generating],
                            judge_backend)
    engine = engine_identity(config.backend, config.dtype, config.batch_size, judge_backend)
    identity = {
        "input": stable_hash(prompts["prompt_id"].to_list()),
        "contestants": [c.to_json() for c in contestants],
        "matches": [[a.label, b.label] for a, b in matches],
        "judge": judge_ref.fingerprint,
        "judge_sampling": asdict(judge_sampling),
        "judge_spec": setup.record,
        "engine": engine,
        "seed": config.seed,
    } | ({"judge_engine": {"backend": judge_backend}} if judge_backend != config.backend else {})
    def run(vid: str) -> StageOutput:
        started = time.perf_counter()
        generators: dict[tuple[ModelRef, str, EngineOptions], Generator] = {}

        def load(ref: ModelRef, backend: str = config.backend, options: EngineOptions = config.engine_options) -> Generator:
            if (ref, backend, options) not in generators:
                generators[ref, backend, options] = load_generator(ref, backend, config.dtype, config.batch_size, options)
            return generators[ref, backend, options]

        answers = {}
        for c in contestants:
            found = answer_files[c][1] if c in answer_files else generate_answers(load(c.model), c, prompts, config.seed, store, config.batch_size)
            answers[c] = aligned(found, prompts, c, source_spec)
        answers_s = time.perf_counter() - started

        pairs = pl.concat([match_rows(a, b, prompts, answers[a], answers[b]) for a, b in matches])
        judge = load(judge_ref, judge_backend, judge_options)
        verdicts = judge_pairs(judge, template, pairs, judge_sampling, config.seed, store, config.batch_size, setup.constraint,
                               get_parser(setup.spec.parser))
        judging_s = time.perf_counter() - started - answers_s

        summary = summarise(verdicts, [f"{a.label} vs {b.label}" for a, b in matches])
        tables = {
            "prompts": prompts,
            "answers": pl.concat([answers[c].select(pl.lit(c.label).alias("contestant"), pl.all()) for c in contestants]),
            "verdicts": verdicts,
            "summary": summary,
        }
        plot = outcome_bars(summary.to_dicts())
        files = {"outcomes.png": plot} if plot else {}
        manifest = Manifest(
            kind="h2h",
            inputs={"prompts": {"spec": source_spec, "fingerprint": source_fingerprint, "limit": config.limit,
                                "prompts_fingerprint": identity["input"]}},
            models={"judge": {"model": judge_ref.to_json(), "engine": judge.identity}},
            sampling={"judgments": asdict(judge_sampling)},
            judge=template.to_json() | {"spec": setup.record},
            seed=config.seed,
            extra={"contestants": [c.to_json() | ({"model": c.model.to_json()} if c.model else {}) for c in contestants],
                   "matches": identity["matches"], "plots": sorted(files)},
            stats={"matches": summary.to_dicts()},
            timing_s={"answers": round(answers_s, 2), "judgments": round(judging_s, 2)},
        )
        return StageOutput(tables, manifest, render_h2h_card, files)

    return build_version(store, "h2h", identity, run)


def match_rows(a: Contestant, b: Contestant, prompts: pl.DataFrame, answers_a: pl.DataFrame, answers_b: pl.DataFrame) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "match": f"{a.label} vs {b.label}",
            "a": a.label,
            "b": b.label,
            "prompt_id": prompts["prompt_id"],
            "prompt": prompts["prompt"],
            "answer_a": answers_a["response"],
            "answer_b": answers_b["response"],
            "len_a": answers_a["n_chars"],
            "len_b": answers_b["n_chars"],
        }
    )


def judge_pairs(
    judge: Generator, template: PairwiseTemplate, pairs: pl.DataFrame, sampling: Sampling, seed: int, store: Store, batch_size: int,
    constraint: Constraint | None = None, parser=final_verdict_line,
) -> pl.DataFrame:
    """Both orders of every pair, through the judge's generation cache; then the per-order and final verdicts."""
    rows = pairs.select("prompt", "answer_a", "answer_b").rows()
    judged = pairs.with_columns(both_orders(judge, template, rows, sampling, seed, store, batch_size, constraint, parser))
    return judged.with_columns(outcome().alias("outcome"), position_flip().alias("position_flip"))


def summarise(verdicts: pl.DataFrame, matches: list[str]) -> pl.DataFrame:
    return pl.DataFrame([match_summary(verdicts.filter(pl.col("match") == m), m) for m in matches])


def match_summary(verdicts: pl.DataFrame, match: str) -> dict:
    counts = dict(verdicts.group_by("outcome").len().iter_rows())
    shares = shares_with_ci(counts)
    decided = verdicts.filter(pl.col("outcome") != "unparsed")
    preference = preference_values(decided["outcome"])
    lc = length_controlled_win_rate((decided["len_a"] - decided["len_b"]).to_numpy(), preference)
    per_order = pl.concat([verdicts["verdict_ab"], verdicts["verdict_ba"]])
    first_or_second = per_order.filter(per_order.is_in(["1", "2"]))
    decisive = decided.filter(pl.col("outcome") != "tie")
    longer_won = (decisive["outcome"] == "win") == (decisive["len_a"] > decisive["len_b"])
    return {
        "match": match,
        "a": verdicts["a"][0],
        "b": verdicts["b"][0],
        "prompts": verdicts.height,
        "decided": decided.height,
        "unparsed": counts.get("unparsed", 0),
        "unparsed_judgments": per_order.null_count(),
        **{f"{k}_{part}": shares[k][key] for k in ("win", "tie", "loss") for part, key in (("rate", "share"), ("low", "low"), ("high", "high"))},
        "win_rate_ties_half": float(preference.mean()) if preference.size else None,
        "lc_win_rate": lc["win_rate"],
        "lc_low": lc["low"],
        "lc_high": lc["high"],
        "lc_intercept": lc["intercept"],
        "lc_slope": lc["slope"],
        "lc_scale_chars": lc["scale"],
        "position_flip_rate": verdicts["position_flip"].mean(),
        "first_position_win_rate": (first_or_second == "1").mean() if first_or_second.len() else None,
        "longer_answer_won_rate": longer_won.mean() if decisive.height else None,
        "mean_chars_a": verdicts["len_a"].mean(),
        "mean_chars_b": verdicts["len_b"].mean(),
        "median_chars_a": verdicts["len_a"].median(),
        "median_chars_b": verdicts["len_b"].median(),
    }


def preference_values(outcomes: pl.Series) -> np.ndarray:
    """A's preference as a number: a win 1, a tie 0.5, a loss 0."""
    return outcomes.replace_strict({"win": 1.0, "tie": 0.5, "loss": 0.0}, return_dtype=pl.Float64).to_numpy()
