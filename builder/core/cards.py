"""Dataset cards, rendered from the templates in cards/ with huggingface_hub's card classes."""

from importlib import resources

import polars as pl
from huggingface_hub import DatasetCard, DatasetCardData

from builder.core.manifest import Manifest
from builder.core.store import data_files

TABLES = ("pairs", "candidates", "judgments", "prompts", "dropped")


def size_category(rows: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return label
    return "1M<n<10M"


def table_configs(tables: dict[str, pl.DataFrame], default: str) -> list[dict]:
    """The card's `configs`: one `load_dataset` config per table (its file, or the glob of its parts), in the
    order given. `datasets` cannot load a parquet file without rows, so an empty table is still uploaded but gets
    no config. A table may be anything with a `height` (a store.Parts)."""
    return [
        {"config_name": name, "data_files": data_files(name, table.height), **({"default": True} if name == default else {})}
        for name, table in tables.items()
        if table.height
    ]


KIND_TITLES = {
    "seed": ("Self-rewarding seed data", "pairs of instructions and answers (ift) and human-ranked response groups (ranked)", "ift"),
    "eft": ("Self-rewarding EFT data", "judge training examples kept where the model's scores agree with the human ranking", "eft"),
    "prompts": ("Self-instruct prompts", "new prompts written by a model from 8 seed prompts each, filtered", "prompts"),
    "verifiable": ("Verifiable instructions", ("instructions whose constraints a program checks, composed from seed tasks, "
                   "with a training split (prompts) and a held-out split by task (eval)"), "prompts"),
    "sft": ("Self-rewarding SFT mix", "instruction following and judge examples mixed for the M0 → M1 SFT step", "sft"),
}


def render_kind_card(manifest: Manifest, tables: dict[str, pl.DataFrame]) -> str:
    """The card of the seed, EFT, prompts and SFT versions: what it is, where it came from, counts and stats."""
    title, what, default = KIND_TITLES[manifest.kind]
    card_data = DatasetCardData(
        pretty_name=f"{title} {manifest.id}",
        license="other",
        task_categories=["text-generation"],
        size_categories=size_category(max((t.height for t in tables.values()), default=0)),
        tags=["self-rewarding", manifest.kind, "synthetic"],
        configs=table_configs(tables, default),
    )
    template = resources.files("cards").joinpath("kind_card.md").read_text(encoding="utf-8")
    card = DatasetCard.from_template(
        card_data,
        template_str=template,
        title=title,
        what=what,
        id=manifest.id,
        kind=manifest.kind,
        parents=manifest.all_parents(),
        model=manifest.model_names() if manifest.models else None,
        inputs={role: source.get("spec") for role, source in manifest.inputs.items()},
        counts=manifest.counts,
        stats=manifest.stats,
        created_at=manifest.created_at,
        code=manifest.code(),
    )
    return str(card)
