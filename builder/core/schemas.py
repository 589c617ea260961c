"""Every table schema in one place. Written tables use plain `string` and `list` Arrow types (see
`to_arrow_plain`), so they concatenate with ordinary Hub datasets without casts."""

import polars as pl

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})
PROMPTS_SCHEMA = {
    "prompt_id": pl.String,
    "prompt": pl.String,
    "messages": pl.List(MESSAGE),
    "source": pl.String,
    "source_row": pl.Int64,
    "source_id": pl.String,
}
DROPPED_SCHEMA = {
    "level": pl.String,  # prompt | candidate | judgment | comparison (judge-pairs: the detail starts with its comparison id)
    "prompt_id": pl.String,
    "candidate_id": pl.String,
    "judgment_id": pl.String,
    "reason": pl.String,
    "detail": pl.String,
}
CANDIDATES_SCHEMA = {
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "sample_index": pl.Int32,
    "response": pl.String,
    "finish_reason": pl.String,
    "n_tokens": pl.Int32,
    "request_key": pl.String,
}
JUDGMENTS_SCHEMA = {
    "judgment_id": pl.String,
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "sample_index": pl.Int32,
    "raw": pl.String,
    "rationale": pl.String,
    "score": pl.Float64,
    "parse_error": pl.String,
    "finish_reason": pl.String,
    "n_tokens": pl.Int32,
    "request_key": pl.String,
    "score_probs": pl.List(pl.Float64),  # P(score = 0..5) at the score token, where the engine reported it
    "expected_score": pl.Float64,  # sum of score x probability; null when unparsed or without score_probs
}
GENERATIONS_SCHEMA = {"generation_id": pl.String, "shown_seed_ids": pl.List(pl.String), "raw": pl.String, "finish_reason": pl.String,
                      "prompt": pl.String, "reason": pl.String, "detail": pl.String}
ANSWERS_SCHEMA = {"prompt_id": pl.String, "response": pl.String, "n_tokens": pl.Int32, "finish_reason": pl.String}

DROP_IDS = {"generation": (), "prompt": ("prompt_id",), "candidate": ("prompt_id", "candidate_id"),
            "judgment": ("prompt_id", "candidate_id", "judgment_id"), "comparison": ("prompt_id", "candidate_id")}


def drops(frame: pl.DataFrame, level: str, reason: str | pl.Expr, detail: str | pl.Expr | None = None) -> pl.DataFrame:
    """One `dropped` row per row of `frame`: the ids its level has (a prompt drop names no candidate), the reason
    and a detail, each a literal or an expression over `frame`."""
    def expr(value) -> pl.Expr:
        return value if isinstance(value, pl.Expr) else pl.lit(value, pl.String)

    ids = [pl.col(name) if name in DROP_IDS[level] else pl.lit(None, pl.String).alias(name)
           for name in ("prompt_id", "candidate_id", "judgment_id")]
    return frame.select(pl.lit(level).alias("level"), *ids, expr(reason).alias("reason"), expr(detail).alias("detail")).cast(DROPPED_SCHEMA)
CHECKS_SCHEMA = {  # one row per candidate and constraint of its prompt: the verifier's verdict
    "candidate_id": pl.String,
    "prompt_id": pl.String,
    "constraint_index": pl.Int32,
    "kind": pl.String,
    "params": pl.String,  # JSON
    "passed": pl.Boolean,
    "detail": pl.String,
}
INSTRUCTIONS_SCHEMA = {"instruction_id": pl.String, "split": pl.String, "task": pl.String, "prompt": pl.String,
                       "constraints": pl.String, "kinds": pl.List(pl.String)}
