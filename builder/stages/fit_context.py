"""Prompts too long for the context are dropped before any generation, with the reason `too_long_for_context`.

A prompt fits when the policy can read it and still write `max_new_tokens`, and the judge can read the judge
prompt made of it and an answer of up to `max_new_tokens` tokens and still write `judge_max_new_tokens`. The
answer's share is counted as `max_new_tokens` of the judge's tokens, exact when the policy judges itself and
an estimate for another judge model. A backend that cannot know its context (a served model name) checks
nothing, and the manifest's `context` says so.
"""

import polars as pl

from builder.core.schemas import DROPPED_SCHEMA
from builder.engines.generators import Generator
from builder.judging.judge import JudgeTemplate

REASON = "too_long_for_context"


def overflow(messages: list[dict], policy: Generator, judge: Generator, template: JudgeTemplate, max_new_tokens: int, judge_max_new_tokens: int) -> str | None:
    if reason := policy.context.overflow(messages, max_new_tokens):
        return f"policy: {reason}"
    judge_prompt = [{"role": "user", "content": template.render(messages[-1]["content"], "")}]
    if reason := judge.context.overflow(judge_prompt, max_new_tokens + judge_max_new_tokens):
        return f"judge (with a {max_new_tokens}-token answer): {reason}"
    return None


def drop_too_long(
    prompts: pl.DataFrame, policy: Generator, judge: Generator, template: JudgeTemplate, max_new_tokens: int, judge_max_new_tokens: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(the prompts that fit, a dropped row for each that does not)."""
    details = [overflow(m, policy, judge, template, max_new_tokens, judge_max_new_tokens) for m in prompts["messages"].to_list()]
    marked = prompts.with_columns(pl.Series("detail", details, pl.String))
    dropped = marked.filter(pl.col("detail").is_not_null()).select(
        pl.lit("prompt").alias("level"),
        "prompt_id",
        pl.lit(None, pl.String).alias("candidate_id"),
        pl.lit(None, pl.String).alias("judgment_id"),
        pl.lit(REASON).alias("reason"),
        "detail",
    )
    return marked.filter(pl.col("detail").is_null()).drop("detail"), dropped.cast(DROPPED_SCHEMA)


def context_record(policy: Generator, judge: Generator) -> dict:
    """For the manifest: each model's context length, or why it was not checked."""
    return {"policy": policy.context.to_json(), "judge": judge.context.to_json()}
