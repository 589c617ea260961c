"""Paid-for work is saved as it completes and never computed twice.

The cache is a folder of parquet shards, one per finished batch (or, for backends that answer one request
at a time, per second of answers), each row one sample of one request.
A shard is written to a temporary name and renamed, so a kill leaves either a whole shard or none.
Only successful completions are ever written: a failed call leaves no trace and is asked again.
A shard that cannot be written (a full disk) stops the run with one line; the shards before it stay, and a
half-written `*.partial-<pid>` file is removed (by this process at once, or later once its process is gone).
A cache folder that cannot be written is found before anything is generated.
"""

import errno
import os
import re
from pathlib import Path

import polars as pl

from builder.core.errors import BuilderError
from builder.core.records import Completion, Request, stable_hash

_PARTIAL = re.compile(r"\.partial-(\d+)$")

SHARD_SCHEMA = {"key": pl.String, "sample": pl.Int32, "text": pl.String, "finish_reason": pl.String, "n_tokens": pl.Int32}


class GenerationCache:
    def __init__(self, folder: Path):
        self.folder = folder
        self.swept = False

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
        final = self.folder / f"{stable_hash([r.key for r in requests])[:24]}.parquet"
        partial = final.with_suffix(f".partial-{os.getpid()}")
        try:
            self.check_writable()
            pl.DataFrame(rows, schema=SHARD_SCHEMA).write_parquet(partial)
            partial.replace(final)
        except (OSError, pl.exceptions.PolarsError) as error:
            partial.unlink(missing_ok=True)
            raise BuilderError(f"cannot save generations in {self.folder}: {io_problem(error)} (the batches saved before are kept)") from None

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


def io_problem(error: Exception) -> str:
    """What went wrong writing a file, in a few words, with a hint when the disk is full. Polars reports its
    own write failures as ComputeError with the OS error inside the text."""
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error).splitlines()[0]
    text = text.rpartition("underlying IO error: ")[2] or text
    full = (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) or "os error 28" in text
    return text + ("; free some space and run the same command again" if full else "")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def stale_partials(folder: Path) -> list[Path]:
    """`.partial-<id>-<pid>` folders and `*.partial-<pid>` shards in `folder` whose process is gone."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _PARTIAL.search(path.name) if path.is_file() else re.fullmatch(r"\.partial-.+-(\d+)", path.name)
        if match and not pid_alive(int(match.group(1))):
            found.append(path)
    return sorted(found)
