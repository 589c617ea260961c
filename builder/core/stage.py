"""The stage seam: the one place that turns a stage's work into a version.

A stage resolves its inputs and models, states its identity (everything that decides its result) and
hands a `run` function to `build_version`, which owns the rest: the version id, the `already built` check,
timing, the manifest's common fields, the card, checksums and the atomic, manifest-last write.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from builder.core.manifest import Manifest
from builder.core.store import Store, Version


@dataclass
class StageOutput:
    """What a stage's run returns: its tables, the manifest's kind-specific fields, its card and other files."""

    tables: dict[str, pl.DataFrame]
    manifest: Manifest
    render_card: Callable[[Manifest, dict[str, pl.DataFrame]], str]
    extra_files: dict[str, bytes] = field(default_factory=dict)


def build_version(store: Store, kind: str, identity: dict, run: Callable[[str], StageOutput]) -> tuple[Version, bool]:
    """The version for this identity: the stored one if it exists (built_now False), else run the stage (given
    the id its version will have) and write what it returns. Returns (version, built_now)."""
    vid = Manifest(kind, identity=identity).expected_id()
    with store.lock(vid):  # a second run of this configuration waits here, then finds it built
        if store.exists(vid):
            return store.load(vid), False
        started = time.perf_counter()
        output = run(vid)
        manifest = output.manifest
        manifest.kind, manifest.id, manifest.identity = kind, vid, identity
        manifest.timing_s = {**manifest.timing_s, "total": round(time.perf_counter() - started, 2)}
        return store.write_version(manifest, output.tables, output.render_card, output.extra_files), True


def identity_problem(version: Version, in_store: bool = True) -> str | None:
    """Why the manifest does not name this version, or None: the id must be the hash of the manifest's own kind
    and identity (so an edited seed or model shows), and a folder in a store must carry that id."""
    manifest = version.manifest
    if not isinstance(manifest.identity, dict) or not manifest.identity or not isinstance(manifest.kind, str):
        return "the manifest has no kind and identity to check the id against"
    expected = manifest.expected_id()
    if manifest.id != expected:
        return f"the manifest's identity gives {expected}, not {manifest.id} (the manifest was edited)"
    if in_store and version.folder.name != expected:
        return f"the folder {version.folder.name} holds version {expected}"
    return None
