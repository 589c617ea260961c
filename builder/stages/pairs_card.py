"""The pairs version's dataset card: provenance, counts, tie and parse rates, judge health."""

from importlib import resources

import polars as pl
from huggingface_hub import DatasetCard, DatasetCardData

from builder.core.cards import TABLES, size_category, table_configs
from builder.core.manifest import Manifest
from builder.judging.health import warnings_for
from builder.judging.verify import describe_label_quality


def render_pairs_card(manifest: Manifest, tables: dict[str, pl.DataFrame]) -> str:
    configs = table_configs({name: tables[name] for name in TABLES if name in tables}, default="pairs")
    card_data = DatasetCardData(
        pretty_name=f"Self-rewarding preference pairs {manifest.id}",
        license="other",
        task_categories=["text-generation"],
        size_categories=size_category(tables["pairs"].height),
        tags=["self-rewarding", "dpo", "preference", "llm-as-a-judge", "synthetic"],
        configs=configs,
    )
    template = resources.files("cards").joinpath("dataset_card.md").read_text(encoding="utf-8")
    sampling = manifest.sampling
    card = DatasetCard.from_template(
        card_data,
        template_str=template,
        id=manifest.id,
        parent=manifest.parent,
        policy=manifest.model_spec("policy"),
        judge=manifest.model_spec("judge"),
        template_name=manifest.judge["name"],
        template_sha=manifest.judge["sha256"],
        judge_spec=manifest.judge.get("spec"),
        score_mode=manifest.judge.get("score", "sampled"),
        prompt_source=manifest.inputs["prompts"]["spec"],
        seed=manifest.seed,
        created_at=manifest.created_at,
        code=manifest.code(),
        n_samples=sampling["candidates"]["n"],
        n_judge_samples=sampling["judgments"]["n"],
        counts=manifest.counts,
        stats=manifest.stats,
        health=manifest.health,
        length_control=manifest.extra.get("length_control"),
        warnings=warnings_for(manifest.health) if manifest.health else [],
        label_quality=describe_label_quality(manifest.stats.get("label_quality")),
        label_rule=manifest.extra.get("labels", {}),
        pct=lambda rate: "n/a" if rate is None else f"{100 * rate:.1f}%",
        value=lambda number: "n/a" if number is None else number,
    )
    return str(card)
