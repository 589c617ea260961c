"""Paid-for work is saved as it completes and never computed twice.

The cache is a folder of parquet shards, one per finished batch (or, for backends that answer one request
at a time, per second of answers), each row one sample of one request.
A shard is written to a temporary name and renamed, so a kill leaves either a whole shard or none.
Only successful completions are ever written: a failed call leaves no trace and is asked again.
"""

import os
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from builder.generators import Generator
from builder.progress import progress_bar
from builder.records import Completion, Request, stable_hash

SHARD_SCHEMA = {"key": pl.String, "sample": pl.Int32, "text": pl.String, "finish_reason": pl.String, "n_tokens": pl.Int32}


class GenerationCache:
    def __init__(self, folder: Path):
        self.folder = folder

    def load(self, keys: set[str]) -> dict[str, list[Completion]]:
        shards = sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []
        if not shards or not keys:
            return {}
        rows = (
            pl.scan_parquet(shards, schema=SHARD_SCHEMA)
            .filter(pl.col("key").is_in(list(keys)))
            .unique(["key", "sample"], keep="first")
            .sort("key", "sample")
            .collect()
        )
        found: dict[str, list[Completion]] = {}
        for key, text, reason, n_tokens in rows.select("key", "text", "finish_reason", "n_tokens").iter_rows():
            found.setdefault(key, []).append(Completion(text, reason, n_tokens))
        return found

    def save(self, requests: list[Request], answers: list[list[Completion]]) -> None:
        rows = [
            {"key": r.key, "sample": i, "text": c.text, "finish_reason": c.finish_reason, "n_tokens": c.n_tokens}
            for r, completions in zip(requests, answers, strict=True)
            for i, c in enumerate(completions)
        ]
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{stable_hash([r.key for r in requests])[:24]}.parquet"
        partial = final.with_suffix(f".partial-{os.getpid()}")
        pl.DataFrame(rows, schema=SHARD_SCHEMA).write_parquet(partial)
        partial.replace(final)


def plan_batches(requests: list[Request], batch_size: int) -> Iterator[list[Request]]:
    """Fixed batches from the whole request list, longest prompts first (less padding, and memory
    trouble shows at once). Fixed means a resumed run meets exactly the batches an uninterrupted one would."""
    ordered = sorted(requests, key=lambda r: (-sum(len(m["content"]) for m in r.messages), r.key))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def run_requests(
    generator: Generator, requests: list[Request], cache: GenerationCache, batch_size: int, label: str
) -> dict[str, list[Completion]]:
    """Answer every request, from the cache where possible, saving each new batch as soon as it is done."""
    unique = list({r.key: r for r in requests}.values())
    done = cache.load({r.key for r in unique})
    with progress_bar() as bar:
        task = bar.add_task(label, total=len(unique), completed=sum(r.key in done for r in unique))
        if hasattr(generator, "generate_streaming"):
            missing = [r for batch in plan_batches(unique, batch_size) for r in batch if r.key not in done]
            with ShardWriter(cache) as writer:

                def keep(request: Request, completions: list[Completion]) -> None:
                    check_count(request, completions)
                    writer.add(request, completions)
                    done[request.key] = completions
                    bar.advance(task, 1)

                generator.generate_streaming(missing, keep)
            return done
        for batch in plan_batches(unique, batch_size):
            missing = [r for r in batch if r.key not in done]
            if not missing:
                continue
            answers = generator.generate(missing)
            for request, completions in zip(missing, answers, strict=True):
                check_count(request, completions)
            cache.save(missing, answers)
            done.update((r.key, a) for r, a in zip(missing, answers))
            bar.advance(task, len(missing))
    return done


def check_count(request: Request, completions: list[Completion]) -> None:
    if len(completions) != request.sampling.n:
        raise RuntimeError(f"backend returned {len(completions)} of {request.sampling.n} samples")


class ShardWriter:
    """Saves answers that arrive one by one: a shard at most every `interval` seconds, and whatever is
    pending when the run ends or fails (a dead server must not cost the answers already received)."""

    def __init__(self, cache: GenerationCache, interval: float = 1.0):
        self.cache, self.interval = cache, interval
        self.pending: list[tuple[Request, list[Completion]]] = []
        self.last_flush = time.monotonic()

    def add(self, request: Request, completions: list[Completion]) -> None:
        self.pending.append((request, completions))
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
