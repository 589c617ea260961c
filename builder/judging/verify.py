"""Verifiers over candidates: every candidate of a prompt that carries constraints is checked against each of
them (builder/judging/constraints.py), one `checks` row per candidate and constraint.

A candidate *passes* when it passes every constraint of its prompt; its *check share* is the share it passes.
Both are null for a prompt without constraints: there is nothing to verify.
"""

import json

import polars as pl

from builder.core.errors import BuilderError
from builder.core.schemas import CHECKS_SCHEMA
from builder.judging.constraints import Constraint, check, from_json


def prompt_constraints(prompts: pl.DataFrame) -> dict[str, list[Constraint]]:
    """prompt_id → its constraints, for the prompts that carry any; a malformed row is one line naming it."""
    if "constraints" not in prompts.columns:
        return {}
    found = {}
    for prompt_id, source_row, text in prompts.select("prompt_id", "source_row", "constraints").iter_rows():
        if text is None or not text.strip():
            continue
        try:
            constraints = from_json(text)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            raise BuilderError(f"prompts row {source_row}: bad constraints ({error})") from None
        if constraints:
            found[prompt_id] = constraints
    return found


def check_candidates(constraints: dict[str, list[Constraint]], candidates: pl.DataFrame) -> pl.DataFrame:
    """One row per candidate and constraint of its prompt: passed, and what the checker measured."""
    rows = []
    for candidate_id, prompt_id, response in candidates.select("candidate_id", "prompt_id", "response").iter_rows():
        for index, constraint in enumerate(constraints.get(prompt_id, [])):
            try:
                result = check(constraint, response or "")
            except TypeError as error:  # parameters that do not fit the kind
                raise BuilderError(f"prompt {prompt_id}: constraint {constraint.kind} has bad parameters ({error})") from None
            rows.append({"candidate_id": candidate_id, "prompt_id": prompt_id, "constraint_index": index, "kind": constraint.kind,
                         "params": json.dumps(constraint.params, ensure_ascii=False, sort_keys=True),
                         "passed": result.passed, "detail": result.detail})
    return pl.DataFrame(rows, schema=CHECKS_SCHEMA)


def with_checks(candidates: pl.DataFrame, checks: pl.DataFrame) -> pl.DataFrame:
    """Candidates with `checks_passed`, `checks_total`, `check_share` and `passed` (null: nothing to check)."""
    per_candidate = checks.group_by("candidate_id").agg(
        pl.col("passed").sum().cast(pl.Int32).alias("checks_passed"), pl.len().cast(pl.Int32).alias("checks_total"))
    return candidates.join(per_candidate, on="candidate_id", how="left", maintain_order="left").with_columns(
        (pl.col("checks_passed") / pl.col("checks_total")).alias("check_share"),
        (pl.col("checks_passed") == pl.col("checks_total")).alias("passed"),
    )
