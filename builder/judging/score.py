"""Running a pointwise judge over candidates: one request per candidate (the judge prompt quotes the question
and the response, and carries the judge's constraint when its decoding is guided), K samples each, every
sample parsed by the judge's named parser into a judgments row."""

import polars as pl

from builder.core.records import (
    Completion,
    Constraint,
    Request,
    Sampling,
    make_request,
    request_key,
)
from builder.core.schemas import JUDGMENTS_SCHEMA
from builder.core.store import Store
from builder.engines.generators import Generator
from builder.engines.runner import answer_lazily
from builder.judging.judge import parse_judgment
from builder.judging.parsers import get_parser
from builder.judging.spec import JudgeSpec


def judge_jobs(
    judge: Generator, spec: JudgeSpec, prompts: pl.DataFrame, candidates: pl.DataFrame, sampling: Sampling, seed: int,
    constraint: Constraint | None = None,
) -> list[tuple[str, str, Request]]:
    """(candidate_id, prompt_id, request) for every candidate: the judge prompt quotes the question and the response."""
    return [
        (candidate_id, prompt_id,
         make_request(judge.identity, [{"role": "user", "content": spec.template.render(prompt, response)}], sampling, seed, constraint))
        for candidate_id, prompt_id, prompt, response in judge_inputs(prompts, candidates).iter_rows()
    ]


def judge_inputs(prompts: pl.DataFrame, candidates: pl.DataFrame) -> pl.DataFrame:
    return candidates.join(prompts.select("prompt_id", "prompt"), on="prompt_id").select("candidate_id", "prompt_id", "prompt", "response")


def judge_keys(judge: Generator, spec: JudgeSpec, inputs: pl.DataFrame, sampling: Sampling, seed: int,
               constraint: Constraint | None) -> pl.DataFrame:
    """The key and length of every judge request, a slice of candidates at a time: the judge prompts are
    rendered, hashed and let go."""
    parts = []
    for chunk in inputs.select("prompt", "response").iter_slices(1 << 16):
        texts = [spec.template.render(prompt, response) for prompt, response in chunk.iter_rows()]
        keys = [request_key(judge.identity, [{"role": "user", "content": text}], sampling, seed, constraint) for text in texts]
        parts.append(pl.DataFrame({"key": keys, "length": [len(t) for t in texts]}, schema={"key": pl.String, "length": pl.Int64}))
    return pl.concat(parts) if parts else pl.DataFrame(schema={"key": pl.String, "length": pl.Int64})


def judge_candidates(
    judge: Generator,
    spec: JudgeSpec,
    prompts: pl.DataFrame,
    candidates: pl.DataFrame,
    sampling: Sampling,
    seed: int,
    store: Store,
    batch_size: int,
    constraint: Constraint | None = None,
    blocks: pl.Series | None = None,
) -> pl.DataFrame:
    """One judgments row per candidate and judge sample. `blocks`: each prompt's planning block (see
    runner.fill_cache), in the order of `prompts`."""
    inputs = judge_inputs(prompts, candidates)
    asked = judge_keys(judge, spec, inputs, sampling, seed, constraint)
    if blocks is not None:
        block_of = prompts.select("prompt_id", blocks.alias("block"))
        asked = asked.with_columns(inputs.select("prompt_id").join(block_of, on="prompt_id", how="left", maintain_order="left")["block"])

    def build(rows: list[int]) -> list[Request]:
        return [
            make_request(judge.identity, [{"role": "user", "content": spec.template.render(prompt, response)}], sampling, seed, constraint)
            for prompt, response in inputs.select("prompt", "response")[rows].iter_rows()
        ]

    answers = answer_lazily(judge, asked, build, store.generation_cache(judge.identity), batch_size, "judgments")
    return (
        inputs.select("candidate_id", "prompt_id", asked["key"].alias("request_key"))
        .with_row_index("order")
        .join(parsed(answers, get_parser(spec.parser)), left_on="request_key", right_on="key")
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
            "score_probs",
            "expected_score",
        )
        .cast(JUDGMENTS_SCHEMA)
    )


def parsed(answers: pl.DataFrame, parser) -> pl.DataFrame:
    """The answers with each sample's verdict (rationale, score, parse_error) and, where the engine reported the
    probability of each score at the score position, those probabilities and the expected score."""
    rows = answers.select("text", "finish_reason", "n_tokens", "choice_probs").iter_rows()
    verdicts, probabilities = [], []
    for text, reason, n_tokens, probs in rows:
        verdict = parse_judgment(Completion(text, reason, n_tokens), parser)
        verdicts.append(verdict)
        probabilities.append(list(probs) if probs is not None and verdict.score is not None else None)
    return answers.with_columns(
        pl.Series("rationale", [v.rationale for v in verdicts], pl.String),
        pl.Series("score", [v.score for v in verdicts], pl.Float64),
        pl.Series("parse_error", [v.parse_error for v in verdicts], pl.String),
        pl.Series("score_probs", probabilities, pl.List(pl.Float64)),
        pl.Series("expected_score", [None if p is None else round(sum(s * q for s, q in enumerate(p)), 6) for p in probabilities], pl.Float64),
    )
