"""`builder make-prompts`: new prompts by few-shot self-instruct, as in the paper.

Request i shows `shots` seed prompts drawn at random (seeded by the run's seed and i) and asks for one new
task. The answer is parsed (first non-empty line, without a "Task N:" label or quotes) and filtered, in
this order, each drop with its reason: empty, truncated (cut by the token limit inside its first line), too short, too long,
copy of a seed (same text once case, spaces and end punctuation are ignored), near copy of a seed, duplicate
of an earlier generated prompt, near duplicate of an earlier prompt that was kept. "Near" means an estimated Jaccard
similarity of character 5-gram shingles at or above the threshold (MinHash, builder/near_duplicates.py).
"""

import random
import re
import time
from dataclasses import asdict
from importlib import resources

import polars as pl

from builder.core.cards import render_kind_card
from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.prompts import load_prompts, normalise
from builder.core.records import Completion, Sampling, make_request, stable_hash
from builder.core.schemas import GENERATIONS_SCHEMA, PROMPTS_SCHEMA, drops
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.engines.batching import engine_identity, resolve_engine
from builder.engines.generators import load_generator
from builder.engines.models import resolve_model
from builder.engines.runner import run_requests
from builder.stages.configs import MakePromptsConfig
from builder.stages.near_duplicates import best_match, near_duplicates_of_kept, normalised, signatures
from builder.stages.seed import shipped_seed

# every reason a generation can be dropped for, in the order the filters run
FILTERS = ("empty", "truncated", "too_short", "too_long", "copy_of_seed", "near_copy_of_seed", "duplicate", "near_duplicate")
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:new\s+)?task(?:\s*\d+)?\s*[:.)-]\s*(?:\*\*)?\s*", re.IGNORECASE)


def few_shot_message(template: str, examples: list[str]) -> list[dict]:
    listed = "\n".join(f"Task {i}: {text}" for i, text in enumerate(examples, 1))
    return [{"role": "user", "content": template.replace("{examples}", listed).replace("{next}", str(len(examples) + 1))}]


def parse_new_prompt(completion: Completion) -> tuple[str | None, str | None]:
    """(prompt, None) or (None, reason)."""
    lines = [line.strip() for line in completion.text.splitlines() if line.strip()]
    if completion.finish_reason == "length" and len(lines) < 2:  # cut inside the first line: the task is unfinished
        return None, "truncated"
    if not lines:
        return None, "empty"
    text = _LABEL.sub("", lines[0]).strip().strip('"“”').strip()
    return (text, None) if text else (None, "empty")


