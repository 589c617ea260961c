"""Plain file facts shared by the store and the cache: a write error in a few words, and the half-written files
of processes that are gone."""

import errno
import os
import re
from pathlib import Path

_PARTIAL = re.compile(r"\.partial-(\d+)$")


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
