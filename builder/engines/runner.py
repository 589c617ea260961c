"""Answering requests through the generation cache: fixed batches, every answer saved within a second of
its arrival, and nothing asked twice. Answers are not kept in memory while they are made: they are read back
from the cache, as a table, once every request has one; and requests themselves can be made batch by batch,
only for those the cache cannot answer."""

import itertools
import time
from collections.abc import Callable, Iterator

import polars as pl

from builder.core.cache import GenerationCache
from builder.core.progress import progress_bar
from builder.core.records import Completion, Request
from builder.engines.generators import Generator

Build = Callable[[list[int]], list[Request]]
STREAMING_CHUNK = 16_384  # requests handed to a streaming backend at a time (all of them are made at once)


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
    fill_cache(generator, planned(requests), lambda rows: [requests[i] for i in rows], cache, batch_size, label)
    return cache.load(r.key for r in requests)


def answer_table(generator: Generator, requests: list[Request], cache: GenerationCache, batch_size: int, label: str) -> pl.DataFrame:
    """Answer every request, from the cache where possible: one row per (key, sample), with its text,
    finish_reason and n_tokens."""
    return answer_lazily(generator, planned(requests), lambda rows: [requests[i] for i in rows], cache, batch_size, label)


def answer_lazily(generator: Generator, asked: pl.DataFrame, build: Build, cache: GenerationCache, batch_size: int, label: str) -> pl.DataFrame:
    """answer_table for requests that are made only when they must be asked (a million rendered judge prompts
    need not be in memory at once): `asked` has one row per request, its `key` and `length` (characters of
    its messages, as in plan_batches); build(rows) makes the requests of those rows of `asked`."""
    fill_cache(generator, asked, build, cache, batch_size, label)
    return cache.table(asked["key"])


def planned(requests: list[Request]) -> pl.DataFrame:
    return pl.DataFrame(
        {"key": [r.key for r in requests], "length": [sum(len(m["content"]) for m in r.messages) for r in requests]},
        schema={"key": pl.String, "length": pl.Int64},
    )


def fill_cache(generator: Generator, asked: pl.DataFrame, build: Build, cache: GenerationCache, batch_size: int, label: str) -> None:
    """Ask the generator for every request the cache has no answer to, in the batches of plan_batches (a repeated
    request asked once), saving answers as they come."""
    batches = (
        asked.select("key", "length")
        .with_row_index("row")
        .unique("key", keep="first", maintain_order=True)
        .sort(["length", "key"], descending=[True, False])
        .with_columns((pl.int_range(pl.len()) // batch_size).alias("batch"))
    )
    missing = batches.join(cache.table(batches["key"], columns=("key",)).unique(), on="key", how="anti", maintain_order="left")
    if missing.height:
        cache.check_writable()  # before any paid work
    with progress_bar() as bar, ShardWriter(cache) as writer:
        task = bar.add_task(label, total=batches.height, completed=batches.height - missing.height)

        def keep(request: Request, completions: list[Completion]) -> None:
            check_count(request, completions)
            writer.add(request, completions)
            bar.advance(task, 1)

        if hasattr(generator, "generate_streaming"):
            for chunk in missing.iter_slices(STREAMING_CHUNK):
                generator.generate_streaming(build(chunk["row"].to_list()), keep)
            return
        for rows in row_batches(missing):
            requests = build(rows)
            answers = generator.generate(requests)
            for request, completions in zip(requests, answers, strict=True):
                check_count(request, completions)
            writer.add_batch(requests, answers)
            bar.advance(task, len(requests))


def row_batches(missing: pl.DataFrame) -> Iterator[list[int]]:
    """The rows of each batch, in order, read a slice at a time."""
    pairs = (pair for chunk in missing.select("row", "batch").iter_slices(1 << 16) for pair in chunk.iter_rows())
    for _, group in itertools.groupby(pairs, key=lambda pair: pair[1]):
        yield [row for row, _ in group]


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
