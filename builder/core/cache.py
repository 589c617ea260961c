"""Paid-for work is saved as it completes and never computed twice.

The cache is a folder of parquet shards, each row one sample of one request (key, sample, text, …).
- A shard is written to a temporary name and renamed, so a kill leaves either a whole shard or none.
  Only successful completions are ever written: a failed call leaves no trace and is asked again.
- Lookups filter the shards' key column by the requested keys (read first; the other columns are read only for
  the rows that match): their cost grows with the rows read, not with shards × keys.
- Shards are compacted by level, so that their number stays small: a new shard is level 0; when a level
  holds `fan_in` shards or more, they are merged into one shard of the next level (written under a new
  name, renamed into place, and only then are the merged ones deleted). A reader that sees both the merged
  shard and its inputs reads some rows twice; every read keeps one row per (key, sample), so that is harmless,
  and a kill at any point leaves a readable cache that has lost nothing. A merged shard names its inputs in
  its parquet metadata, so that inputs left behind by a kill are deleted by the next compaction.
- A shard that cannot be written (a full disk) stops the run with one line; the shards before it stay, and a
  half-written `*.partial-<pid>` file is removed (by this process at once, or later once its process is gone).
  A cache folder that cannot be written is found before anything is generated.
"""

import errno
import fcntl
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from builder.core.errors import BuilderError
from builder.core.files import io_problem, stale_partials
from builder.core.records import Completion, Request, stable_hash

SHARD_SCHEMA = {"key": pl.String, "sample": pl.Int32, "text": pl.String, "finish_reason": pl.String, "n_tokens": pl.Int32,
                "choice_probs": pl.List(pl.Float64)}  # shards written before choice_probs existed read it as null
LEVEL = re.compile(r"^L(\d+)-")
READ_ATTEMPTS = 5  # a concurrent compaction may delete a shard between listing and reading: list again


def shard_level(path: Path) -> int:
    """Level of a shard from its name: `L2-….parquet` is level 2; a plain `….parquet` (every new shard, and
    every shard written before compaction existed) is level 0."""
    match = LEVEL.match(path.name)
    return int(match.group(1)) if match else 0


def key_list(keys: Iterable[str]) -> pl.Expr:
    """The keys as one list literal, for `is_in`: a filter the parquet reader applies to the key column before
    it reads the other columns of the few rows that match."""
    series = keys if isinstance(keys, pl.Series) else pl.Series("key", list(keys), pl.String)
    return pl.lit(series.unique().implode())


def completions_frame(requests: list[Request], answers: list[list[Completion]]) -> pl.DataFrame:
    """One row per sample of each request, as a shard holds them."""
    columns: dict[str, list] = {name: [] for name in SHARD_SCHEMA}
    for request, completions in zip(requests, answers, strict=True):
        for i, c in enumerate(completions):
            probs = None if c.choice_probs is None else list(c.choice_probs)
            for name, value in zip(SHARD_SCHEMA, (request.key, i, c.text, c.finish_reason, c.n_tokens, probs)):
                columns[name].append(value)
    return pl.DataFrame(columns, schema=SHARD_SCHEMA)


