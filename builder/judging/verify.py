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


LABEL_CLASSES = ("chosen_passes_rejected_fails", "both_pass", "both_fail", "reversed")


def label_quality(pairs: pl.DataFrame | pl.LazyFrame) -> dict:
    """For the pairs whose prompt carries constraints: how many, and the count and share of each class —
    chosen passes and rejected fails (the verifiers agree), both pass, both fail (the verifiers cannot tell),
    reversed (chosen fails and rejected passes: the verifiers disagree)."""
    pairs = pairs.lazy()
    if "chosen_passed" not in pairs.collect_schema().names():
        return {"verified_pairs": 0}
    verified = pairs.filter(pl.col("chosen_passed").is_not_null() & pl.col("rejected_passed").is_not_null())
    chosen, rejected = pl.col("chosen_passed"), pl.col("rejected_passed")
    label = (pl.when(chosen & ~rejected).then(pl.lit(LABEL_CLASSES[0])).when(chosen & rejected).then(pl.lit(LABEL_CLASSES[1]))
             .when(~chosen & ~rejected).then(pl.lit(LABEL_CLASSES[2])).otherwise(pl.lit(LABEL_CLASSES[3])))
    counts = dict(verified.select(label.alias("label")).group_by("label").len().collect().iter_rows())
    n = sum(counts.values())
    quality = {"verified_pairs": n, "counts": {c: counts.get(c, 0) for c in LABEL_CLASSES},
               "shares": {c: round(counts.get(c, 0) / n, 4) if n else None for c in LABEL_CLASSES}}
    if "chosen_check_share" in pairs.collect_schema().names():  # of the pairs that both fail, those the checks still order
        more = verified.filter(~chosen & ~rejected & (pl.col("chosen_check_share") > pl.col("rejected_check_share")))
        quality["both_fail_chosen_passes_more"] = more.select(pl.len()).collect().item()
    return quality


def describe_label_quality(quality: dict | None) -> list[str]:
    """Label quality in a few plain lines, for cards and `builder show`."""
    if not quality:
        return ["not recorded (a version from before label quality was measured)"]
    if quality.get("basis") == "verifiers":
        n, shares, counts = quality["verified_pairs"], quality["shares"], quality["counts"]
        names = {"chosen_passes_rejected_fails": "chosen passes, rejected fails", "both_pass": "both pass",
                 "both_fail": "both fail", "reversed": "reversed (chosen fails, rejected passes)"}
        more = quality.get("both_fail_chosen_passes_more")
        detail = {"both_fail": f"; in {more} of them the chosen passes more of its constraints, in {counts['both_fail'] - more} "
                               "as many" if more is not None else ""}
        return [f"{n} pairs on verifiable prompts, checked by the verifiers:"] + [
            f"{names[c]}: {100 * shares[c]:.1f}% ({counts[c]}{detail.get(c, '')})" for c in LABEL_CLASSES]
    if quality.get("basis") == "judge_measurement" and quality.get("accuracy") is not None:
        chance = " — includes chance (50%)" if quality.get("chance_in_interval") else ""
        return [f"no verifiable prompts; the judge's last measured accuracy: {100 * quality['accuracy']:.1f}% "
                f"[{100 * quality['low']:.0f}–{100 * quality['high']:.0f}] on {quality['judged_pairs']} {quality['source']} pairs "
                f"({quality['version']}){chance}"]
    return ["no verifiable prompts, and this judge is unmeasured (run `builder eval judge --judge <it>`)"]
