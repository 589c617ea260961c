"""Answering requests through the generation cache: fixed batches, every batch saved as soon as it returns,
and nothing asked twice."""

import time
from collections.abc import Iterator

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
    """Answer every request, from the cache where possible, saving each new batch as soon as it is done."""
    unique = list({r.key: r for r in requests}.values())
    done = cache.load({r.key for r in unique})
    if len(done) < len(unique):
        cache.check_writable()  # before any paid work
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