class GenerationCache:
    def __init__(self, folder: Path, fan_in: int = 16):
        self.folder = folder
        self.fan_in = fan_in
        self.swept = False

    def shards(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet")) if self.folder.is_dir() else []

    def table(self, keys: Iterable[str], columns: tuple[str, ...] = tuple(SHARD_SCHEMA)) -> pl.DataFrame:
        """The cached rows of these keys, one per (key, sample), sorted by key and sample."""
        wanted = key_list(keys)
        for attempt in range(READ_ATTEMPTS):
            shards = self.shards()
            if not shards:
                break
            try:
                return (
                    pl.scan_parquet(shards, schema=SHARD_SCHEMA, missing_columns="insert")
                    .select(*dict.fromkeys(("key", "sample", *columns)))
                    .filter(pl.col("key").is_in(wanted))
                    .unique(["key", "sample"], keep="first")
                    .sort("key", "sample")
                    .select(columns)
                    .collect()
                )
            except (FileNotFoundError, pl.exceptions.ComputeError):
                if attempt == READ_ATTEMPTS - 1 or all(s.exists() for s in shards):
                    raise
        return pl.DataFrame(schema={c: SHARD_SCHEMA[c] for c in columns})

    def cached_keys(self, keys: Iterable[str]) -> set[str]:
        """Those of the keys that have an answer in the cache."""
        return set(self.table(keys, columns=("key",))["key"].unique().to_list())

    def load(self, keys: Iterable[str]) -> dict[str, list[Completion]]:
        found: dict[str, list[Completion]] = {}
        for key, text, reason, n_tokens, probs in self.table(keys).select("key", "text", "finish_reason", "n_tokens", "choice_probs").iter_rows():
            found.setdefault(key, []).append(Completion(text, reason, n_tokens, None if probs is None else tuple(probs)))
        return found

    def save(self, requests: list[Request], answers: list[list[Completion]]) -> None:
        """Write one level-0 shard of these answers, then compact if a level has grown full."""
        self.save_frame(completions_frame(requests, answers))

    def save_frame(self, frame: pl.DataFrame) -> None:
        """save() for answers already in a shard's table form."""
        final = self.folder / f"{stable_hash(frame['key'].unique(maintain_order=True).to_list())[:24]}.parquet"
        try:
            self.check_writable()
            write_atomically(frame, final)
        except (OSError, pl.exceptions.PolarsError) as error:
            raise BuilderError(f"cannot save generations in {self.folder}: {io_problem(error)} (the batches saved before are kept)") from None
        self.compact()

    def check_writable(self) -> None:
        """Called before anything is generated, so that a read-only store costs no paid work; also sweeps
        away the half-written shards of runs that are gone."""
        if self.swept:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not os.access(self.folder, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self.folder))
            for stale in stale_partials(self.folder):
                stale.unlink(missing_ok=True)
        except OSError as error:
            raise BuilderError(f"cannot save generations in {self.folder}: {io_problem(error)}") from None
        self.swept = True

    def compact(self) -> None:
        """Merge every level that holds `fan_in` shards or more into one shard of the next level, lowest level
        first. One process compacts a folder at a time; another that finds it busy leaves it to that one."""
        with open(self.folder / ".compact.lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            try:
                self._delete_merged_leftovers()
                while full := self._full_level():
                    merge(full, self.folder / f"L{shard_level(full[0]) + 1}-{stable_hash([p.name for p in full])[:24]}.parquet")
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _delete_merged_leftovers(self) -> None:
        for shard in self.shards():
            if shard_level(shard) > 0:
                for name in json.loads(pl.read_parquet_metadata(shard).get("merged", "[]")):
                    (self.folder / name).unlink(missing_ok=True)

    def _full_level(self) -> list[Path]:
        by_level: dict[int, list[Path]] = {}
        for shard in self.shards():
            by_level.setdefault(shard_level(shard), []).append(shard)
        return next((shards for _, shards in sorted(by_level.items()) if len(shards) >= self.fan_in), [])


def merge(shards: list[Path], target: Path) -> None:
    """One shard with every (key, sample) of these shards, published before they are deleted."""
    rows = pl.scan_parquet(shards, schema=SHARD_SCHEMA, missing_columns="insert").unique(["key", "sample"], keep="first", maintain_order=True).collect()
    write_atomically(rows, target, {"merged": json.dumps([shard.name for shard in shards])})
    for shard in shards:
        shard.unlink(missing_ok=True)


def write_atomically(frame: pl.DataFrame, final: Path, metadata: dict[str, str] | None = None) -> None:
    partial = final.with_name(f".{final.name}.partial-{os.getpid()}")
    try:
        frame.write_parquet(partial, metadata=metadata)
        partial.replace(final)
    except Exception:  # a full disk: no half-written file stays behind
        partial.unlink(missing_ok=True)
        raise
