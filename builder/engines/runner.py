"""Answering requests through the generation cache: fixed batches, every answer saved within a second of
its arrival, and nothing asked twice. Answers are not kept in memory while they are made: they are read back
from the cache, as a table, once every request has one."""

import time
from collections.abc import Iterator

import polars as pl

from builder.core.cache import GenerationCache
from builder.core.progress import progress_bar
from builder.core.records import Completion, Request
from builder.engines.generators import Generator


def plan_batches(requests: list[Request], batch_size: int) -> Iterator[list[Request]]:
    """Fixed batches from the whole request list, longest prompts first (less padding, and memory
    trouble shows at once). Fixed means a resumed run meets exactly the batches an uninterrupted one would."""
    ordered = sorted(requests, key=lambda r: (-sum(len(m["content"]) for m in r.messages), r.key))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def run_requests(
    generator: Generator, requests: list[Request], cache: GenerationCache, batch_size: int, label: str
) -> dict[str, list[Completion]]:
    """Answer every request, from the cache where possible: {request key: its completions}."""
    fill_cache(generator, requests, cache, batch_size, label)
    return cache.load(r.key for r in requests)


def answer_table(generator: Generator, requests: list[Request], cache: GenerationCache, batch_size: int, label: str) -> pl.DataFrame:
    """Answer every request, from the cache where possible: one row per (key, sample), with its text,
    finish_reason and n_tokens."""
    fill_cache(generator, requests, cache, batch_size, label)
    return cache.table(r.key for r in requests)


def fill_cache(generator: Generator, requests: list[Request], cache: GenerationCache, batch_size: int, label: str) -> None:
    """Ask the generator for every request the cache has no answer to, saving answers as they come."""
    unique = list({r.key: r for r in requests}.values())
    done = cache.cached_keys(r.key for r in unique)
    with progress_bar() as bar, ShardWriter(cache) as writer:
        task = bar.add_task(label, total=len(unique), completed=sum(r.key in done for r in unique))

        def keep(request: Request, completions: list[Completion]) -> None:
            check_count(request, completions)
            writer.add(request, completions)
            bar.advance(task, 1)

        if hasattr(generator, "generate_streaming"):
            missing = [r for batch in plan_batches(unique, batch_size) for r in batch if r.key not in done]
            generator.generate_streaming(missing, keep)
            return
        for batch in plan_batches(unique, batch_size):
            missing = [r for r in batch if r.key not in done]
            if missing:
                answers = generator.generate(missing)
                for request, completions in zip(missing, answers, strict=True):
                    check_count(request, completions)
                writer.add_batch(missing, answers)
                bar.advance(task, len(missing))


def check_count(request: Request, completions: list[Completion]) -> None:
    if len(completions) != request.sampling.n:
        raise RuntimeError(f"backend returned {len(completions)} of {request.sampling.n} samples")


class ShardWriter:
    """Saves answers as they arrive: a shard as soon as `interval` seconds have passed since the last one
    (so a batch that took longer than that is saved at once, and fast batches share a shard), and whatever is
    pending when the run ends or fails (a dead server must not cost the answers already received)."""

    def __init__(self, cache: GenerationCache, interval: float = 1.0):
        self.cache, self.interval = cache, interval
        self.pending: list[tuple[Request, list[Completion]]] = []
        self.last_flush = time.monotonic()

    def add(self, request: Request, completions: list[Completion]) -> None:
        self.add_batch([request], [completions])

    def add_batch(self, requests: list[Request], answers: list[list[Completion]]) -> None:
        self.pending.extend(zip(requests, answers, strict=True))
        if time.monotonic() - self.last_flush >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            requests, answers = zip(*self.pending)
            self.cache.save(list(requests), list(answers))
            self.pending = []
        self.last_flush = time.monotonic()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
