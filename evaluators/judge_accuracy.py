"""`builder eval judge`: can I trust this judge? Its accuracy on pairs of answers whose order is known.

Three sources of known order, each measured on its own and reported side by side:
- verifiable: the policy answers prompts that carry constraints (N answers each, through the generation cache);
  the verifiers check every answer; an answer *passes* when it follows every constraint of its prompt. Each
  passing answer and each failing answer of the same prompt make a pair, the passing one the better.
- ranked: human-ranked groups (what `eval reward-model` reads); two responses the human ranked differently
  make a pair, the better-ranked one the better.
- pairs: labelled pairs (prompt, chosen, rejected); chosen is the better.

The judge scores every answer K times with the pointwise template (the same parser as make-pairs); an
answer's score is the mean of its parsed judgments. On a pair where both answers have a score, the judge is
right when the better answer scores higher; a tie counts ½. A pair with an unscored answer cannot give a label
in make-pairs either, so it is counted apart (`unscored`), not in the accuracy. The "longer wins" baseline
is scored on the same pairs: right when the better answer is the longer in characters, ½ when equal.
Accuracy and baseline carry Wilson 95% intervals; an interval that holds 0.5 is a judge no better than chance.
"""

import time
from dataclasses import asdict, dataclass, field

import polars as pl

from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.prompts import conversation_of, normalise, prompt_key, read_source
from builder.core.records import Sampling, stable_hash
from builder.core.schemas import CHECKS_SCHEMA, DROPPED_SCHEMA
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.engines.batching import engine_identity, resolve_engine
from builder.engines.generators import load_generator
from builder.engines.models import resolve_model
from builder.judging.health import scores_health
from builder.judging.metrics import share_with_ci
from builder.judging.score import judge_candidates
from builder.judging.setup import prepare_judge
from builder.judging.verify import check_candidates, prompt_constraints, with_checks
from builder.stages.aggregate import score_candidates
from builder.stages.make_pairs import generate_candidates
from builder.stages.ranked import ranked_tables
from builder.stages.seed import load_seed
from builder.stages.verifiable import load_verifiable
from evaluators.card import render_judge_card
from evaluators.configs import JudgeAccuracyConfig
from evaluators.plots import score_histogram

SOURCES = ("verifiable", "ranked", "pairs")


@dataclass
class Sources:
    """What the judge will be measured on: prompts, the candidates whose order is known, and where they came from."""

    verifiable: pl.DataFrame | None = None  # prompts with constraints; their answers are generated at run time
    constraints: dict = field(default_factory=dict)
    prompts: list[pl.DataFrame] = field(default_factory=list)
    known: list[pl.DataFrame] = field(default_factory=list)  # ranked and labelled candidates, with human ranks
    dropped: list[pl.DataFrame] = field(default_factory=list)
    inputs: dict[str, dict] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def parents(self) -> list[str]:
        return sorted({p for source in self.inputs.values() for p in (source.get("parent_version"), source.get("parent")) if p})


def load_sources(config: JudgeAccuracyConfig, store: Store) -> Sources:
    """Verifiable prompts when --prompts is given or nothing else is; human-ranked groups; labelled pairs."""
    found = Sources()
    if config.prompts is not None or (config.ranked is None and config.pairs is None):
        found.verifiable, source = load_verifiable(config.prompts, store, config.limit)
        found.constraints = prompt_constraints(found.verifiable)
        found.prompts.append(found.verifiable)
        found.fingerprints["verifiable"] = stable_hash(found.verifiable.select("prompt_id", "constraints").rows())
        found.inputs["verifiable"] = {**source.to_json(), "limit": config.limit, "prompts_fingerprint": found.fingerprints["verifiable"]}
    if config.ranked is not None:
        raw, source = load_seed(config.ranked, "ranked", store)
        prompts, candidates, dropped = ranked_tables(raw, source.spec, config.limit)
        found.prompts.append(prompts)
        found.known.append(candidates.with_columns(pl.lit("ranked").alias("source"), pl.col("prompt_id").alias("group_id")))
        found.dropped.append(dropped)
        found.fingerprints["ranked"] = stable_hash(candidates.select("candidate_id", "response", "human_rank").rows())
        found.inputs["ranked"] = {**source.to_json(), "limit": config.limit}
    if config.pairs is not None:
        prompts, candidates, fingerprint = labelled_pairs(config.pairs, config.limit)
        found.prompts.append(prompts)
        found.known.append(candidates)
        found.fingerprints["pairs"] = stable_hash(candidates.select("candidate_id", "response", "human_rank").rows())
        found.inputs["pairs"] = {"spec": config.pairs, "fingerprint": fingerprint, "limit": config.limit}
    return found


