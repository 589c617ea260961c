"""Reward-model metrics: the model judges every response of each human-ranked group (K samples, averaged,
with the same additive template and parser as make-pairs) and its ordering is compared with the human one.

Ranked groups: JSONL/JSON/parquet/CSV rows with `prompt` (or `messages`), `responses` (a list of texts) and
`ranks` (a list of whole numbers, 1 = the human's best; equal numbers are equal ranks).
"""

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import polars as pl

from builder.core.errors import BuilderError
from builder.core.records import file_sha256, stable_hash
from builder.core.schemas import DROPPED_SCHEMA
from builder.core.store import Store, Version, version_id
from builder.engines.generators import load_generator, resolve_dtype
from builder.engines.models import resolve_model
from builder.engines.options import EngineOptions
from builder.judging.health import scores_health
from builder.judging.metrics import group_metrics, summarise_groups
from builder.judging.score import judge_candidates
from builder.judging.setup import check_judge_options, prepare_judge
from builder.stages.aggregate import score_candidates
from builder.stages.ranked import load_ranked_groups
from evaluators.card import render_rm_card
from evaluators.plots import score_histogram


@dataclass(frozen=True)
class RewardModelConfig:
    ranked: str
    model: str | None = None  # None: the embedded default
    limit: int | None = None
    n_judgments: int = 3
    judge_temperature: float | None = None  # None: the judge's default (judge.yaml)
    judge_top_p: float | None = None
    judge_max_new_tokens: int | None = None
    judge_template: str | None = None  # a template file or a judge folder
    judge_constraint: str = "on"
    rationale_min_chars: int | None = None
    rationale_max_chars: int | None = None
    seed: int = 0
    backend: str = "transformers"
    batch_size: int = 16
    dtype: str = "auto"  # bfloat16 on a GPU, float32 on a CPU
    engine_options: EngineOptions = EngineOptions()

    def validate(self) -> None:
        check_judge_options(self.judge_temperature, self.judge_top_p, self.judge_max_new_tokens, self.judge_constraint)
        for name in ("n_judgments", "batch_size"):
            if getattr(self, name) < 1:
                raise BuilderError(f"--{name.replace('_', '-')} must be at least 1")
        if self.limit is not None and self.limit < 1:
            raise BuilderError("--limit must be at least 1")


def evaluate_reward_model(config: RewardModelConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    config = replace(config, dtype=resolve_dtype(config.dtype))
    prompts, candidates, dropped_groups = load_ranked_groups(config.ranked, config.limit)
    setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          config.backend, config.engine_options)
    template, sampling = setup.template, setup.sampling
    judge_ref = resolve_model(config.model, store.root, config.backend == "openai")
    engine = {"backend": config.backend, "dtype": config.dtype, "batch_size": config.batch_size}
    identity = {
        "input": stable_hash(candidates.select("candidate_id", "response", "human_rank").rows()),
        "judge": judge_ref.fingerprint,
        "judge_sampling": asdict(sampling),
        "judge_spec": setup.record,
        "engine": engine,
        "seed": config.seed,
    }
    vid = version_id("rm", identity)
    if store.exists(vid):
        return store.load(vid), False

    started = time.perf_counter()
    judge = load_generator(judge_ref, config.backend, config.dtype, config.batch_size, config.engine_options)
    judgments = judge_candidates(judge, setup.spec, prompts, candidates, sampling, config.seed, store, config.batch_size, setup.constraint)
    judging_s = time.perf_counter() - started
    scored = score_candidates(candidates, judgments).sort("candidate_id")
    groups = group_table(scored)
    health = scores_health(judgments, scored)
    tables = {
        "groups": groups,
        "candidates": scored,
        "judgments": judgments.sort("judgment_id"),
        "prompts": prompts,
        "dropped": pl.concat([dropped_groups, _unparsed(judgments)]),
    }
    manifest = {
        "kind": "rm",
        "parent": None,
        "judge": {"model": judge_ref.to_json(), "engine": judge.identity, "sampling": asdict(sampling)},
        "judge_template": template.to_json(),
        "judge_spec": setup.record,
        "seed": config.seed,
        "input": {"spec": config.ranked, "fingerprint": "sha256:" + file_sha256(Path(config.ranked).expanduser()), "limit": config.limit},
        "identity": identity,
        "stats": summarise_groups(groups.to_dicts()),
        "health": health,
        "timing_s": {"judgments": round(judging_s, 2)},
    }
    plot = score_histogram(health["score_histogram"], f"{judge_ref.spec} on {Path(config.ranked).name}")
    files = {"scores.png": plot} if plot else {}
    manifest["plots"] = sorted(files)
    return store.write_version(vid, tables, manifest, render_rm_card, extra_files=files), True


def group_table(scored: pl.DataFrame) -> pl.DataFrame:
    """One row per group: its metrics (metrics.group_metrics) from its responses' mean scores and human ranks."""
    grouped = scored.sort("sample_index").group_by("prompt_id", maintain_order=True).agg("score_mean", "human_rank")
    rows = [
        {"prompt_id": prompt_id, "responses": len(ranks), **group_metrics(scores, ranks)}
        for prompt_id, scores, ranks in grouped.sort("prompt_id").iter_rows()
    ]
    return pl.DataFrame(rows, schema_overrides={"spearman": pl.Float64, "kendall_tau": pl.Float64})


def _unparsed(judgments: pl.DataFrame) -> pl.DataFrame:
    return judgments.filter(pl.col("parse_error").is_not_null()).select(
        pl.lit("judgment").alias("level"), "prompt_id", "candidate_id", "judgment_id",
        pl.lit("unparsed_judgment").alias("reason"), pl.col("parse_error").alias("detail"),
    ).cast(DROPPED_SCHEMA)
