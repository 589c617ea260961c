"""Seed data: the shipped seed set, seed tables read from files or versions, and `builder import-oasst`.

Three seed tables, each a plain file format (JSONL/JSON/parquet/CSV) or a table of a version:
- ift: `prompt`, `response` (instruction → good response);
- ranked: `prompt`, `responses` (list), `ranks` (list, 1 = best; equal numbers are equal ranks);
- eft: `prompt`, `response`, `judgment` (a judge rationale ending in `Score: N`).
The shipped set lives in builder/data/seed/ (see its README for how it was written).
"""

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from builder.card import render_kind_card
from builder.errors import BuilderError
from builder.oasst import convert_oasst
from builder.prompts import normalise, read_file
from builder.records import file_sha256, stable_hash
from builder.store import Store, Version, version_id

REQUIRED = {"ift": ("prompt", "response"), "ranked": ("prompt", "responses", "ranks"), "eft": ("prompt", "response", "judgment")}


@dataclass(frozen=True)
class SeedSource:
    spec: str  # what the user gave (or "shipped:<table>")
    path: Path  # the file actually read
    fingerprint: str
    parent: str | None  # the version it came from, if any

    def to_json(self) -> dict:
        return {"spec": self.spec, "path": str(self.path), "fingerprint": self.fingerprint, "parent": self.parent}


def shipped_seed(table: str) -> Path:
    return Path(str(resources.files("builder").joinpath("data", "seed", f"{table}.jsonl")))


def locate_seed(spec: str | None, table: str, store: Store) -> SeedSource:
    """A file, a version id (its `<table>.parquet`), or None for the shipped seed file."""
    if spec is None:
        path = shipped_seed(table)
        return SeedSource(f"shipped:{table}", path, "sha256:" + file_sha256(path), None)
    path = Path(spec).expanduser()
    if path.is_file():
        return SeedSource(spec, path, "sha256:" + file_sha256(path), None)
    folder = store.find(spec, missing_ok=True)
    if folder is not None:
        version = store.load(spec)
        if not (version.folder / f"{table}.parquet").exists():
            raise BuilderError(f"version {version.id} has no {table} table")
        return SeedSource(spec, version.folder / f"{table}.parquet", version.manifest["files"][f"{table}.parquet"]["sha256"], version.id)
    raise BuilderError(f"{table} data {spec!r}: no such file or version")


def read_seed(source: SeedSource, table: str) -> pl.DataFrame:
    frame = read_file(source.path)
    missing = [c for c in REQUIRED[table] if c not in frame.columns]
    if missing:
        raise BuilderError(f"{source.spec} is not {table} data (missing column: {', '.join(missing)})")
    if frame.height == 0:
        raise BuilderError(f"{source.spec} has no rows")
    return frame


def import_oasst(path: str, store: Store, lang: str | None, limit: int | None, seed: int) -> tuple[Version, bool]:
    """oasst1 message rows → a seed version with `prompts`, `ift` and `ranked` tables."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise BuilderError(f"oasst file {path!r}: no such file")
    fingerprint = "sha256:" + file_sha256(file)
    vid = version_id("seed", {"input": fingerprint, "lang": lang, "limit": limit, "seed": seed})
    if store.exists(vid):
        return store.load(vid), False
    prompts_raw, ift, ranked = convert_oasst(read_file(file), path, lang, limit, seed)
    prompts, dropped = normalise(prompts_raw, path, None)
    tables = {"prompts": prompts, "ift": ift, "ranked": ranked, "dropped": dropped}
    manifest = {
        "kind": "seed",
        "parent": None,
        "input": {"spec": path, "format": "oasst1", "fingerprint": fingerprint, "lang": lang, "limit": limit, "seed": seed},
        "identity": {"input": fingerprint, "lang": lang, "limit": limit, "seed": seed},
        "stats": {"prompts": prompts.height, "ift": ift.height, "ranked_groups": ranked.height,
                  "ranked_responses": int(ranked["responses"].list.len().sum() or 0)},
    }
    return store.write_version(vid, tables, manifest, render_kind_card), True


def content_hash(frame: pl.DataFrame, columns: list[str]) -> str:
    return stable_hash(frame.select(columns).rows())
