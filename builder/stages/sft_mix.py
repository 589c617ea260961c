"""`builder mix-sft`: the M0 → M1 SFT data, IFT and EFT examples in TRL's conversational prompt/completion
format (the loss then falls on the completion, the assistant turn, only). An EFT example's user turn is the
judge prompt (the template filled with its prompt and response), its assistant turn the judgment."""


import polars as pl

from builder.core.cards import render_kind_card
from builder.core.errors import BuilderError
from builder.core.manifest import Manifest
from builder.core.prompts import turn
from builder.core.records import Completion, stable_hash
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.judging.judge import JudgeTemplate, load_template, parse_judgment
from builder.stages.configs import MixSftConfig
from builder.stages.seed import load_seed


def mix_sft(config: MixSftConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    (ift, ift_source), (eft, eft_source) = load_seed(config.ift, "ift", store), load_seed(config.eft, "eft", store)
    if config.ift_only:
        eft = eft.clear()
    template = load_template(config.judge_template)
    identity = {"ift": ift_source.fingerprint, "eft": None if config.ift_only else eft_source.fingerprint,
                "judge_template": template.sha256, "seed": config.seed}

    def run(vid: str) -> StageOutput:
        ift_kept = ift.filter(pl.col("prompt").str.strip_chars() != "", pl.col("response").str.strip_chars() != "")
        unparsed = [j for j in eft["judgment"].to_list() if parse_judgment(Completion(j or "", "stop", 0)).score is None]
        if unparsed:
            raise BuilderError(f"{eft_source.spec}: {len(unparsed)} judgments do not end with a 'Score: N' line")
        examples = pl.concat([
            ift_kept.select(pl.lit("ift").alias("source"), turn("user", "prompt").alias("prompt"), turn("assistant", "response").alias("completion")),
            eft_conversations(eft, template).select(pl.lit("eft").alias("source"), "prompt", "completion"),
        ])
        if examples.height == 0:
            raise BuilderError("no SFT examples: both inputs are empty")
        examples = examples.with_columns(
            pl.Series("example_id", [stable_hash([p, c])[:16] for p, c in examples.select("prompt", "completion").iter_rows()])
        ).sample(fraction=1.0, shuffle=True, seed=config.seed)
        manifest = Manifest(
            kind="sft",
            parents=[p for p in (ift_source.parent, None if config.ift_only else eft_source.parent) if p],
            inputs={"ift": ift_source.to_json()} | ({} if config.ift_only else {"eft": eft_source.to_json()}),
            judge=template.to_json(),
            seed=config.seed,
            stats={"ift_examples": ift_kept.height, "eft_examples": eft.height, "examples": examples.height},
        )
        return StageOutput({"sft": examples.select("example_id", "source", "prompt", "completion")}, manifest, render_kind_card)

    return build_version(store, "sft", identity, run)


def eft_conversations(eft: pl.DataFrame, template: JudgeTemplate) -> pl.DataFrame:
    """prompt (the judge prompt as the user turn) and completion (the judgment). An EFT version's rows carry
    the judge prompt their judgment answered (`messages`), so its own template wins over --judge-template."""
    if "messages" in eft.columns:
        return eft.select(pl.col("messages").list.slice(0, 1).alias("prompt"), pl.col("messages").list.slice(1, 1).alias("completion"))
    judge_prompts = pl.Series("judge_prompt", [template.render(p, r) for p, r in eft.select("prompt", "response").iter_rows()], pl.String)
    return eft.with_columns(judge_prompts).select(turn("user", "judge_prompt").alias("prompt"), turn("assistant", "judgment").alias("completion"))
