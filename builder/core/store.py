"""The store: a folder of immutable dataset versions, plus the generation cache that feeds them.

    <store>/<version-id>/           one finished version: parquet tables, README.md (card), manifest.json
    <store>/.cache/generations/…   every paid-for generation, keyed by request content (see cache.py)

A version is written to a hidden temporary folder, its manifest last, then renamed into place and made
read-only: a folder with a manifest is complete, and nothing else is ever listed as a version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import builder
from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
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
        # Set by `builder run`: the recipe (name, path, sha256) recorded in everything written through this store.
        self.recipe = recipe

    def generation_cache(self, generator_identity: dict) -> GenerationCache:
        from builder.core.cache import GenerationCache

        return GenerationCache(self.root / ".cache" / "generations" / stable_hash(generator_identity)[:16])

    def versions(self) -> list[Version]:
        """Finished versions, newest first."""
        found = []
        for manifest_path in self.root.glob("*/manifest.json"):
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                continue
            found.append(Version(manifest_path.parent.name, manifest_path.parent, Manifest.from_json(manifest)))
        return sorted(found, key=lambda v: v.manifest.created_at, reverse=True)

    def find(self, id_or_prefix: str, missing_ok: bool = False) -> Path | None:
        if "/" in id_or_prefix or not id_or_prefix:
            matches = []
        else:
            matches = [p.parent for p in self.root.glob(f"{id_or_prefix}*/manifest.json")]
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
        return Version(folder.name, folder, Manifest.from_json(json.loads((folder / "manifest.json").read_text())))

    def exists(self, version_id: str) -> bool:
        return (self.root / version_id / "manifest.json").exists()

    def write_version(
        self, manifest: Manifest, tables: dict[str, pl.DataFrame], render_card, extra_files: dict[str, bytes] | None = None
    ) -> Version:
        """Write tables and any other files (plots), then the card (which may read the manifest so far), then the
        manifest; publish by rename. Tables are written with plain `string`/`list` Arrow types."""
        version_id = manifest.id
        final = self.root / version_id
        partial = self.root / f".partial-{version_id}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        files = {}
        for name, table in tables.items():
            path = partial / f"{name}.parquet"
            write_table(table, path)
            files[path.name] = {"rows": table.height}
        for name, content in (extra_files or {}).items():
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
        partial = self.root / f".partial-{version_id}-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        for name in [*manifest["files"], "manifest.json"]:
            shutil.copyfile(source / name, partial / name)
            (partial / name).chmod(0o444)
        partial.rename(final)
        return Version(version_id, final, Manifest.from_json(manifest))

    def verify(self, version: Version) -> list[str]:
        """Names of files whose checksum no longer matches the manifest."""
        bad = []
        for name, meta in version.manifest.files.items():
            path = version.folder / name
            if not path.exists() or file_sha256(path) != meta["sha256"]:
                bad.append(name)
        return bad


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
