"""One iteration's data: prompts → N candidates each → K judgments each → averaged scores → pairs.

Every stage is a pure function of the tables before it, except the two generation stages, which go through
the generation cache so that a killed run continues where it stopped and gives the same version.
"""

import time
from dataclasses import asdict, dataclass, replace

import polars as pl

from builder.core.errors import BuilderError
from builder.core.prompts import load_prompts
from builder.core.records import (
    Completion,
    Request,
    Sampling,
    make_request,
    stable_hash,
)
from builder.core.schemas import CANDIDATES_SCHEMA
from builder.core.stats import pairs_stats
from builder.core.store import Store, Version, version_id
from builder.engines.generators import (
    Generator,
    load_generator,
    resolve_dtype,
)
from builder.engines.models import resolve_model
from builder.engines.options import EngineOptions, judge_engine
from builder.engines.runner import run_requests
from builder.judging.health import pairs_health
from builder.judging.judgment_stats import judgment_stats
from builder.judging.score import judge_candidates
from builder.judging.setup import check_judge_options, prepare_judge
from builder.stages.aggregate import SCORE_COLUMNS, build_labels
from builder.stages.pairs_card import render_pairs_card


@dataclass(frozen=True)
class MakePairsConfig:
    model: str | None = None  # None: the embedded default
    judge: str | None = None  # None: the policy judges itself
    prompts: str | None = None  # None: the shipped sample prompts
    limit: int | None = None
    n_samples: int = 4
    n_judgments: int = 3
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    judge_temperature: float | None = None  # None: the judge's default (judge.yaml)
    judge_top_p: float | None = None
    judge_max_new_tokens: int | None = None
    judge_template: str | None = None  # a template file or a judge folder; None: the shipped additive 5-point judge
    judge_constraint: str = "on"  # on: guided decoding where the judge's backend offers it; off: free text
    rationale_min_chars: int | None = None  # None: the judge's default
    rationale_max_chars: int | None = None
    score: str = "sampled"  # sampled (the paper's) | expected (mean of 0–5 under the judge's probabilities)
    seed: int = 0
    backend: str = "transformers"
    batch_size: int = 16
    dtype: str = "auto"  # bfloat16 on a GPU, float32 on a CPU
    engine_options: EngineOptions = EngineOptions()
    judge_backend: str | None = None  # None: the policy's backend and options
    judge_engine_options: EngineOptions | None = None

    def validate(self) -> None:
        if self.score not in SCORE_COLUMNS:
            raise BuilderError(f"--score must be one of {', '.join(SCORE_COLUMNS)}")
        check_judge_options(self.judge_temperature, self.judge_top_p, self.judge_max_new_tokens, self.judge_constraint)
        for name in ("n_samples", "n_judgments", "max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise BuilderError(f"--{name.replace('_', '-')} must be at least 1")
        if self.n_samples < 2:
            raise BuilderError("--n-samples must be at least 2: a pair needs two candidates")
        if self.limit is not None and self.limit < 1:
            raise BuilderError("--limit must be at least 1")
        if self.temperature < 0:
            raise BuilderError("--temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise BuilderError("--top-p must be in (0, 1]")


def make_pairs(config: MakePairsConfig, store: Store) -> tuple[Version, bool]:
    """Build (or find) the version for this configuration. Returns (version, built_now)."""
    config.validate()
    config = replace(config, dtype=resolve_dtype(config.dtype))
    prompts, dropped_prompts, source = load_prompts(config.prompts, store, config.limit)
    judge_backend, judge_options = judge_engine(config.backend, config.engine_options, config.judge_backend, config.judge_engine_options)
    setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          judge_backend, judge_options)
    spec, template, judge_sampling, constraint, judge_spec = setup.spec, setup.template, setup.sampling, setup.constraint, setup.record
    policy_ref = resolve_model(config.model, store.root, config.backend == "openai")
    judge_ref = policy_ref if config.judge is None else resolve_model(config.judge, store.root, judge_backend == "openai")
    candidate_sampling = Sampling(config.n_samples, config.temperature, config.top_p, config.max_new_tokens)
    engine = {"backend": config.backend, "dtype": config.dtype, "batch_size": config.batch_size}
    identity = {
        "input": stable_hash(prompts["prompt_id"].to_list()),
        "policy": policy_ref.fingerprint,
        "judge": judge_ref.fingerprint,
        "engine": engine,
        "candidates": asdict(candidate_sampling),
        "judgments": asdict(judge_sampling),
        "judge_spec": judge_spec,
        "score": config.score,
        "seed": config.seed,
    } | ({"judge_engine": {"backend": judge_backend}} if judge_backend != config.backend else {})
    vid = version_id("pairs", identity)
    if store.exists(vid):
        return store.load(vid), False

    options = {"dtype": config.dtype, "batch_size": config.batch_size, "engine_options": config.engine_options}
    policy = load_generator(policy_ref, config.backend, **options)
    same_engine = judge_ref == policy_ref and (judge_backend, judge_options) == (config.backend, config.engine_options)
    judge = policy if same_engine else load_generator(judge_ref, judge_backend, **options | {"engine_options": judge_options})

    started = time.perf_counter()
    candidates = generate_candidates(policy, prompts, candidate_sampling, config.seed, store, config.batch_size)
    candidates_s = time.perf_counter() - started
    judgments = judge_candidates(judge, spec, prompts, candidates, judge_sampling, config.seed, store, config.batch_size, constraint)
    judgments_s = time.perf_counter() - started - candidates_s

    scored, pairs, dropped = build_labels(prompts, candidates, judgments, config.score)
    tables = {
        "prompts": prompts,
        "candidates": scored.sort("candidate_id"),
        "judgments": judgments.sort("judgment_id"),
        "pairs": pairs,
        "dropped": pl.concat([dropped_prompts, dropped]).sort("level", "prompt_id", "candidate_id", "judgment_id", nulls_last=True),
    }
    manifest = {
        "kind": "pairs",
        "parent": source.parent_version,
        "policy": {"model": policy_ref.to_json(), "engine": policy.identity},
        "judge": {"model": judge_ref.to_json(), "engine": judge.identity},
        "sampling": {"candidates": asdict(candidate_sampling), "judgments": asdict(judge_sampling), "seed": config.seed},
        "seed": config.seed,
        "judge_template": template.to_json(),
        "judge_spec": judge_spec,
        "score": config.score,
        "input": {**source.to_json(), "limit": config.limit, "prompts_fingerprint": identity["input"]},
        "identity": identity,
        "stats": pairs_stats(tables) | judgment_stats(judgments, constraint, judge_sampling.max_new_tokens)
        | {"tie_rate_by_score": tie_rates(prompts, candidates, judgments)},
        "health": pairs_health(tables),
        "timing_s": {"candidates": round(candidates_s, 2), "judgments": round(judgments_s, 2)},
    }
    return store.write_version(vid, tables, manifest, render_pairs_card), True


def tie_rates(prompts: pl.DataFrame, candidates: pl.DataFrame, judgments: pl.DataFrame) -> dict:
    """The tie rate each scoring would give on the same judgments (expected: where the judge reported probabilities)."""
    rates = {}
    for score in SCORE_COLUMNS:
        _, _, dropped = build_labels(prompts, candidates, judgments, score)
        rates[score] = round(dropped.filter(pl.col("reason") == "tie").height / prompts.height, 4) if prompts.height else None
    return rates


def generate_candidates(policy: Generator, prompts: pl.DataFrame, sampling: Sampling, seed: int, store: Store, batch_size: int) -> pl.DataFrame:
    requests = candidate_requests(policy, prompts, sampling, seed)
    answers = run_requests(policy, requests, store.generation_cache(policy.identity), batch_size, "candidates")
    rows = [
        _candidate_row(prompt_id, index, request.key, completion)
        for prompt_id, request in zip(prompts["prompt_id"].to_list(), requests)
        for index, completion in enumerate(answers[request.key])
    ]
    return pl.DataFrame(rows, schema=CANDIDATES_SCHEMA)


def candidate_requests(policy: Generator, prompts: pl.DataFrame, sampling: Sampling, seed: int) -> list[Request]:
    return [make_request(policy.identity, messages, sampling, seed) for messages in prompts["messages"].to_list()]


def _candidate_row(prompt_id: str, index: int, key: str, completion: Completion) -> dict:
    return {
        "candidate_id": f"{prompt_id}-c{index}",
        "prompt_id": prompt_id,
        "sample_index": index,
        "response": completion.text,
        "finish_reason": completion.finish_reason,
        "n_tokens": completion.n_tokens,
        "request_key": key,
    }