def evaluate_judge(config: JudgeAccuracyConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    judge_backend, judge_options = config.judge_engine()
    setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          judge_backend, judge_options)
    template, judge_sampling = setup.template, setup.sampling
    candidate_sampling = Sampling(config.n_samples, config.temperature, config.top_p, config.max_new_tokens)
    sources = load_sources(config, store)
    verifiable = sources.verifiable is not None

    judge_ref = resolve_model(config.judge, store.root, judge_backend == "openai")  # after the inputs: bad input fails first
    policy_ref = resolve_model(config.policy or config.judge, store.root, config.backend == "openai") if verifiable else None
    config = resolve_engine(config, [judge_ref, policy_ref or judge_ref], [judge_sampling] + ([candidate_sampling] if verifiable else []),
                            judge_backend)
    engine = engine_identity(config.backend, config.dtype, config.batch_size, judge_backend)
    identity = {
        "inputs": sources.fingerprints,
        "judge": judge_ref.fingerprint,
        "judgments": asdict(judge_sampling),
        "judge_spec": setup.record,
        "engine": engine,
        "seed": config.seed,
    } | ({"policy": policy_ref.fingerprint, "candidates": asdict(candidate_sampling)} if verifiable else {}) \
      | ({"judge_engine": {"backend": judge_backend}} if judge_backend != config.backend else {}) \
      | ({"score": config.score} if config.score != "sampled" else {})

    def run(vid: str) -> StageOutput:
        started = time.perf_counter()
        options = {"dtype": config.dtype, "batch_size": config.batch_size}
        judge = load_generator(judge_ref, judge_backend, **options, engine_options=judge_options)
        models = {"judge": {"model": judge_ref.to_json(), "engine": judge.identity}}
        candidates, checks, sampling = list(sources.known), pl.DataFrame(schema=CHECKS_SCHEMA), {"judgments": asdict(judge_sampling)}
        if verifiable:
            same = policy_ref == judge_ref and (config.backend, config.engine_options) == (judge_backend, judge_options)
            policy = judge if same else load_generator(policy_ref, config.backend, **options, engine_options=config.engine_options)
            answers = generate_candidates(policy, sources.verifiable, candidate_sampling, config.seed, store, config.batch_size)
            checks = check_candidates(sources.constraints, answers)
            candidates.insert(0, answers.with_columns(pl.lit("verifiable").alias("source"), pl.col("prompt_id").alias("group_id")))
            models["policy"] = {"model": policy_ref.to_json(), "engine": policy.identity}
            sampling["candidates"] = asdict(candidate_sampling)
        answers_s = time.perf_counter() - started
        candidates = pl.concat(candidates, how="diagonal_relaxed")
        if "human_rank" not in candidates.columns:  # verifiable answers only
            candidates = candidates.with_columns(pl.lit(None, pl.Int32).alias("human_rank"))
        prompts = pl.concat(sources.prompts, how="diagonal_relaxed").unique("prompt_id", keep="first", maintain_order=True)
        judgments = judge_candidates(judge, setup.spec, prompts, candidates, judge_sampling, config.seed, store, config.batch_size,
                                     setup.constraint)
        judging_s = time.perf_counter() - started - answers_s

        scored = with_checks(score_candidates(candidates, judgments, config.score), checks).sort("source", "candidate_id")
        pairs = judged_pairs(scored)
        health = scores_health(judgments, scored)
        stats = judge_stats(pairs, scored, checks, health)
        tables = {
            "judged_pairs": pairs,
            "candidates": scored,
            "judgments": judgments.sort("judgment_id"),
            "checks": checks.sort("candidate_id", "constraint_index"),
            "prompts": prompts,
            "dropped": pl.concat([*sources.dropped, _unparsed(judgments)]),
        }
        plot = score_histogram(health["score_histogram"], f"{judge_ref.spec} judging {', '.join(stats['sources'])}")
        files = {"scores.png": plot} if plot else {}
        manifest = Manifest(
            kind="judge",
            parents=sources.parents(),
            inputs=sources.inputs,
            models=models,
            sampling=sampling,
            judge=template.to_json() | {"spec": setup.record, "score": config.score},
            seed=config.seed,
            stats=stats,
            health=health,
            extra={"plots": sorted(files), "rule": "better answer scores higher: 1; equal scores: 1/2; lower: 0; unscored pairs apart"},
            timing_s={"candidates": round(answers_s, 2), "judgments": round(judging_s, 2)},
        )
        return StageOutput(tables, manifest, render_judge_card, files)

    return build_version(store, "judge", identity, run)


