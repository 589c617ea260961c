"""Answering requests through the generation cache: fixed batches, every answer saved within a second of
its arrival, and nothing asked twice. One lookup finds what the cache already holds; what is made is kept as
the cache's rows too (a stage that runs shard by shard holds one shard's at most); and requests themselves are
made batch by batch, only for those the cache cannot answer (a million rendered judge prompts are never in
memory at once)."""

import itertools
import time
from collections.abc import Callable, Iterator

import polars as pl

from builder.core.cache import SHARD_SCHEMA, GenerationCache, completions_frame
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
    its messages, as in plan_batches), and optionally its planning `block` (see fill_cache); build(rows) makes the
    requests of those rows of `asked`."""
    found = cache.table(asked["key"])
    made = fill_cache(generator, asked, build, cache, batch_size, label, found.select("key"))
    return pl.concat([found, made]).sort("key", "sample") if made.height else found


def planned(requests: list[Request]) -> pl.DataFrame:
    return pl.DataFrame(
        {"key": [r.key for r in requests], "length": [sum(len(m["content"]) for m in r.messages) for r in requests]},
        schema={"key": pl.String, "length": pl.Int64},
    )


def fill_cache(generator: Generator, asked: pl.DataFrame, build: Build, cache: GenerationCache, batch_size: int, label: str,
               cached: pl.DataFrame | None = None) -> pl.DataFrame:
    """Ask the generator for every request the cache has no answer to, in the batches of plan_batches (a repeated
    request asked once), saving answers as they come. With a `block` column in `asked`, batches are planned within
    each block (longest first inside it): a stage that runs shard by shard gives each block whole to one shard,
    so a shard of any size meets the same batches. `cached`: the keys already known to be in the cache. Returns
    the answers it made, as the cache's rows (one stage's shard of them is held in memory)."""
    block = pl.col("block") if "block" in asked.columns else pl.lit(0, pl.Int64)
    batches = (
        asked.select("key", "length", block.cast(pl.Int64).alias("block"))
        .with_row_index("row")
        .unique("key", keep="first", maintain_order=True)
        .sort(["block", "length", "key"], descending=[False, True, False])
        .with_columns((pl.col("block") * (1 << 32) + pl.int_range(pl.len()).over("block") // batch_size).alias("batch"))
    )
    if cached is None:
        cached = cache.table(batches["key"], columns=("key",))
    missing = batches.join(cached.unique(), on="key", how="anti", maintain_order="left")
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
        else:
            for rows in row_batches(missing):
                requests = build(rows)
                answers = generator.generate(requests)
                for request, completions in zip(requests, answers, strict=True):
                    check_count(request, completions)
                writer.add_batch(requests, answers)
                bar.advance(task, len(requests))
    return pl.concat(writer.saved) if writer.saved else pl.DataFrame(schema=SHARD_SCHEMA)


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
        self.saved: list[pl.DataFrame] = []  # what was saved, as the cache's rows
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
            frame = completions_frame(list(requests), list(answers))
            self.cache.save_frame(frame)
            self.saved.append(frame)
            self.pending = []
        self.last_flush = time.monotonic()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
