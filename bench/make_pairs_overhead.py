"""Two numbers for the README, run by hand (not a test):

1. `builder make-pairs` wall time against the raw engine's time for the very same generations
   (target: at most 1.10x). The raw side loads the same model and calls the same backend on the same
   batches, with no cache, no parsing, no tables, no progress bar; the builder side is the whole
   make-pairs call in-process on an empty store (prompts, model load, generation with its cache, parsing,
   aggregation, the version's files). The embedded model's one-off conversion is done before either clock.
2. Averages and pairs from 1,000,000 synthetic judgment rows (target: at most 2 s).

    python bench/make_pairs_overhead.py                       # both
    python bench/make_pairs_overhead.py --only aggregate      # the second alone (seconds)
"""

import argparse
import random
import tempfile
import time
from pathlib import Path

import polars as pl

from builder.core.records import Sampling
from builder.core.schemas import CANDIDATES_SCHEMA, JUDGMENTS_SCHEMA, PROMPTS_SCHEMA
from builder.core.store import Store
from builder.engines.generators import load_generator
from builder.engines.models import resolve_model
from builder.engines.runner import plan_batches
from builder.judging.score import judge_jobs
from builder.judging.setup import prepare_judge
from builder.stages.aggregate import build_labels
from builder.stages.make_pairs import MakePairsConfig, candidate_requests, make_pairs


def builder_wall(config: MakePairsConfig, root: Path) -> tuple[float, Path]:
    store = Store(root)
    started = time.perf_counter()
    version, _ = make_pairs(config, store)
    return time.perf_counter() - started, version.folder


def raw_engine_wall(config: MakePairsConfig, version_folder: Path) -> float:
    """The same requests, in the same batches, straight through the backend."""
    prompts = pl.read_parquet(version_folder / "prompts.parquet")
    candidates = pl.read_parquet(version_folder / "candidates.parquet")
    judge = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                          config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars, config.rationale_max_chars,
                          config.backend, None)
    candidate_sampling = Sampling(config.n_samples, config.temperature, config.top_p, config.max_new_tokens)

    started = time.perf_counter()
    generator = load_generator(resolve_model(config.model), config.backend, dtype=config.dtype, batch_size=config.batch_size)
    judge_requests = [request for _, _, request in judge_jobs(generator, judge.spec, prompts, candidates, judge.sampling, config.seed, judge.constraint)]
    for requests in (candidate_requests(generator, prompts, candidate_sampling, config.seed), judge_requests):
        unique = list({r.key: r for r in requests}.values())  # the builder answers a repeated request once
        for batch in plan_batches(unique, config.batch_size):
            generator.generate(batch)
    return time.perf_counter() - started


def synthetic_tables(n_prompts: int, n_samples: int = 4, n_judgments: int = 3, seed: int = 0):
    rng = random.Random(seed)
    prompt_ids = [f"p{i:07d}" for i in range(n_prompts)]
    prompts = pl.DataFrame(
        {
            "prompt_id": prompt_ids,
            "prompt": [f"question {i}" for i in range(n_prompts)],
            "messages": [[{"role": "user", "content": f"question {i}"}] for i in range(n_prompts)],
            "source": "synthetic",
            "source_row": range(n_prompts),
            "source_id": None,
        },
        schema=PROMPTS_SCHEMA,
    )
    candidates = (
        pl.DataFrame({"prompt_id": prompt_ids})
        .join(pl.DataFrame({"sample_index": list(range(n_samples))}, schema={"sample_index": pl.Int32}), how="cross")
        .with_columns(
            pl.format("{}-c{}", "prompt_id", "sample_index").alias("candidate_id"),
            pl.lit("an answer").alias("response"),
            pl.lit("stop").alias("finish_reason"),
            pl.lit(3, pl.Int32).alias("n_tokens"),
            pl.lit("k").alias("request_key"),
        )
        .select(list(CANDIDATES_SCHEMA))
        .cast(CANDIDATES_SCHEMA)
    )
    n_rows = candidates.height * n_judgments
    # 5% of judgments fail to parse; the rest score 0..5
    scores = [None if rng.random() < 0.05 else float(rng.randint(0, 5)) for _ in range(n_rows)]
    judgments = (
        candidates.select("candidate_id", "prompt_id")
        .join(pl.DataFrame({"sample_index": list(range(n_judgments))}, schema={"sample_index": pl.Int32}), how="cross")
        .with_columns(
            pl.format("{}-j{}", "candidate_id", "sample_index").alias("judgment_id"),
            pl.lit("Fine.\nScore: 3").alias("raw"),
            pl.lit("Fine.").alias("rationale"),
            pl.Series("score", scores, pl.Float64),
            pl.Series("parse_error", [("no_final_score_line" if s is None else None) for s in scores], pl.String),
            pl.lit("stop").alias("finish_reason"),
            pl.lit(8, pl.Int32).alias("n_tokens"),
            pl.lit("k").alias("request_key"),
            pl.lit(None, pl.List(pl.Float64)).alias("score_probs"),
            pl.lit(None, pl.Float64).alias("expected_score"),
        )
        .select(list(JUDGMENTS_SCHEMA))
        .cast(JUDGMENTS_SCHEMA)
    )
    return prompts, candidates, judgments


def aggregate_bench(n_rows: int) -> None:
    prompts, candidates, judgments = synthetic_tables(n_rows // 12 + 1)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        _, pairs, dropped = build_labels(prompts, candidates, judgments)
        timings.append(time.perf_counter() - started)
    print(f"aggregate: {judgments.height:,} judgment rows, {candidates.height:,} candidates, {prompts.height:,} prompts "
          f"-> {pairs.height:,} pairs, {dropped.height:,} dropped rows; best of 3: {min(timings):.2f} s (target <= 2 s)")


def overhead_bench(config: MakePairsConfig, rounds: int) -> None:
    """Alternates builder and raw runs (each builder run on an empty store) and compares the best of each,
    so that a noisy neighbour or a cold page cache does not decide the ratio."""
    resolve_model(config.model)  # the one-off conversion of the embedded default is not part of either clock
    builder_runs, raw_runs = [], []
    with tempfile.TemporaryDirectory() as root:
        for round_ in range(rounds):
            builder_s, folder = builder_wall(config, Path(root) / f"store-{round_}")
            builder_runs.append(builder_s)
            raw_runs.append(raw_engine_wall(config, folder))
        judgments = pl.read_parquet(folder / "judgments.parquet").height
    print(f"make-pairs: {config.limit} prompts x {config.n_samples} candidates x {config.n_judgments} judgments "
          f"({judgments} judgments), batch {config.batch_size}, {config.dtype}")
    print(f"make-pairs wall {_runs(builder_runs)}; raw engine {_runs(raw_runs)}; "
          f"ratio of the best {min(builder_runs) / min(raw_runs):.3f} (target <= 1.10)")


def _runs(seconds: list[float]) -> str:
    return "best {:.1f} s of [{}]".format(min(seconds), ", ".join(f"{s:.1f}" for s in seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["overhead", "aggregate"])
    parser.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--judge-max-new-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    if args.only != "overhead":
        aggregate_bench(args.rows)
    if args.only != "aggregate":
        config = MakePairsConfig(model=args.model, limit=args.limit, max_new_tokens=args.max_new_tokens,
                                 judge_max_new_tokens=args.judge_max_new_tokens)
        overhead_bench(config, args.rounds)


if __name__ == "__main__":
    main()
