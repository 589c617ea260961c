"""Paid-for work is saved as it completes and never computed twice.

The cache is a folder of parquet shards, one per finished batch (or, for backends that answer one request
at a time, per second of answers), each row one sample of one request.
A shard is written to a temporary name and renamed, so a kill leaves either a whole shard or none.
Only successful completions are ever written: a failed call leaves no trace and is asked again.
"""

import os
from pathlib import Path

import polars as pl

from builder.core.records import Completion, Request, stable_hash

SHARD_SCHEMA = {"key": pl.String, "sample": pl.Int32, "text": pl.String, "finish_reason": pl.String, "n_tokens": pl.Int32,
                "choice_probs": pl.List(pl.Float64)}  # shards written before choice_probs existed read it as null


class GenerationCache:
    def __init__(self, folder: Path):
        self.folder = folder

    def load(self, keys: set[str]) -> dict[str, list[Completion]]:
        shards = sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []
        if not shards or not keys:
            return {}
        rows = (
            pl.scan_parquet(shards, schema=SHARD_SCHEMA, missing_columns="insert")
            .filter(pl.col("key").is_in(list(keys)))
            .unique(["key", "sample"], keep="first")
            .sort("key", "sample")
            .collect()
        )
        found: dict[str, list[Completion]] = {}
        for key, text, reason, n_tokens, probs in rows.select("key", "text", "finish_reason", "n_tokens", "choice_probs").iter_rows():
            found.setdefault(key, []).append(Completion(text, reason, n_tokens, None if probs is None else tuple(probs)))
        return found

    def save(self, requests: list[Request], answers: list[list[Completion]]) -> None:
        rows = [
            {"key": r.key, "sample": i, "text": c.text, "finish_reason": c.finish_reason, "n_tokens": c.n_tokens,
             "choice_probs": None if c.choice_probs is None else list(c.choice_probs)}
            for r, completions in zip(requests, answers, strict=True)
            for i, c in enumerate(completions)
        ]
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{stable_hash([r.key for r in requests])[:24]}.parquet"
        partial = final.with_suffix(f".partial-{os.getpid()}")
        pl.DataFrame(rows, schema=SHARD_SCHEMA).write_parquet(partial)
        partial.replace(final)
