"""Running a pointwise judge over candidates: one request per candidate (the judge prompt quotes the question
and the response), K samples each, every sample parsed into a judgments row."""

import polars as pl

from builder.core.records import Completion, Request, Sampling, make_request
from builder.core.schemas import JUDGMENTS_SCHEMA
from builder.core.store import Store
from builder.engines.generators import Generator
from builder.engines.runner import answer_table
from builder.judging.judge import JudgeTemplate, parse_judgment


def judge_jobs(
    judge: Generator, template: JudgeTemplate, prompts: pl.DataFrame, candidates: pl.DataFrame, sampling: Sampling, seed: int
) -> list[tuple[str, str, Request]]:
    """(candidate_id, prompt_id, request) for every candidate: the judge prompt quotes the question and the response."""
    with_prompt = candidates.join(prompts.select("prompt_id", "prompt"), on="prompt_id")
    return [
        (candidate_id, prompt_id, make_request(judge.identity, [{"role": "user", "content": template.render(prompt, response)}], sampling, seed))
        for candidate_id, prompt_id, prompt, response in with_prompt.select("candidate_id", "prompt_id", "prompt", "response").iter_rows()
    ]


def judge_candidates(
    judge: Generator,
    template: JudgeTemplate,
    prompts: pl.DataFrame,
    candidates: pl.DataFrame,
    sampling: Sampling,
    seed: int,
    store: Store,
    batch_size: int,
) -> pl.DataFrame:
    jobs = judge_jobs(judge, template, prompts, candidates, sampling, seed)
    asked = pl.DataFrame(
        {"candidate_id": [j[0] for j in jobs], "prompt_id": [j[1] for j in jobs], "request_key": [j[2].key for j in jobs]},
        schema={"candidate_id": pl.String, "prompt_id": pl.String, "request_key": pl.String},
    ).with_row_index("order")
    answers = answer_table(judge, [job[2] for job in jobs], store.generation_cache(judge.identity), batch_size, "judgments")
    del jobs
    return (
        asked.join(parsed(answers), left_on="request_key", right_on="key")
        .sort("order", "sample")
        .select(
            pl.format("{}-j{}", "candidate_id", "sample").alias("judgment_id"),
            "candidate_id",
            "prompt_id",
            pl.col("sample").alias("sample_index"),
            pl.col("text").alias("raw"),
            "rationale",
            "score",
            "parse_error",
            "finish_reason",
            "n_tokens",
            "request_key",
        )
        .cast(JUDGMENTS_SCHEMA)
    )


def parsed(answers: pl.DataFrame) -> pl.DataFrame:
    """The answers with each sample's verdict: rationale, score, parse_error."""
    verdicts = [parse_judgment(Completion(*row)) for row in answers.select("text", "finish_reason", "n_tokens").iter_rows()]
    return answers.with_columns(
        pl.Series("rationale", [v.rationale for v in verdicts], pl.String),
        pl.Series("score", [v.score for v in verdicts], pl.Float64),
        pl.Series("parse_error", [v.parse_error for v in verdicts], pl.String),
    )
