"""The store: a folder of immutable dataset versions, plus the generation cache that feeds them.

    <store>/<version-id>/           one finished version: parquet tables, README.md (card), manifest.json
    <store>/.cache/generations/…   every paid-for generation, keyed by request content (see cache.py)
    <store>/.staging/<version-id>/  the finished shards of a version being built shard by shard (see staging.py)

A table is one file `<name>.parquet` when it has at most PART_ROWS rows, else the parts `<name>/00000.parquet`,
`<name>/00001.parquet`, … of PART_ROWS rows each, in order: a list or glob of them is one table to
`datasets.load_dataset("parquet", data_files=...)`, DuckDB's `read_parquet` and polars' `scan_parquet` alike.
`Version.files_of(name)` lists a table's files whatever its layout (versions written before parts existed have
single files only); the manifest lists every file under its relative path.

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


PART_ROWS = 500_000  # rows of one part of a table written in parts
ROW_GROUP_ROWS = 50_000  # rows of one parquet row group of a table written from parts


@dataclass(frozen=True)
class Version:
    id: str
    folder: Path
    manifest: Manifest

    def table_names(self) -> list[str]:
        return sorted(table_files(self.listed_files()))

    def has_table(self, name: str) -> bool:
        return name in table_files(self.listed_files())

    def files_of(self, name: str) -> list[Path]:
        """The table's parquet files, in order ([] when the version has no such table)."""
        return [self.folder / f for f in table_files(self.listed_files()).get(name, [])]

    def scan(self, name: str) -> pl.LazyFrame:
        import polars as pl

        files = self.files_of(name)
        if not files:
            raise BuilderError(f"version {self.id} has no {name} table")
        return pl.scan_parquet(files)

    def read(self, name: str) -> pl.DataFrame:
        return self.scan(name).collect()

    def listed_files(self) -> list[str]:
        """The manifest's files; for a manifest without a file list, the files on disk."""
        if isinstance(self.manifest.files, dict) and self.manifest.files:
            return list(self.manifest.files)
        return [p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*.parquet")]


def table_files(names) -> dict[str, list[str]]:
    """Table name → its files, in order, from a version's relative file names: `t.parquet` alone, or the parts
    `t/00000.parquet`, …"""
    tables: dict[str, list[str]] = {}
    for name in sorted(names):
        table, slash, part = name.removesuffix(".parquet").partition("/")
        if name.endswith(".parquet") and "/" not in part and (not slash or part.isdigit()):
            tables.setdefault(table, []).append(name)
    return tables


def data_files(name: str, rows: int) -> str:
    """The `data_files` of a table in a dataset card: its one file, or the glob of its parts."""
    return f"{name}/*.parquet" if rows > PART_ROWS else f"{name}.parquet"


@dataclass(frozen=True)
class Parts:
    """A table already written as parquet files (a built shard's tables, in staging), in order, not in memory."""

    files: tuple[Path, ...]
    height: int


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
        return stale_partials(self.root) + shards + stale_partials(self.root / ".cache" / "prompts")

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
            if isinstance(table, Parts) or table.height > PART_ROWS:
                files |= write_parts(table, partial, name)
            else:
                write_table(table, partial / f"{name}.parquet")
                files[f"{name}.parquet"] = {"rows": table.height}
        for name, content in extra_files.items():
            (partial / name).write_bytes(content)
        manifest.created_at, manifest.code_version, manifest.recipe = now(), code_version(), self.recipe
        manifest.counts = {name: table.height for name, table in tables.items()} | manifest.counts
        (partial / "README.md").write_text(render_card(manifest, tables), encoding="utf-8")
        for path in sorted(p for p in partial.rglob("*") if p.is_file()):
            name = path.relative_to(partial).as_posix()
            files.setdefault(name, {})
            files[name] |= {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        manifest.files = files
        (partial / "manifest.json").write_text(json.dumps(manifest.to_json(), indent=2, ensure_ascii=False), encoding="utf-8")
        for path in partial.rglob("*"):
            if path.is_file():
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
                    (partial / name).parent.mkdir(parents=True, exist_ok=True)
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


def write_parts(table: Parts | pl.DataFrame, folder: Path, name: str) -> dict[str, dict]:
    """Write a table in the store's layout (one file, or parts of PART_ROWS rows) from its parts or from memory,
    streaming ROW_GROUP_ROWS rows at a time. The files' bytes depend on the rows alone, not on how the parts
    were cut (every row group holds ROW_GROUP_ROWS rows in one chunk), so shards of any size give the same files.
    Returns {relative file name: {"rows": n}}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, Parts):
        schema = pq.read_schema(table.files[0]).remove_metadata()
        batches = (batch for path in table.files for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP_ROWS))
    else:
        arrow = plain_types(table)
        schema, batches = arrow.schema, iter(arrow.to_batches(max_chunksize=ROW_GROUP_ROWS))
    many = table.height > PART_ROWS
    if many:
        (folder / name).mkdir()
    written: dict[str, dict] = {}
    writer = None
    for index, group in enumerate(row_groups(batches, schema)):
        if index % (PART_ROWS // ROW_GROUP_ROWS) == 0:
            if writer is not None:
                writer.close()
            relative = f"{name}/{len(written):05d}.parquet" if many else f"{name}.parquet"
            writer = pq.ParquetWriter(folder / relative, schema, compression="zstd")
            written[relative] = {"rows": 0}
        writer.write_table(group, row_group_size=ROW_GROUP_ROWS)
        written[relative]["rows"] += group.num_rows
    if writer is None:  # no rows: one empty file with the schema
        pq.write_table(pa.Table.from_batches([], schema), folder / f"{name}.parquet", compression="zstd")
        return {f"{name}.parquet": {"rows": 0}}
    writer.close()
    return written


def row_groups(batches, schema: pa.Schema):
    """Tables of exactly ROW_GROUP_ROWS rows each (the last one shorter), each column one contiguous chunk."""
    import pyarrow as pa

    pending: list = []
    count = 0
    for batch in batches:
        if not batch.num_rows:
            continue
        pending.append(batch.cast(schema) if batch.schema != schema else batch)
        count += batch.num_rows
        while count >= ROW_GROUP_ROWS:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, ROW_GROUP_ROWS).combine_chunks()
            rest = table.slice(ROW_GROUP_ROWS)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending, schema).combine_chunks()
