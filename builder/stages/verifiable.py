"""`builder make-verifiable`: a prompts version whose instructions carry constraints a program can check.

Seed tasks are split by a hash of each task (`split_seed`), so every instruction made from one task lands on
the same side. The training side composes `n_prompts` instructions with `seed`; the held-out side composes
`n_eval` with `split_seed`, so changing `seed` (a new iteration's prompts) keeps the same eval split.

Tables: `prompts` (the training instructions, what `make-pairs --prompts <version>` reads, with a
`constraints` column), `eval` (the held-out ones, `--prompts <version>:eval`), `instructions` (both, with
their task and constraint kinds).
"""

from collections import Counter
from pathlib import Path

import polars as pl

from builder.core.cards import render_kind_card
from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.prompts import PromptSource, load_prompts, normalise
from builder.core.records import stable_hash
from builder.core.schemas import INSTRUCTIONS_SCHEMA
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.judging.constraints import from_json
from builder.judging.instructions import compose, in_eval, load_tasks
from builder.stages.configs import MakeVerifiableConfig


def read_tasks(path: str | None) -> list[str]:
    if path is None:
        return load_tasks()
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError:
        raise BuilderError(f"tasks {path!r}: no such file") from None
    except UnicodeDecodeError:
        raise BuilderError(f"tasks {path}: not UTF-8 text") from None
    return list(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))


def split_tasks(tasks: list[str], eval_share: float, seed: int) -> tuple[list[str], list[str]]:
    held_out = [t for t in tasks if in_eval(t, eval_share, seed)]
    return [t for t in tasks if t not in set(held_out)], held_out


def compose_splits(config: MakeVerifiableConfig, tasks: list[str]) -> tuple[list[dict], list[dict]]:
    """(train rows, eval rows): the same for the same configuration and tasks."""
    train_tasks, eval_tasks = split_tasks(tasks, config.eval_share, config.split_seed)
    if not train_tasks or not eval_tasks:
        raise BuilderError(f"the task split left {len(train_tasks)} training and {len(eval_tasks)} held-out tasks; "
                           "both need at least one (more tasks, or another --eval-share)")
    bounds = (config.min_constraints, config.max_constraints)
    return (compose(train_tasks, config.n_prompts, config.seed, *bounds),
            compose(eval_tasks, config.n_eval, config.split_seed, *bounds))


def make_verifiable(config: MakeVerifiableConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    tasks = read_tasks(config.tasks)
    train, held_out = compose_splits(config, tasks)
    train_tasks, eval_tasks = split_tasks(tasks, config.eval_share, config.split_seed)
    identity = {"instructions": stable_hash([train, held_out]), "n_prompts": config.n_prompts, "n_eval": config.n_eval,
                "eval_share": config.eval_share, "constraints": [config.min_constraints, config.max_constraints],
                "seed": config.seed, "split_seed": config.split_seed}

    def run(vid: str) -> StageOutput:
        prompts, _ = normalise(_prompt_rows(train), vid, None)
        evaluation, _ = normalise(_prompt_rows(held_out), f"{vid}:eval", None)
        instructions = pl.DataFrame(
            [{**row, "split": split, "kinds": [c.kind for c in from_json(row["constraints"])]}
             for split, rows in (("train", train), ("eval", held_out)) for row in rows],
            schema=INSTRUCTIONS_SCHEMA,
        )
        kinds = Counter(kind for kinds in instructions["kinds"].to_list() for kind in kinds)
        manifest = Manifest(
            kind="verifiable",
            inputs={"tasks": {"spec": config.tasks or "shipped:verifiable/tasks.txt", "fingerprint": stable_hash(tasks)}},
            seed=config.seed,
            stats={
                "train_instructions": prompts.height,
                "eval_instructions": evaluation.height,
                "train_tasks": len(train_tasks),
                "eval_tasks": len(eval_tasks),
                "constraint_kinds": len(kinds),
                "constraints_per_instruction": round(sum(kinds.values()) / max(instructions.height, 1), 2),
            },
            extra={"split_seed": config.split_seed, "eval_share": config.eval_share, "kind_counts": dict(sorted(kinds.items()))},
        )
        return StageOutput({"prompts": prompts, "eval": evaluation, "instructions": instructions}, manifest, render_kind_card)

    return build_version(store, "verifiable", identity, run)


def _prompt_rows(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame({"prompt": [r["prompt"] for r in rows], "id": [r["instruction_id"] for r in rows],
                         "constraints": [r["constraints"] for r in rows]}, schema={"prompt": pl.String, "id": pl.String, "constraints": pl.String})


def load_verifiable(spec: str | None, store: Store, limit: int | None = None) -> tuple[pl.DataFrame, PromptSource]:
    """Prompts with constraints for measuring a judge: a verifiable version's eval split (by id or folder), any
    prompts spec whose table has a `constraints` column, or (None) the eval split composed from the shipped
    tasks with make-verifiable's defaults. Prompts without constraints are left out; none at all is an error."""
    if spec is None:
        _, held_out = compose_splits(MakeVerifiableConfig(), load_tasks())
        name = "shipped:verifiable eval split"
        prompts, _ = normalise(_prompt_rows(held_out), name, limit)
        source = PromptSource(name, "composed", f"composed:{stable_hash(held_out)}")
    else:
        path = Path(spec).expanduser()
        if path.is_dir() and (path / "eval.parquet").exists():  # a verifiable version's folder
            spec = str(path / "eval.parquet")
        elif not path.exists() and ":" not in spec and (found := store.find(spec, missing_ok=True)) and (found / "eval.parquet").exists():
            spec = f"{found.name}:eval"
        prompts, _, source = load_prompts(spec, store, limit)
    if "constraints" not in prompts.columns or prompts["constraints"].drop_nulls().len() == 0:
        raise BuilderError(f"{source.spec}: no prompt carries constraints (make some with `builder make-verifiable`)")
    return prompts.filter(pl.col("constraints").is_not_null()), source
