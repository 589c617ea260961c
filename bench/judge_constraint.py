"""Judge-stage time with and without the constraint, on the same judge requests (target: guided <= 1.15x free).

The candidates come from one make-pairs run (through the cache, so a second run costs nothing); then the same
judge prompts are answered free and guided, straight through the engine in the builder's batches, alternating
the two for `--rounds` rounds, best round of each kept. Guided and free answers differ in length, so the
time per generated token is printed too.

    python bench/judge_constraint.py [--model M] [--limit 8] [--n-samples 2] [--n-judgments 3] [--judge-max-new-tokens 96]
"""

import argparse
import tempfile
import time

import polars as pl

from builder.core.store import Store
from builder.engines.generators import load_generator, resolve_dtype
from builder.engines.models import resolve_model
from builder.engines.runner import plan_batches
from builder.judging.score import judge_jobs
from builder.judging.setup import prepare_judge
from builder.stages.make_pairs import MakePairsConfig, make_pairs


def timed(generator, requests, batch_size: int) -> tuple[float, int]:
    started, tokens = time.perf_counter(), 0
    for batch in plan_batches(list({r.key: r for r in requests}.values()), batch_size):
        tokens += sum(c.n_tokens for answer in generator.generate(batch) for c in answer)
    return time.perf_counter() - started, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--n-samples", type=int, default=2)
    parser.add_argument("--n-judgments", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--judge-max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    config = MakePairsConfig(model=args.model, limit=args.limit, n_samples=args.n_samples, n_judgments=1, max_new_tokens=args.max_new_tokens,
                             judge_max_new_tokens=8 + 30, batch_size=args.batch_size, dtype=resolve_dtype("auto"))
    with tempfile.TemporaryDirectory() as root:
        version, _ = make_pairs(config, Store(root))  # the candidates to judge (its own short judgments are not measured)
        prompts = pl.read_parquet(version.folder / "prompts.parquet")
        candidates = pl.read_parquet(version.folder / "candidates.parquet")
    generator = load_generator(resolve_model(args.model), "transformers", config.dtype, args.batch_size)
    requests = {}
    for mode in ("off", "on"):
        judge = prepare_judge("pointwise", None, args.n_judgments, None, None, args.judge_max_new_tokens, mode, None, None, "transformers", None)
        constraint = judge.constraint if mode == "on" else None  # free: no probe either, the plain engine
        requests[mode] = [r for _, _, r in judge_jobs(generator, judge.spec, prompts, candidates, judge.sampling, 0, constraint)]
    timed(generator, requests["on"][: args.batch_size], args.batch_size)  # compile the grammar once, outside the timing
    best = {"off": (float("inf"), 0), "on": (float("inf"), 0)}
    for _ in range(args.rounds):
        for mode in ("off", "on"):
            seconds, tokens = timed(generator, requests[mode], args.batch_size)
            best[mode] = min(best[mode], (seconds, tokens))
            print(f"{mode:>3}: {seconds:7.1f} s, {tokens} tokens, {1000 * seconds / max(tokens, 1):.1f} ms/token", flush=True)
    (free_s, free_t), (guided_s, guided_t) = best["off"], best["on"]
    print(f"{len(requests['on'])} judge requests x {args.n_judgments} samples, batch {args.batch_size}, {config.dtype}")
    print(f"judge stage: guided {guided_s:.1f} s / free {free_s:.1f} s = {guided_s / free_s:.3f}x; "
          f"per token {(guided_s / max(guided_t, 1)) / (free_s / max(free_t, 1)):.3f}x")


if __name__ == "__main__":
    main()
