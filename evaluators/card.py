"""Cards of evaluation versions, rendered from the templates in cards/ with huggingface_hub's card classes."""

from importlib import resources

import polars as pl
from huggingface_hub import DatasetCard, DatasetCardData

from builder.core.cards import size_category, table_configs
from builder.core.manifest import Manifest


def pct(rate) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def num(value) -> str:
    return "n/a" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def ci(match: dict, outcome: str) -> str:
    if match[f"{outcome}_rate"] is None:
        return "n/a"
    return f"{pct(match[f'{outcome}_rate'])} [{100 * match[f'{outcome}_low']:.0f}–{100 * match[f'{outcome}_high']:.0f}]"


def lc_text(match: dict) -> str:
    """The length-controlled win rate with its bootstrap interval (versions before the interval: the rate alone)."""
    if match.get("lc_low") is None:
        return pct(match["lc_win_rate"])
    return f"{pct(match['lc_win_rate'])} [{100 * match['lc_low']:.0f}–{100 * match['lc_high']:.0f}]"


def sampling_text(s: dict) -> str:
    return "greedy" if s["temperature"] == 0 else f"temperature {s['temperature']}, top-p {s['top_p']}" + f", max {s['max_new_tokens']} tokens"


def _render(template: str, card_data: DatasetCardData, manifest: Manifest, **values) -> str:
    text = resources.files("cards").joinpath(template).read_text(encoding="utf-8")
    card = DatasetCard.from_template(
        card_data,
        template_str=text,
        id=manifest.id,
        judge=manifest.model_spec("judge"),
        judge_sampling=sampling_text(manifest.sampling["judgments"]),
        template_name=manifest.judge["name"],
        template_sha=manifest.judge["sha256"],
        seed=manifest.seed,
        created_at=manifest.created_at,
        code=manifest.code(),
        plots=manifest.extra.get("plots", []),
        pct=pct,
        num=num,
        **values,
    )
    return str(card)


def render_h2h_card(manifest: Manifest, tables: dict[str, pl.DataFrame]) -> str:
    from builder.judging.health import h2h_warnings

    card_data = DatasetCardData(
        pretty_name=f"Head-to-head verdicts {manifest.id}",
        license="other",
        task_categories=["text-generation"],
        size_categories=size_category(tables["verdicts"].height),
        tags=["self-rewarding", "llm-as-a-judge", "pairwise", "evaluation"],
        configs=table_configs(tables, "verdicts"),
    )
    matches = manifest.stats["matches"]
    return _render(
        "h2h_card.md", card_data, manifest,
        prompt_source=manifest.inputs["prompts"]["spec"], contestants=manifest.extra["contestants"], matches=matches, ci=ci, lc=lc_text,
        warnings=h2h_warnings(matches),
    )


def render_rm_card(manifest: Manifest, tables: dict[str, pl.DataFrame]) -> str:
    from builder.judging.health import warnings_for

    card_data = DatasetCardData(
        pretty_name=f"Reward-model metrics {manifest.id}",
        license="other",
        task_categories=["text-generation"],
        size_categories=size_category(tables["candidates"].height),
        tags=["self-rewarding", "llm-as-a-judge", "reward-model", "evaluation"],
        configs=table_configs(tables, "groups"),
    )
    return _render(
        "rm_card.md", card_data, manifest,
        source=manifest.inputs["ranked"]["spec"], n_judge_samples=manifest.sampling["judgments"]["n"],
        stats=manifest.stats, health=manifest.health, warnings=warnings_for(manifest.health),
    )


def interval(share, low, high) -> str:
    if share is None:
        return "n/a"
    return pct(share) if low is None else f"{pct(share)} [{100 * low:.0f}–{100 * high:.0f}]"


def render_judge_card(manifest: Manifest, tables: dict[str, pl.DataFrame]) -> str:
    from builder.judging.health import warnings_for

    card_data = DatasetCardData(
        pretty_name=f"Judge accuracy {manifest.id}",
        license="other",
        task_categories=["text-generation"],
        size_categories=size_category(tables["judged_pairs"].height),
        tags=["self-rewarding", "llm-as-a-judge", "judge-accuracy", "evaluation"],
        configs=table_configs(tables, "judged_pairs"),
    )
    return _render(
        "judge_card.md", card_data, manifest,
        policy=manifest.model_spec("policy"), n_samples=manifest.sampling.get("candidates", {}).get("n"),
        n_judge_samples=manifest.sampling["judgments"]["n"], inputs=manifest.inputs, stats=manifest.stats,
        interval=interval, warnings=warnings_for(manifest.health),
    )


def render_follow_card(manifest: Manifest, tables: dict[str, pl.DataFrame]) -> str:
    card_data = DatasetCardData(
        pretty_name=f"Instruction following {manifest.id}",
        license="other",
        task_categories=["text-generation"],
        size_categories=size_category(tables["answers"].height),
        tags=["self-rewarding", "instruction-following", "verifiable", "evaluation"],
        configs=table_configs(tables, "answers"),
    )
    text = resources.files("cards").joinpath("follow_card.md").read_text(encoding="utf-8")
    return str(DatasetCard.from_template(
        card_data, template_str=text, id=manifest.id, seed=manifest.seed, created_at=manifest.created_at, code=manifest.code(),
        prompt_source=manifest.inputs["prompts"]["spec"], sampling=sampling_text(manifest.sampling["candidates"]),
        n_samples=manifest.sampling["candidates"]["n"], stats=manifest.stats, interval=interval, pct=pct,
    ))
