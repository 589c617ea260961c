"""A version built shard by shard: its finished shards wait in the store's staging until the merge publishes them.

    <store>/.staging/<version-id>/plan.json                  the shard plan every worker follows
    <store>/.staging/<version-id>/shard-00003/               one finished shard: a parquet file per table, done.json
    <store>/.staging/<version-id>/.shard-00003.partial-<pid>/    a shard being written

Rules:
- A shard is written to its partial folder, its completion marker `done.json` last, then renamed into place: a
  shard folder is finished or absent, so a killed worker leaves nothing that counts and the same command
  starts that shard again (its paid work is in the generation cache, so nothing is asked twice).
- One process works on a shard at a time (the store lock `<version-id>.shard-00003`); another that wants the
  same shard waits, then finds it finished. Under that lock any partial folder of the shard is a dead run's.
- The plan (items, shard size, shard count) is written once, by the first worker: a later one follows it whatever
  its own shard size, since the shard size never changes the version. Workers on several machines share the
  staging through the store's filesystem (its file locks must work across them).
- The merge reads the finished shards in order; once the version is published the staging folder is removed.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from builder.core.errors import BuilderError
from builder.core.files import io_problem

if TYPE_CHECKING:
    import polars as pl

    from builder.core.store import Store


@dataclass(frozen=True)
class Plan:
    items: int  # what is cut into shards (prompts)
    shard_size: int

    @property
    def count(self) -> int:
        return max(1, math.ceil(self.items / self.shard_size))

    def rows(self, shard: int) -> range:
        """The items of one shard: a contiguous range, in order."""
        return range(shard * self.shard_size, min((shard + 1) * self.shard_size, self.items))


@dataclass(frozen=True)
class FinishedShard:
    index: int
    folder: Path
    record: dict  # done.json: the shard's rows per table and what the merge needs beyond its tables

    def table(self, name: str) -> Path | None:
        path = self.folder / f"{name}.parquet"
        return path if path.is_file() else None


class Staging:
    def __init__(self, store: Store, version_id: str):
        self.store, self.version_id = store, version_id
        self.folder = store.root / ".staging" / version_id

    def plan(self, items: int, shard_size: int) -> Plan:
        """The build's plan: the recorded one, else this one, recorded (the first writer wins a race)."""
        path = self.folder / "plan.json"
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            partial = self.folder / f".plan.json.partial-{os.getpid()}"
            partial.write_text(json.dumps({"items": items, "shard_size": shard_size}))
            try:
                os.link(partial, path)  # fails when another worker recorded its plan first
            except FileExistsError:
                pass
            finally:
                partial.unlink(missing_ok=True)
        recorded = json.loads(path.read_text())
        if recorded["items"] != items:
            raise BuilderError(f"staging {self.folder} was planned for {recorded['items']} items, not {items}: "
                               "remove it and run again")
        return Plan(items, recorded["shard_size"])

    def recorded_plan(self) -> Plan | None:
        path = self.folder / "plan.json"
        return Plan(**json.loads(path.read_text())) if path.is_file() else None

    def shard_folder(self, shard: int) -> Path:
        return self.folder / f"shard-{shard:05d}"

    def is_finished(self, shard: int) -> bool:
        return (self.shard_folder(shard) / "done.json").is_file()

    def unfinished(self, plan: Plan) -> list[int]:
        return [k for k in range(plan.count) if not self.is_finished(k)]

    def run(self, shard: int, build: Callable[[], tuple[dict[str, pl.DataFrame], dict]]) -> bool:
        """Build one shard unless it is finished; True when this call finished it. `build` returns the shard's
        tables and its record (JSON) for the merge."""
        if self.is_finished(shard):
            return False
        with self.store.lock(f"{self.version_id}.shard-{shard:05d}"):
            if self.is_finished(shard):
                return False
            for dead in self.folder.glob(f".shard-{shard:05d}.partial-*"):  # a dead run's: we hold the shard's lock
                shutil.rmtree(dead, ignore_errors=True)
            tables, record = build()
            self.write(shard, tables, record)
        return True

    def write(self, shard: int, tables: dict[str, pl.DataFrame], record: dict) -> None:
        from builder.core.store import write_table

        partial = self.folder / f".shard-{shard:05d}.partial-{os.getpid()}"
        try:
            partial.mkdir(parents=True)
            for name, table in tables.items():
                write_table(table, partial / f"{name}.parquet")
            rows = {name: table.height for name, table in tables.items()}
            (partial / "done.json").write_text(json.dumps({"shard": shard, "rows": rows} | record, indent=1, ensure_ascii=False))
            partial.rename(self.shard_folder(shard))
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            if not self.is_finished(shard):  # not a finished copy already in place
                raise BuilderError(f"cannot save shard {shard} in {self.folder}: {io_problem(error)} "
                                   "(the generations it was built from are kept)") from None

    def finished(self, plan: Plan) -> list[FinishedShard]:
        missing = self.unfinished(plan)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise BuilderError(f"{self.version_id}: {len(missing)} of {plan.count} shards are not finished ({shown}); "
                               "run them (the same command, or --shard I/N), then merge")
        return [FinishedShard(k, self.shard_folder(k), json.loads((self.shard_folder(k) / "done.json").read_text()))
                for k in range(plan.count)]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
