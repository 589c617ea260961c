"""Open Assistant (oasst1) message trees → seed tables.

oasst1 is flat: one row per message with message_id, parent_id (null for a tree's first prompt), role
("prompter" or "assistant"), text, lang and rank (the human ranking of an assistant reply among its
siblings, 0 = best; null where the siblings were not ranked). From it:
- prompts: every first-turn prompt (a prompter message without a parent);
- ift: each first-turn prompt with its top-ranked (rank 0) assistant reply;
- ranked: each first-turn prompt whose assistant replies were ranked, as a group (responses, ranks 1 = best).
These are the same formats as the shipped seed files (builder/data/seed/).
Only first turns are used, as in the paper's seed data.
"""

import polars as pl

from builder.core.errors import BuilderError

OASST_COLUMNS = ("message_id", "parent_id", "role", "text")


def check_tree(messages: pl.DataFrame, source: str) -> None:
    missing = [c for c in OASST_COLUMNS if c not in messages.columns]
    if missing:
        raise BuilderError(f"{source} is not in oasst1's message format (missing: {', '.join(missing)})")
    if messages.height == 0:
        raise BuilderError(f"{source} has no messages")
    if not messages["message_id"].is_unique().all():
        raise BuilderError(f"{source}: message_id {messages.filter(messages['message_id'].is_duplicated())['message_id'][0]!r} appears twice")
    orphans = messages.filter(pl.col("parent_id").is_not_null() & ~pl.col("parent_id").is_in(messages["message_id"].implode()))
    if orphans.height:
        raise BuilderError(f"{source}: broken tree, message {orphans['message_id'][0]!r} has a parent_id that is not in the file")
    roles = set(messages["role"].unique().to_list()) - {"prompter", "assistant"}
    if roles:
        raise BuilderError(f"{source}: unknown role {sorted(map(str, roles))[0]!r} (oasst1 has 'prompter' and 'assistant')")


def first_turns(messages: pl.DataFrame, lang: str | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(first-turn prompts, their assistant replies with ranks), filtered by language."""
    if "rank" not in messages.columns:
        messages = messages.with_columns(pl.lit(None, pl.Int64).alias("rank"))
    if lang and "lang" in messages.columns:
        messages = messages.filter(pl.col("lang") == lang)
    prompts = messages.filter(pl.col("parent_id").is_null() & (pl.col("role") == "prompter")).select(
        pl.col("message_id").alias("source_id"), pl.col("text").str.strip_chars().alias("prompt")
    )
    replies = messages.filter(pl.col("role") == "assistant").join(
        prompts.select(pl.col("source_id").alias("parent_id")), on="parent_id"
    ).select("parent_id", "message_id", pl.col("text").str.strip_chars().alias("response"), pl.col("rank").cast(pl.Int64))
    return prompts, replies


def ranked_groups(prompts: pl.DataFrame, replies: pl.DataFrame, source: str) -> pl.DataFrame:
    """Sibling sets where every reply is ranked; a partly ranked set, or ranks with gaps, is an error."""
    ranked = replies.filter(pl.col("rank").is_not_null())
    partly = replies.group_by("parent_id").agg(pl.col("rank").null_count().alias("nulls"), pl.len().alias("n")).filter(
        (pl.col("nulls") > 0) & (pl.col("nulls") < pl.col("n"))
    )
    if partly.height:
        raise BuilderError(f"{source}: the replies to {partly['parent_id'][0]!r} are only partly ranked (missing ranks)")
    groups = (
        ranked.sort("parent_id", "rank", "message_id")
        .group_by("parent_id", maintain_order=True)
        .agg(pl.col("response").alias("responses"), pl.col("rank").alias("oasst_ranks"))
        .filter(pl.col("responses").list.len() >= 2)
    )
    gaps = groups.filter(pl.col("oasst_ranks").list.unique().list.sort() != pl.int_ranges(0, pl.col("oasst_ranks").list.unique().list.len()))
    if gaps.height:
        raise BuilderError(f"{source}: the ranks of the replies to {gaps['parent_id'][0]!r} have gaps ({gaps['oasst_ranks'][0].to_list()})")
    return groups.join(prompts.rename({"source_id": "parent_id"}), on="parent_id").select(
        pl.col("parent_id").alias("source_id"), "prompt", "responses",
        (pl.col("oasst_ranks").list.eval(pl.element() + 1)).alias("ranks"),  # 1 = best, like every ranked table here
    )


def convert_oasst(messages: pl.DataFrame, source: str, lang: str | None = "en", limit: int | None = None, seed: int = 0):
    """(prompts, ift, ranked) from oasst1 rows; `limit` keeps that many prompts, sampled with `seed`."""
    check_tree(messages, source)
    prompts, replies = first_turns(messages, lang)
    if prompts.height == 0:
        raise BuilderError(f"{source} has no first-turn prompts" + (f" in language {lang!r}" if lang else ""))
    prompts = prompts.filter(pl.col("prompt") != "").unique("prompt", keep="first", maintain_order=True)
    if limit is not None and limit < prompts.height:
        prompts = prompts.sample(limit, seed=seed).sort("source_id")
    replies = replies.filter(pl.col("parent_id").is_in(prompts["source_id"].implode()))
    ift = replies.filter(pl.col("rank") == 0).join(prompts.rename({"source_id": "parent_id"}), on="parent_id").select(
        pl.col("parent_id").alias("source_id"), "prompt", "response"
    )
    ranked = ranked_groups(prompts, replies, source)
    # the seed file formats: `id` is the oasst message id of the prompt
    return (prompts.rename({"source_id": "id"}), ift.rename({"source_id": "id"}), ranked.rename({"source_id": "id"}))