def labelled_pairs(spec: str, limit: int | None) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """(prompts, candidates, fingerprint) from rows of prompt, chosen, rejected: texts, or TRL's conversational
    lists (the prompt's messages; an answer is its last message's content). Every row is a group of its own, so
    a prompt may have several labelled pairs."""
    raw, source = read_source(spec, None, what="labelled pairs")
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in raw.columns]
    if missing:
        raise BuilderError(f"{spec} needs prompt, chosen and rejected columns (missing: {', '.join(missing)})")
    raw = raw.head(limit) if limit else raw
    candidates = []
    conversations = []
    for row, (prompt, chosen, rejected) in enumerate(raw.select("prompt", "chosen", "rejected").iter_rows()):
        conversation = conversation_of(prompt, spec, row)
        if not conversation:
            raise BuilderError(f"{spec} row {row}: empty prompt")
        conversations.append(conversation)
        prompt_id = prompt_key(conversation)
        for index, (side, answer) in enumerate((("chosen", chosen), ("rejected", rejected))):
            candidates.append({"candidate_id": f"{prompt_id}-p{row}-{side}", "prompt_id": prompt_id, "sample_index": index,
                               "response": _answer_text(answer, spec, row), "human_rank": index + 1, "source": "pairs",
                               "group_id": f"p{row}"})
    if not candidates:
        raise BuilderError(f"{spec} has no rows")
    prompts, _ = normalise(pl.DataFrame({"messages": conversations}), spec, None)
    schema = {"sample_index": pl.Int32, "human_rank": pl.Int32}
    return prompts, pl.DataFrame(candidates, schema_overrides=schema), source.fingerprint


