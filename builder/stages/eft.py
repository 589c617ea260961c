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
from dataclasses import asdict, dataclass, replace

import polars as pl

from builder.core.cards import render_kind_card
from builder.core.errors import BuilderError
from builder.core.prompts import turn
from builder.core.records import stable_hash
from builder.core.schemas import DROPPED_SCHEMA
from builder.core.store import Store, Version, version_id
from builder.engines.generators import load_generator, resolve_dtype
from builder.engines.models import resolve_model
from builder.engines.options import EngineOptions
from builder.judging.judge import JudgeTemplate
from builder.judging.metrics import group_metrics
from builder.judging.score import judge_candidates
from builder.judging.setup import check_judge_options, prepare_judge
from builder.stages.aggregate import score_candidates, unlabelled
from builder.stages.ranked import ranked_tables
from builder.stages.seed import load_seed


@dataclass(frozen=True)
class MakeEftConfig:
    ranked: str | None = None  # None: the shipped ranked groups
    model: str | None = None  # None: the embedded default
    held_out: float = 0.2
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
        if not 0 <= self.held_out < 1:
            raise BuilderError("--held-out must be in [0, 1)")
        if self.limit is not None and self.limit < 1:
            raise BuilderError("--limit must be at least 1")


def held_out_ids(prompt_ids: list[str], fraction: float, seed: int) -> set[str]:
    """A stable, seeded choice of groups: the same group is held out whatever else is in the file."""
    def position(prompt_id: str) -> float:
        return int(hashlib.sha256(f"{seed}:{prompt_id}".encode()).hexdigest()[:12], 16) / 16**12

    return {p for p in prompt_ids if position(p) < fraction}


def make_eft(config: MakeEftConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    config = replace(config, dtype=resolve_dtype(config.dtype))
    raw, source = load_seed(config.ranked, "ranked", store)
    prompts, candidates, dropped_groups = ranked_tables(raw, source.spec, config.limit)
    heldout = held_out_ids(prompts["prompt_id"].to_list(), config.held_out, config.seed)
    setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          config.backend, config.engine_options)
    template, sampling = setup.template, setup.sampling
    model_ref = resolve_model(config.model, store.root, config.backend == "openai")
    engine = {"backend": config.backend, "dtype": config.dtype, "batch_size": config.batch_size}
    identity = {
        "input": stable_hash(candidates.select("candidate_id", "response", "human_rank").rows()),
        "held_out": config.held_out, "model": model_ref.fingerprint, "sampling": asdict(sampling),
        "judge_spec": setup.record, "engine": engine, "seed": config.seed,
    }
    vid = version_id("eft", identity)
    if store.exists(vid):
        return store.load(vid), False

    train_prompts = prompts.filter(~pl.col("prompt_id").is_in(list(heldout)))
    train = candidates.filter(~pl.col("prompt_id").is_in(list(heldout)))
    started = time.perf_counter()
    judge = load_generator(model_ref, config.backend, config.dtype, config.batch_size, config.engine_options)
    judgments = judge_candidates(judge, setup.spec, train_prompts, train, sampling, config.seed, store, config.batch_size, setup.constraint)
    judging_s = time.perf_counter() - started
    scored = score_candidates(train, judgments).sort("candidate_id")
    groups = agreement(scored)
    examples = eft_examples(groups, scored, judgments, train_prompts, template)
    tables = {
        "eft": examples,
        "groups": groups,
        "candidates": scored,
        "judgments": judgments.sort("judgment_id"),
        "heldout": ranked_format(prompts.filter(pl.col("prompt_id").is_in(list(heldout))), candidates),
        "prompts": prompts,
        "dropped": pl.concat([dropped_groups, rejected(groups), unlabelled(scored, judgments)]),
    }
    judged = groups.filter(pl.col("reason").fill_null("") != "no_human_order").height
    agreeing = int(groups["agrees"].sum())
    manifest = {
        "kind": "eft",
        "parent": source.parent,
        "model": model_ref.to_json(),
        "judge": {"engine": judge.identity, "sampling": asdict(sampling)},
        "judge_template": template.to_json(),
        "judge_spec": setup.record,
        "seed": config.seed,
        "input": {"ranked": source.spec, "fingerprint": source.fingerprint, "limit": config.limit, "held_out": config.held_out},
        "identity": identity,
        "agreement_rule": "every pair of differently ranked responses strictly ordered the same way by mean score",
        "stats": {
            "groups": prompts.height,
            "heldout_groups": len(heldout),
            "train_groups": train_prompts.height,
            "agreeing_groups": agreeing,
            "agreement_rate": round(agreeing / judged, 4) if judged else None,
            "eft_examples": examples.height,
            "judgments": judgments.height,
            "unparsed_judgments": int(judgments["score"].null_count()),
        },
        "timing_s": {"judgments": round(judging_s, 2)},
    }
    return store.write_version(vid, tables, manifest, render_kind_card), True


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


def ranked_format(prompts: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    """Groups back in the ranked seed format (prompt, responses, ranks), readable by make-eft and reward-model."""
    lists = candidates.sort("sample_index").group_by("prompt_id", maintain_order=True).agg(
        pl.col("response").alias("responses"), pl.col("human_rank").alias("ranks")
    )
    return prompts.select("prompt_id", "prompt", "source_id").join(lists, on="prompt_id").sort("prompt_id")


def rejected(groups: pl.DataFrame) -> pl.DataFrame:
    return groups.filter(pl.col("reason").is_not_null()).select(
        pl.lit("prompt").alias("level"), "prompt_id", pl.lit(None, pl.String).alias("candidate_id"),
        pl.lit(None, pl.String).alias("judgment_id"), "reason",
        pl.format("{} of {} ordered pairs agree", "pairs_agreeing", "ordered_pairs").alias("detail"),
    ).cast(DROPPED_SCHEMA)
