"""Running a pointwise judge over candidates: one request per candidate (the judge prompt quotes the question
and the response), K samples each, every sample parsed into a judgments row.

`score_probs` is the judge's probability of each score 0–5 at its score token (when the engine reported it)
and `expected_score` their mean, kept only for judgments that parsed.
"""

import polars as pl

from builder.core.records import Completion, Constraint, Request, Sampling, make_request
from builder.core.schemas import JUDGMENTS_SCHEMA
from builder.core.store import Store
from builder.engines.generators import Generator
from builder.engines.runner import run_requests
from builder.judging.judge import parse_judgment
from builder.judging.parsers import get_parser
from builder.judging.spec import JudgeSpec


def judge_jobs(
    judge: Generator, spec: JudgeSpec, prompts: pl.DataFrame, candidates: pl.DataFrame, sampling: Sampling, seed: int,
    constraint: Constraint | None = None,
) -> list[tuple[str, str, Request]]:
    """(candidate_id, prompt_id, request) for every candidate: the judge prompt quotes the question and the response."""
    with_prompt = candidates.join(prompts.select("prompt_id", "prompt"), on="prompt_id")
    return [
        (candidate_id, prompt_id,
         make_request(judge.identity, [{"role": "user", "content": spec.template.render(prompt, response)}], sampling, seed, constraint))
        for candidate_id, prompt_id, prompt, response in with_prompt.select("candidate_id", "prompt_id", "prompt", "response").iter_rows()
    ]


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
) -> pl.DataFrame:
    jobs = judge_jobs(judge, spec, prompts, candidates, sampling, seed, constraint)
    answers = run_requests(judge, [job[2] for job in jobs], store.generation_cache(judge.identity), batch_size, "judgments")
    parser = get_parser(spec.parser)
    rows = [
        judgment_row(candidate_id, prompt_id, index, request.key, completion, parser)
        for candidate_id, prompt_id, request in jobs
        for index, completion in enumerate(answers[request.key])
    ]
    return pl.DataFrame(rows, schema=JUDGMENTS_SCHEMA)


def judgment_row(candidate_id: str, prompt_id: str, index: int, key: str, completion: Completion, parser) -> dict:
    verdict = parse_judgment(completion, parser)
    probs = completion.choice_probs if verdict.score is not None else None
    return {
        "judgment_id": f"{candidate_id}-j{index}",
        "candidate_id": candidate_id,
        "prompt_id": prompt_id,
        "sample_index": index,
        "raw": completion.text,
        "rationale": verdict.rationale,
        "score": verdict.score,
        "parse_error": verdict.parse_error,
        "finish_reason": completion.finish_reason,
        "n_tokens": completion.n_tokens,
        "request_key": key,
        "score_probs": None if probs is None else list(probs),
        "expected_score": None if probs is None else round(sum(score * p for score, p in enumerate(probs)), 6),
    }