def _answer_text(value, spec: str, row: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and isinstance(value[-1].get("content"), str):
        return value[-1]["content"]
    raise BuilderError(f"{spec} row {row}: chosen and rejected must be texts or message lists")


def judged_pairs(scored: pl.DataFrame) -> pl.DataFrame:
    """Every two answers of a group whose order is known (verifiable: passing over failing; ranked and pairs:
    the better human rank), with the judge's outcome and the longer-wins baseline's credit."""
    grade = (pl.when(pl.col("source") == "verifiable").then(pl.col("passed").cast(pl.Int32))
             .otherwise(-pl.col("human_rank").cast(pl.Int32)))
    graded = scored.select("source", "group_id", "prompt_id", "candidate_id", grade.alias("grade"), "score_mean",
                           pl.col("response").str.len_chars().cast(pl.Int64).alias("chars")).filter(pl.col("grade").is_not_null())
    better, worse = pl.col("score_mean"), pl.col("score_mean_worse")
    credit = lambda a, b: pl.when(a > b).then(1.0).when(a == b).then(0.5).otherwise(0.0)  # noqa: E731
    return (
        graded.join(graded, on=["source", "group_id"], suffix="_worse")
        .filter(pl.col("grade") > pl.col("grade_worse"))
        .select(
            pl.format("{}>{}", "candidate_id", "candidate_id_worse").alias("pair_id"),
            "source", "group_id", "prompt_id",
            pl.col("candidate_id").alias("better_id"), pl.col("candidate_id_worse").alias("worse_id"),
            better.alias("score_better"), worse.alias("score_worse"),
            pl.when(better.is_null() | worse.is_null()).then(pl.lit("unscored"))
            .when(better > worse).then(pl.lit("correct")).when(better == worse).then(pl.lit("tie")).otherwise(pl.lit("wrong"))
            .alias("outcome"),
            pl.when(better.is_null() | worse.is_null()).then(None).otherwise(credit(better, worse)).alias("credit"),
            pl.col("chars").alias("chars_better"), pl.col("chars_worse"),
            credit(pl.col("chars"), pl.col("chars_worse")).alias("longer_credit"),
        )
        .sort("source", "pair_id")
    )


def source_summary(pairs: pl.DataFrame) -> dict:
    """The judge's accuracy on one source's pairs (ties ½, unscored apart), with the longer-wins baseline."""
    judged = pairs.filter(pl.col("outcome") != "unscored")
    n = judged.height
    outcomes = dict(judged.group_by("outcome").len().iter_rows())
    accuracy = share_with_ci(float(judged["credit"].sum()), n)
    longer = share_with_ci(float(judged["longer_credit"].sum()), n)
    return {
        "groups": pairs["group_id"].n_unique(),
        "pairs": pairs.height,
        "judged_pairs": n,
        "unscored_pairs": pairs.height - n,
        "correct": outcomes.get("correct", 0),
        "ties": outcomes.get("tie", 0),
        "wrong": outcomes.get("wrong", 0),
        "accuracy": accuracy["share"],
        "low": accuracy["low"],
        "high": accuracy["high"],
        "tie_rate": outcomes.get("tie", 0) / n if n else None,
        "longer_wins": longer["share"],
        "longer_low": longer["low"],
        "longer_high": longer["high"],
    }


def judge_stats(pairs: pl.DataFrame, scored: pl.DataFrame, checks: pl.DataFrame, health: dict) -> dict:
    present = [s for s in SOURCES if s in set(scored["source"].to_list())]
    sources = {s: source_summary(pairs.filter(pl.col("source") == s)) for s in present}
    headline_source = next((s for s in present if sources[s]["judged_pairs"]), present[0] if present else None)
    head = sources.get(headline_source, {})
    stats = {
        "headline": {
            "source": headline_source, "accuracy": head.get("accuracy"), "low": head.get("low"), "high": head.get("high"),
            "judged_pairs": head.get("judged_pairs", 0),
            "chance_in_interval": None if head.get("low") is None else head["low"] <= 0.5 <= head["high"],
        },
        "sources": sources,
        "judgments": health["judgments"],
        "parse_rate": None if health["parse_failure_rate"] is None else round(1 - health["parse_failure_rate"], 4),
        "score_histogram": health["score_histogram"],
    }
    if "verifiable" in present:
        answers = scored.filter(pl.col("source") == "verifiable")
        by_prompt = answers.group_by("prompt_id").agg(pl.col("passed").sum().alias("passing"), pl.len().alias("answers"))
        kinds = checks.group_by("kind").agg(pl.col("passed").mean().round(3)).sort("kind")
        followed = share_with_ci(int(answers["passed"].sum()), answers.height)
        stats["verifiable"] = {
            "prompts": by_prompt.height,
            "answers": answers.height,
            "answers_passing": int(answers["passed"].sum()),
            "pass_rate": followed["share"],  # the policy's share of fully followed instructions, over answers
            "pass_rate_low": followed["low"],
            "pass_rate_high": followed["high"],
            "constraint_pass_rate": round(float(checks["passed"].mean()), 4) if checks.height else None,
            "prompts_all_pass": by_prompt.filter(pl.col("passing") == pl.col("answers")).height,
            "prompts_none_pass": by_prompt.filter(pl.col("passing") == 0).height,
            "prompts_with_pairs": by_prompt.filter((pl.col("passing") > 0) & (pl.col("passing") < pl.col("answers"))).height,
            "kind_pass_rate": dict(kinds.iter_rows()),
        }
    return stats


def measurement(version: Version) -> dict:
    """What a judge version says about its judge, for registries and gates: the headline figures and where they came from."""
    m = version.manifest
    head = m.stats.get("headline", {})
    return {"version": version.id, "judge": m.model_spec("judge"), "fingerprint": m.models["judge"]["model"]["fingerprint"],
            "template_sha256": (m.judge or {}).get("sha256"), "created_at": m.created_at, **head}


def _unparsed(judgments: pl.DataFrame) -> pl.DataFrame:
    return judgments.filter(pl.col("parse_error").is_not_null()).select(
        pl.lit("judgment").alias("level"), "prompt_id", "candidate_id", "judgment_id",
        pl.lit("unparsed_judgment").alias("reason"), pl.col("parse_error").alias("detail"),
    ).cast(DROPPED_SCHEMA)

