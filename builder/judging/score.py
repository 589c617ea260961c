"""Running a pointwise judge over candidates: one request per candidate (the judge prompt quotes the question
and the response), K samples each, every sample parsed into a judgments row."""

import polars as pl

from builder.core.records import Request, Sampling, make_request
from builder.core.schemas import JUDGMENTS_SCHEMA
from builder.core.store import Store
from builder.engines.generators import Generator
from builder.engines.runner import run_requests
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
    answers = run_requests(judge, [job[2] for job in jobs], store.generation_cache(judge.identity), batch_size, "judgments")
    rows = []
    for candidate_id, prompt_id, request in jobs:
        for index, completion in enumerate(answers[request.key]):
            verdict = parse_judgment(completion)
            rows.append(
                {
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
                    "request_key": request.key,
                }
            )
    return pl.DataFrame(rows, schema=JUDGMENTS_SCHEMA)
