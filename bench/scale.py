"""The builder's own cost at scale, run by hand (not a test): the real make-pairs pipeline with an instant
scripted generator plugged in at the Generator seam, N prompts x 4 candidates x 3 judgments, batch size 16.

For each size, each in a fresh process (so that peak RSS is that run's own):
  fresh    an empty store: wall, time in cache lookups, peak RSS, cache shards at the end
  finished the same command again: it finds the finished version ("already built")
  half     a build stopped (an exception) once half of the judgments were answered, then resumed: the resume's
           figures (the half-done build is in a store of its own)

    python bench/scale.py                        # 10k and 100k prompts
    python bench/scale.py --prompts 1000000      # any sizes, comma-separated
    python bench/scale.py --prompts 10000 --runs fresh,finished
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

import builder.stages.make_pairs as make_pairs_module
from builder.core.cache import GenerationCache
from builder.core.records import Completion, Request
from builder.core.store import Store
from builder.engines.context import unknown_window
from builder.engines.models import ModelRef
from builder.stages.make_pairs import MakePairsConfig, make_pairs

TOPICS = ["rivers", "prime numbers", "bread", "volcanoes", "sonnets", "tides", "chess openings", "glaciers"]


class ScriptedGenerator:
    """Answers at once, deterministically from the request key: distinct candidates, and judgments that end
    in a score from 0 to 5 (about one in twenty without a score line, as real judges sometimes do)."""

    identity = {"backend": "scripted", "model": "scripted"}
    context = unknown_window("a scripted generator has no context window")

    def __init__(self, stop_after: int | None = None):
        self.stop_after, self.answered = stop_after, 0

    def generate(self, requests: list[Request]) -> list[list[Completion]]:
        if self.stop_after is not None and self.answered >= self.stop_after:
            raise KeyboardInterrupt("stopped half-way on purpose")
        self.answered += len(requests)
        return [[self.answer(r.key, i) for i in range(r.sampling.n)] for r in requests]

    @staticmethod
    def answer(key: str, sample: int) -> Completion:
        draw = int(key[sample * 4 : sample * 4 + 4], 16)
        if draw % 20 == 0:
            return Completion(f"Answer {sample} ({key[:8]}), no verdict.", "stop", 6)
        return Completion(f"Answer {sample} ({key[:8]}): it is fine.\nScore: {draw % 6}", "stop", 12)


def plug_in(generator: ScriptedGenerator) -> None:
    make_pairs_module.load_generator = lambda *args, **kwargs: generator
    make_pairs_module.resolve_model = lambda *args, **kwargs: ModelRef("scripted", None, "scripted:v1")


def time_lookups() -> dict:
    """Accumulates the seconds spent in cache lookups (GenerationCache.table, which every lookup goes through)."""
    spent = {"s": 0.0}
    table = GenerationCache.table

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return table(self, *args, **kwargs)
        finally:
            spent["s"] += time.perf_counter() - started

    GenerationCache.table = timed
    return spent


def write_prompts(path: Path, n: int) -> None:
    pl.DataFrame({"prompt": [f"Question {i}: tell me something about {TOPICS[i % len(TOPICS)]} ({i % 997})." for i in range(n)]}).write_ndjson(path)


def one_run(prompts: Path, store: Path, stop_after: int | None) -> dict:
    """One make-pairs call in this process; its figures as a dict."""
    generator = ScriptedGenerator(stop_after)
    plug_in(generator)
    lookups = time_lookups()
    config = MakePairsConfig(prompts=str(prompts), dtype="float32", batch_size=16)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    try:
        version, built = make_pairs(config, Store(store))
        outcome = "built" if built else "already built"
    except KeyboardInterrupt:
        version, outcome = None, "stopped"
    wall = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "outcome": outcome,
        "version": version.id if version else None,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu_before, 2),
        "lookup_s": round(lookups["s"], 2),
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "shards": len(list((store / ".cache" / "generations").glob("*/*.parquet"))),
        "answered": generator.answered,
    }


def in_fresh_process(prompts: Path, store: Path, stop_after: int | None = None) -> dict:
    command = [sys.executable, __file__, "--one", str(prompts), str(store)] + (["--stop-after", str(stop_after)] if stop_after else [])
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def bench_size(n: int, runs: list[str], root: Path) -> list[tuple[str, dict]]:
    prompts = root / f"prompts-{n}.jsonl"
    write_prompts(prompts, n)
    results = []
    if "fresh" in runs or "finished" in runs:
        results.append(("fresh", in_fresh_process(prompts, root / f"store-{n}")))
    if "finished" in runs:
        results.append(("resume of the finished build", in_fresh_process(prompts, root / f"store-{n}")))
    if "half" in runs:
        half = root / f"half-{n}"
        stopped = in_fresh_process(prompts, half, stop_after=n + n * 4 // 2)  # every candidate, half the judgments
        resumed = in_fresh_process(prompts, half)
        results.append((f"resume of a half-done build (stopped after {stopped['wall_s']} s)", resumed))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", default="10000,100000", help="comma-separated sizes")
    parser.add_argument("--runs", default="fresh,finished,half")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    parser.add_argument("--one", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(*args.one, args.stop_after)))
        return
    print("| prompts | run | wall | CPU | CPU per 1k prompts | of which cache lookup | peak RSS | cache shards | requests answered | outcome |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.keep) as root:
        for n in (int(s) for s in args.prompts.split(",")):
            for run, r in bench_size(n, args.runs.split(","), Path(root)):
                print(f"| {n:,} | {run} | {r['wall_s']} s | {r['cpu_s']} s | {1000 * r['cpu_s'] / n:.2f} s | {r['lookup_s']} s | "
                      f"{r['peak_rss_gb']} GB | {r['shards']} | {r['answered']:,} | {r['outcome']} |", flush=True)


if __name__ == "__main__":
    main()
