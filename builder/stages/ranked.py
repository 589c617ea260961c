"""Human-ranked response groups (prompt, responses, ranks with 1 the best): what make-eft judges and what
reward-model metrics are measured against."""


import polars as pl

from builder.core.errors import BuilderError
from builder.core.prompts import normalise


def ranked_tables(raw: pl.DataFrame, spec: str, limit: int | None = None, origin: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(prompts, candidates with human ranks, dropped duplicate groups) from rows of ranked groups."""
    missing = {"responses", "ranks"} - set(raw.columns)
    if missing:
        raise BuilderError(f"{spec} needs 'responses' and 'ranks' columns (missing: {', '.join(sorted(missing))})")
    for row, (responses, ranks) in enumerate(raw.select("responses", "ranks").iter_rows()):
        if not isinstance(responses, list) or not isinstance(ranks, list) or len(responses) != len(ranks):
            raise BuilderError(f"{spec} row {row}: 'responses' and 'ranks' must be lists of the same length")
        if len(responses) < 2:
            raise BuilderError(f"{spec} row {row}: a ranked group needs at least two responses (got {len(responses)})")
        if not all(isinstance(r, str) for r in responses) or not all(isinstance(r, int) and r >= 1 for r in ranks):
            raise BuilderError(f"{spec} row {row}: responses must be texts and ranks whole numbers from 1 (the best)")
        if sorted(set(ranks)) != list(range(1, len(set(ranks)) + 1)):
            raise BuilderError(f"{spec} row {row}: the ranks {ranks} have gaps (use 1, 2, 3…; equal numbers for equal ranks)")
    prompts, dropped = normalise(raw, spec, limit, origin)
    lists = raw.select("responses", "ranks").with_row_index("source_row").with_columns(pl.col("source_row").cast(pl.Int64))
    candidates = (
        prompts.select("prompt_id", "source_row")
        .join(lists, on="source_row", maintain_order="left")
        .explode("responses", "ranks")
        .with_columns(pl.int_range(pl.len()).over("prompt_id").cast(pl.Int32).alias("sample_index"))
        .select(
            pl.format("{}-r{}", "prompt_id", "sample_index").alias("candidate_id"),
            "prompt_id",
            "sample_index",
            pl.col("responses").alias("response"),
            pl.col("ranks").cast(pl.Int32).alias("human_rank"),
        )
    )
    return prompts, candidates, dropped
