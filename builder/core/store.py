"""The store: a folder of immutable dataset versions, plus the generation cache that feeds them.

    <store>/<version-id>/           one finished version: parquet tables, README.md (card), manifest.json
    <store>/.cache/generations/…   every paid-for generation, keyed by request content (see cache.py)

A version is written to a hidden temporary folder (`.partial-<id>-<pid>`), its manifest last, then renamed
into place and made read-only: only a folder whose name does not start with a dot and that holds a manifest
is a version. A partial folder whose process is gone is removed when the same version is written again, or
by `builder verify --repair`.

One configuration is built by one process at a time: `Store.lock(version_id)` is held from the check that
the version is missing to its final rename, so a second run of the same configuration waits, then finds
it built; different configurations take different locks and run side by side.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock, Timeout

import builder
from builder.core.errors import BuilderError
from builder.core.files import io_problem, stale_partials
from builder.core.manifest import Manifest
from builder.core.progress import console
from builder.core.records import file_sha256, stable_hash

if TYPE_CHECKING:  # polars and the cache load only when a version is written or generated
    import polars as pl
    import pyarrow as pa

    from builder.core.cache import GenerationCache

DEFAULT_STORE = "builder-store"


@dataclass(frozen=True)
class Version:
    id: str
    folder: Path
    manifest: Manifest


class Store:
    def __init__(self, root: str | Path | None = None, recipe: dict | None = None):
        self.root = Path(root or os.environ.get("BUILDER_STORE") or DEFAULT_STORE).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise BuilderError(f"store {self.root} is a file, not a folder")
        # Set by `builder run`: the recipe (name, path, sha256) recorded in everything written through this store.
        self.recipe = recipe

    @contextlib.contextmanager
    def lock(self, version_id: str) -> Iterator[None]:
        """Held while one process builds `version_id`; another process asking for it waits (re-entrant
        within a process). Taking it is also the first write to the store, so an unwritable store stops here,
        before any work."""
        folder = self.root / ".locks"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self.root))
            lock = FileLock(folder / f"{version_id}.lock", is_singleton=True)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                console.print(f"waiting: another run is building {version_id} in this store")
                lock.acquire()
        except OSError as error:
            raise BuilderError(f"store {self.root} is not writable: {error.strerror or error}") from None
        try:
            yield
        finally:
            lock.release()

    def generation_cache(self, generator_identity: dict) -> GenerationCache:
        from builder.core.cache import GenerationCache

        return GenerationCache(self.root / ".cache" / "generations" / stable_hash(generator_identity)[:16])

    def version_folders(self, prefix: str = "") -> list[Path]:
        """Folders that are versions: not hidden (a `.partial-…` folder is never one), with a manifest."""
        if not self.root.is_dir():
            return []
        return sorted(
            p for p in self.root.iterdir()
            if p.name.startswith(prefix) and not p.name.startswith(".") and (p / "manifest.json").is_file()
        )

    def versions(self) -> list[Version]:
        """Finished versions, newest first; one whose manifest cannot be read is left out (`show` says why)."""
        found = []
        for folder in self.version_folders():
            try:
                found.append(Version(folder.name, folder, read_manifest(folder)))
            except BuilderError:
                continue
        return sorted(found, key=lambda v: v.manifest.created_at, reverse=True)

    def find(self, id_or_prefix: str, missing_ok: bool = False) -> Path | None:
        if "/" in id_or_prefix or not id_or_prefix or id_or_prefix.startswith("."):
            matches = []
        else:
            matches = self.version_folders(id_or_prefix)
        exact = [m for m in matches if m.name == id_or_prefix]
        if exact or len(matches) == 1:
            return (exact or matches)[0]
        if len(matches) > 1:
            raise BuilderError(f"version prefix {id_or_prefix!r} is ambiguous: {', '.join(sorted(m.name for m in matches))}")
        if missing_ok:
            return None
        raise BuilderError(f"no version {id_or_prefix!r} in store {self.root}")

    def load(self, id_or_prefix: str) -> Version:
        folder = self.find(id_or_prefix)
        return Version(folder.name, folder, read_manifest(folder))

    def exists(self, version_id: str) -> bool:
        return (self.root / version_id / "manifest.json").exists()

    def stale_partials(self) -> list[Path]:
        """Half-written versions and cache shards whose writing process is gone."""
        shards = [p for folder in (self.root / ".cache" / "generations").glob("*") for p in stale_partials(folder)]
        return stale_partials(self.root) + shards

    def remove_stale_partials(self, version_id: str | None = None) -> list[Path]:
        """Every leftover of a dead run, or only the half-written folders of `version_id`."""
        if version_id is None:
            found = self.stale_partials()
        else:
            found = [p for p in stale_partials(self.root) if p.name.startswith(f".partial-{version_id}-")]
        for path in found:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return found

    def write_version(
        self, manifest: Manifest, tables: dict[str, pl.DataFrame], render_card, extra_files: dict[str, bytes] | None = None
    ) -> Version:
        """Write tables and any other files (plots), then the card (which may read the manifest so far), then the
        manifest; publish by rename. Under the version's lock; a failed write (a full disk) leaves nothing
        behind and says so in one line, and the generations it was built from stay in the cache.
        Tables are written with plain `string`/`list` Arrow types."""
        import polars as pl

        version_id = manifest.id
        with self.lock(version_id):
            if self.exists(version_id):  # built meanwhile by a caller that did not hold the lock
                return self.load(version_id)
            self.remove_stale_partials(version_id)
            partial = self.root / f".partial-{version_id}-{os.getpid()}"
            try:
                return self._write_partial(partial, version_id, tables, manifest, render_card, extra_files or {})
            except (OSError, pl.exceptions.PolarsError) as error:
                shutil.rmtree(partial, ignore_errors=True)
                raise write_error(self.root / version_id, error) from None

    def _write_partial(self, partial: Path, version_id: str, tables, manifest: Manifest, render_card, extra_files: dict) -> Version:
        final = self.root / version_id
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        files = {}
        for name, table in tables.items():
            path = partial / f"{name}.parquet"
            write_table(table, path)
            files[path.name] = {"rows": table.height}
        for name, content in extra_files.items():
            (partial / name).write_bytes(content)
        manifest.created_at, manifest.code_version, manifest.recipe = now(), code_version(), self.recipe
        manifest.counts = {name: table.height for name, table in tables.items()} | manifest.counts
        (partial / "README.md").write_text(render_card(manifest, tables), encoding="utf-8")
        for path in sorted(partial.iterdir()):
            files.setdefault(path.name, {})
            files[path.name] |= {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        manifest.files = files
        (partial / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
        for path in partial.iterdir():
            path.chmod(0o444)
        partial.rename(final)
        return Version(version_id, final, manifest)

    def add_copy(self, source: Path, manifest: dict) -> Version:
        """Install a finished version from another folder (a download): the files its manifest lists and the
        manifest, copied into a hidden folder, made read-only and published by rename like a version built here."""
        version_id = manifest["id"]
        final = self.root / version_id
        with self.lock(version_id):
            if self.exists(version_id):
                return self.load(version_id)
            self.remove_stale_partials(version_id)
            partial = self.root / f".partial-{version_id}-{os.getpid()}"
            try:
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                for name in [*manifest["files"], "manifest.json"]:
                    shutil.copyfile(source / name, partial / name)
                    (partial / name).chmod(0o444)
                partial.rename(final)
            except OSError as error:
                shutil.rmtree(partial, ignore_errors=True)
                raise write_error(final, error) from None
        return Version(version_id, final, Manifest.from_json(manifest))

    def verify(self, version: Version) -> list[str]:
        """Names of files whose checksum no longer matches the manifest."""
        files = version.manifest.files
        if not isinstance(files, dict):
            return ["manifest.json (no file list)"]
        bad = []
        for name, meta in files.items():
            path = version.folder / name
            if not path.is_file() or not isinstance(meta, dict) or file_sha256(path) != meta.get("sha256"):
                bad.append(name)
        return bad


def read_manifest(folder: Path) -> Manifest:
    """A version folder's manifest, or one line saying why it cannot be read."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except OSError as error:
        raise BuilderError(f"cannot read {folder / 'manifest.json'}: {error.strerror or error}") from None
    except ValueError as error:
        raise BuilderError(f"{folder / 'manifest.json'} is not valid JSON ({str(error).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise BuilderError(f"{folder / 'manifest.json'} is not a manifest (a JSON object)")
    return Manifest.from_json(manifest)


def write_error(target: Path, error: Exception) -> BuilderError:
    return BuilderError(f"cannot write {target}: {io_problem(error)} (nothing already saved was lost)")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def code_version() -> dict:
    """The package's version, and the commit of the package's own checkout when it runs from one: a copy of
    the package inside some other git repository records no commit (not that repository's)."""
    source = Path(builder.__file__).resolve().parent.parent
    described = None
    if (source / ".git").exists() and (source / "pyproject.toml").exists():
        try:
            described = subprocess.run(
                ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=12"],
                capture_output=True, text=True, timeout=5, check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            described = None
    return {"package": builder.__version__, "git": described}


def plain_types(table: pl.DataFrame) -> pa.Table:
    """The table as Arrow with `string` and `list` instead of polars' `large_string` and `large_list`: the
    types ordinary Hub datasets use, so `datasets.concatenate_datasets` needs no cast."""
    import pyarrow as pa

    def plain(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            return pa.string()
        if pa.types.is_large_list(kind) or pa.types.is_list(kind):
            return pa.list_(plain(kind.value_type))
        if pa.types.is_struct(kind):
            return pa.struct([pa.field(f.name, plain(f.type), f.nullable) for f in kind])
        return kind

    arrow = table.to_arrow()
    return arrow.cast(pa.schema([pa.field(f.name, plain(f.type), f.nullable) for f in arrow.schema]))


def write_table(table: pl.DataFrame, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(plain_types(table), path, compression="zstd")