def make_prompts(config: MakePromptsConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    seeds, _, source = load_prompts(config.seed_prompts or str(shipped_seed("ift")), store)
    template = resources.files("builder").joinpath("templates", "self_instruct.txt").read_text(encoding="utf-8")
    model_ref = resolve_model(config.model, store.root, config.backend == "openai")
    sampling = Sampling(1, config.temperature, config.top_p, config.max_new_tokens)
    config = resolve_engine(config, [model_ref], [sampling])
    filters = {"min_words": config.min_words, "max_chars": config.max_chars, "similarity": config.similarity}
    identity = {
        "seeds": stable_hash(seeds["prompt_id"].to_list()), "model": model_ref.fingerprint, "n": config.n_prompts, "shots": config.shots,
        "sampling": asdict(sampling), "template": stable_hash(template), "filters": filters, "seed": config.seed,
        "engine": engine_identity(config.backend, config.dtype, config.batch_size),
    }
    def run(vid: str) -> StageOutput:
        started = time.perf_counter()
        generator = load_generator(model_ref, config.backend, config.dtype, config.batch_size, config.engine_options)
        shots = draw_shots(seeds["prompt_id"].to_list(), config.n_prompts, config.shots, config.seed)
        text_of = dict(zip(seeds["prompt_id"], seeds["prompt"]))
        requests = [
            make_request(generator.identity, few_shot_message(template, [text_of[p] for p in shown]), sampling, config.seed * 1_000_003 + i)
            for i, shown in enumerate(shots)
        ]
        answers = run_requests(generator, requests, store.generation_cache(generator.identity), config.batch_size, "prompts")
        generations = filter_generations(
            [answers[r.key][0] for r in requests], shots, seeds["prompt"].to_list(), seeds["prompt_id"].to_list(), config
        ).with_columns(pl.Series("request_key", [r.key for r in requests]))
        kept = generations.filter(pl.col("reason").is_null())
        if kept.height:
            prompts, _ = normalise(kept.select("prompt", pl.col("generation_id").alias("id")), vid, None)
        else:
            prompts = pl.DataFrame(schema=PROMPTS_SCHEMA)
        dropped = drops(generations.filter(pl.col("reason").is_not_null()), "generation", pl.col("reason"),
                        pl.format("{}: {}", "generation_id", "detail"))
        counts = dict(generations.group_by("reason").len().iter_rows())
        manifest = Manifest(
            kind="prompts",
            parent=source.parent_version,
            inputs={"seed_prompts": {"spec": source.spec, "fingerprint": source.fingerprint, "seed_prompt_count": seeds.height}},
            models={"generator": {"model": model_ref.to_json(), "engine": generator.identity}},
            sampling={"generations": asdict(sampling)},
            seed=config.seed,
            extra={"self_instruct_template": {"text": template, "sha256": stable_hash(template)}},
            stats={
                "requested": config.n_prompts,
                "kept": kept.height,
                "keep_rate": round(kept.height / config.n_prompts, 4),
                **{f"dropped_{reason}": counts.get(reason, 0) for reason in FILTERS},
            },
            timing_s={"generation": round(time.perf_counter() - started, 2)},
        )
        tables = {"prompts": prompts, "generations": generations, "dropped": dropped}
        return StageOutput(tables, manifest, render_kind_card)

    return build_version(store, "prompts", identity, run)


def draw_shots(seed_ids: list[str], n: int, shots: int, seed: int) -> list[list[str]]:
    if len(seed_ids) < 2:
        raise BuilderError("self-instruct needs at least 2 seed prompts")
    return [random.Random(f"{seed}:{i}").sample(seed_ids, min(shots, len(seed_ids))) for i in range(n)]


def filter_generations(completions: list[Completion], shots: list[list[str]], seed_texts: list[str], seed_ids: list[str],
                       config: MakePromptsConfig) -> pl.DataFrame:
    """One row per request: the raw generation, the parsed prompt, and why it was dropped (null: kept).
    Each filter sees only what the filters before it kept."""
    parsed = [parse_new_prompt(c) for c in completions]
    frame = pl.DataFrame(
        {"generation_id": [f"g{i:06d}" for i in range(len(completions))], "shown_seed_ids": shots, "raw": [c.text for c in completions],
         "finish_reason": [c.finish_reason for c in completions], "prompt": [text for text, _ in parsed],
         "reason": [reason for _, reason in parsed], "detail": [reason for _, reason in parsed]},
        schema=GENERATIONS_SCHEMA,
    ).with_columns(normalised(pl.col("prompt")).alias("key"), pl.col("prompt").str.count_matches(r"\S+").alias("words"))
    seeds = pl.DataFrame({"seed_text": seed_texts, "seed_id": seed_ids}).with_columns(normalised(pl.col("seed_text")).alias("key"))
    frame = drop_where(frame, "too_short", pl.col("words") < config.min_words, pl.format("{} words", "words"))
    frame = drop_where(frame, "too_long", pl.col("prompt").str.len_chars() > config.max_chars, pl.format("{} characters", pl.col("prompt").str.len_chars()))
    frame = frame.join(seeds.unique("key", keep="first", maintain_order=True).select("key", "seed_id"), on="key", how="left", maintain_order="left")
    frame = drop_where(frame, "copy_of_seed", pl.col("seed_id").is_not_null(), pl.col("seed_id"))

    live = frame.filter(pl.col("reason").is_null())
    live_sig = signatures(live["key"].to_list())
    closest, seed_similarity = best_match(live_sig, signatures(seeds["key"].to_list()))
    near_seed = live.select("generation_id", pl.Series("similarity", seed_similarity), pl.Series("seed_id", seeds["seed_id"].gather(closest)))
    frame = frame.drop("seed_id").join(near_seed, on="generation_id", how="left", maintain_order="left")
    frame = drop_where(frame, "near_copy_of_seed", pl.col("similarity") >= config.similarity,
                       pl.format("{} ({})", "seed_id", pl.col("similarity").round(2)))

    first_of_key = frame.filter(pl.col("reason").is_null()).group_by("key", maintain_order=True).agg(pl.col("generation_id").first().alias("first_id"))
    frame = frame.join(first_of_key, on="key", how="left", maintain_order="left")
    frame = drop_where(frame, "duplicate", pl.col("generation_id") != pl.col("first_id"), pl.col("first_id"))

    still = frame.filter(pl.col("reason").is_null())
    kept_sig = live_sig[live["generation_id"].is_in(still["generation_id"].implode()).to_numpy()]
    matches = near_duplicates_of_kept(kept_sig, config.similarity)
    earlier = still.select("generation_id", pl.Series("earlier_id", [None if m is None else still["generation_id"][m] for m in matches], pl.String))
    frame = frame.join(earlier, on="generation_id", how="left", maintain_order="left")
    frame = drop_where(frame, "near_duplicate", pl.col("earlier_id").is_not_null(), pl.col("earlier_id"))
    return frame.select(list(GENERATIONS_SCHEMA))


def drop_where(frame: pl.DataFrame, reason: str, condition: pl.Expr, detail: pl.Expr) -> pl.DataFrame:
    """Mark the rows still kept that meet `condition` as dropped for `reason`."""
    hit = pl.col("reason").is_null() & condition.fill_null(False)
    return frame.with_columns(
        pl.when(hit).then(pl.lit(reason)).otherwise(pl.col("reason")).alias("reason"),
        pl.when(hit).then(detail.cast(pl.String)).otherwise(pl.col("detail")).alias("detail"),
    )
