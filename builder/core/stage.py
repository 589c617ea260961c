"""The stage seam: the one place that turns a stage's work into a version.

A stage resolves its inputs and models, states its identity (everything that decides its result) and
hands a `run` function to `build_version`, which owns the rest: the version id, the `already built` check,
timing, the manifest's common fields, the card, checksums and the atomic, manifest-last write.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.staging import FinishedShard, Staging
from builder.core.store import Parts, Store, Version


@dataclass
class StageOutput:
    """What a stage's run returns: its tables, the manifest's kind-specific fields, its card and other files."""

    tables: dict[str, pl.DataFrame | Parts]
    manifest: Manifest
    render_card: Callable[[Manifest, dict[str, pl.DataFrame | Parts]], str]
    extra_files: dict[str, bytes] = field(default_factory=dict)


@dataclass
class Sharded:
    """A stage that runs shard by shard: `items` (prompts) cut into shards of `shard_size` in order;
    `run_shard(items)` builds one shard (a range of items) and returns its tables and a JSON record of what the
    merge needs beyond them (its `timing_s` is added up); `merge(shards)` turns the finished shards, in order,
    into the version (its tables as Parts of the shards' files). The version must not depend on the shard size."""

    items: int
    shard_size: int
    run_shard: Callable[[range], tuple[dict[str, pl.DataFrame], dict]]
    merge: Callable[[list[FinishedShard]], StageOutput]


def build_version(store: Store, kind: str, identity: dict, run: Callable[[str], StageOutput]) -> tuple[Version, bool]:
    """The version for this identity: the stored one if it exists (built_now False), else run the stage (given
    the id its version will have) and write what it returns. Returns (version, built_now)."""
    vid = Manifest(kind, identity=identity).expected_id()
    with store.lock(vid):  # a second run of this configuration waits here, then finds it built
        if store.exists(vid):
            return store.load(vid), False
        started = time.perf_counter()
        output = run(vid)
        return _publish(store, kind, vid, identity, output, time.perf_counter() - started), True


def build_sharded(store: Store, kind: str, identity: dict, stage: Sharded,
                  worker: tuple[int, int] | None = None) -> tuple[Version | None, bool]:
    """The version for this identity, built shard by shard: the stored one if it exists (built_now False); else
    run every unfinished shard (worker (I, N): those k with k % N == I), each saved in the store's staging as it
    finishes, then, when every shard is finished, merge them (`merge_shards`). A worker that leaves shards to
    others returns (None, False). Several processes may run this at once: each shard is built by one of them."""
    vid = Manifest(kind, identity=identity).expected_id()
    if store.exists(vid):
        return store.load(vid), False
    staging = Staging(store, vid)
    plan = staging.plan(stage.items, stage.shard_size)
    for shard in range(plan.count):
        if worker is None or shard % worker[1] == worker[0]:
            staging.run(shard, lambda shard=shard: stage.run_shard(plan.rows(shard)))
    if staging.unfinished(plan):
        return None, False
    return merge_shards(store, kind, identity, stage)


def merge_shards(store: Store, kind: str, identity: dict, stage: Sharded) -> tuple[Version, bool]:
    """Publish the version from its finished shards (under the version's lock, manifest last, like
    build_version), then remove the staging. BuilderError when a shard is not finished."""
    vid = Manifest(kind, identity=identity).expected_id()
    with store.lock(vid):
        if store.exists(vid):
            return store.load(vid), False
        staging = Staging(store, vid)
        plan = staging.recorded_plan()
        if plan is None:
            raise BuilderError(f"{vid}: no shard has been built yet; run the build first")
        shards = staging.finished(plan)
        started = time.perf_counter()
        output = stage.merge(shards)
        spent: dict[str, float] = {}
        for shard in shards:
            for step, seconds in shard.record.get("timing_s", {}).items():
                spent[step] = spent.get(step, 0.0) + seconds
        output.manifest.timing_s = {**output.manifest.timing_s, **{k: round(v, 2) for k, v in spent.items()},
                                    "merge": round(time.perf_counter() - started, 2)}
        version = _publish(store, kind, vid, identity, output, spent.get("total", 0.0) + time.perf_counter() - started)
    staging.remove()
    return version, True


def _publish(store: Store, kind: str, vid: str, identity: dict, output: StageOutput, seconds: float) -> Version:
    manifest = output.manifest
    manifest.kind, manifest.id, manifest.identity = kind, vid, identity
    manifest.timing_s = {**manifest.timing_s, "total": round(seconds, 2)}
    return store.write_version(manifest, output.tables, output.render_card, output.extra_files)


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
