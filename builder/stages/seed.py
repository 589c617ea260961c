"""Seed data: the shipped seed set, seed tables read from files or versions, and `builder import-oasst`.

Three seed tables, each a file (JSONL/JSON/parquet/CSV), a `datasets` dataset (a saved folder, or hf:NAME[:SPLIT]
from the Hub) or a table of a version:
- ift: `prompt`, `response` (instruction → good response);
- ranked: `prompt`, `responses` (list), `ranks` (list, 1 = best; equal numbers are equal ranks);
- eft: `prompt`, `response`, `judgment` (a judge rationale ending in `Score: N`).
The shipped set lives in builder/data/seed/ (see its README for how it was written).
"""

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from builder.core.cards import render_kind_card
from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.prompts import normalise, read_file, read_source
from builder.core.records import file_sha256
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.stages.configs import ImportOasstConfig
from builder.stages.oasst import convert_oasst

# The tables of a version that can stand for each kind of seed data: an EFT version's held-out groups are ranked data.
TABLES_OF = {"ift": ("ift",), "ranked": ("ranked", "heldout"), "eft": ("eft",)}
REQUIRED = {"ift": ("prompt", "response"), "ranked": ("prompt", "responses", "ranks"), "eft": ("prompt", "response", "judgment")}


@dataclass(frozen=True)
class SeedSource:
    spec: str  # what the user gave (or "shipped:<table>")
    fingerprint: str
    parent: str | None  # the version it came from, if any

    def to_json(self) -> dict:
        return {"spec": self.spec, "fingerprint": self.fingerprint, "parent": self.parent}


def shipped_seed(table: str) -> Path:
    return Path(str(resources.files("builder").joinpath("data", "seed", f"{table}.jsonl")))


def load_seed(spec: str | None, table: str, store: Store) -> tuple[pl.DataFrame, SeedSource]:
    """The rows of one seed table from a file, a saved `datasets` folder, hf:NAME[:SPLIT], a version (its
    `<table>.parquet`, by id or folder), or, for None, the shipped seed file."""
    if spec is None:
        path = shipped_seed(table)
        frame, source = read_file(path), SeedSource(f"shipped:{table}", "sha256:" + file_sha256(path), None)
    elif (folder := _version_folder(spec, store)) is not None:
        version = Version(folder.name, folder, Manifest.from_json(json.loads((folder / "manifest.json").read_text())))
        found = next((name for name in TABLES_OF[table] if f"{name}.parquet" in version.manifest.files), None)
        if found is None:
            raise BuilderError(f"version {version.id} has no {table} table")
        frame = pl.read_parquet(folder / f"{found}.parquet")
        source = SeedSource(spec, "sha256:" + version.manifest.files[f"{found}.parquet"]["sha256"], version.id)
    else:
        frame, found = read_source(spec, None, what=f"{table} data")
        source = SeedSource(spec, found.fingerprint, None)
    missing = [c for c in REQUIRED[table] if c not in frame.columns]
    if missing:
        raise BuilderError(f"{spec or source.spec} is not {table} data (missing column: {', '.join(missing)})")
    if frame.height == 0:
        raise BuilderError(f"{source.spec} has no rows")
    return frame, source


def _version_folder(spec: str, store: Store) -> Path | None:
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "manifest.json").exists():
        return path
    return None if path.exists() else store.find(spec, missing_ok=True)


def import_oasst(config: ImportOasstConfig, store: Store) -> tuple[Version, bool]:
    """oasst1 message rows → a seed version with `prompts`, `ift` and `ranked` tables."""
    config.validate()
    path, lang, limit, seed = config.path, config.lang or None, config.limit, config.seed
    messages, found = read_source(path, None, what="oasst1 data")
    fingerprint = found.fingerprint

    def run(vid: str) -> StageOutput:
        prompts_raw, ift, ranked = convert_oasst(messages, path, lang, limit, seed)
        prompts, dropped = normalise(prompts_raw, path, None, fingerprint)
        tables = {"prompts": prompts, "ift": ift, "ranked": ranked, "dropped": dropped}
        manifest = Manifest(
            kind="seed",
            inputs={"oasst": {"spec": path, "format": "oasst1", "fingerprint": fingerprint, "lang": lang, "limit": limit}},
            seed=seed,
            stats={"prompts": prompts.height, "ift": ift.height, "ranked_groups": ranked.height,
                   "ranked_responses": int(ranked["responses"].list.len().sum() or 0)},
        )
        return StageOutput(tables, manifest, render_kind_card)

    return build_version(store, "seed", {"input": fingerprint, "lang": lang, "limit": limit, "seed": seed}, run)
