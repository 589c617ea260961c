"""`builder diff A B`: how two pairs versions (two iterations, two judges, two seeds) differ in what they say
about the data: labels, ties, scores, lengths and the judge's health.

Both sides are measured from their own tables by the same code, so versions written by older code compare
fairly with new ones.
"""

from dataclasses import dataclass
from typing import Literal

import polars as pl
from rich import box
from rich.console import Group
from rich.table import Table

from builder.core.cards import TABLES
from builder.core.errors import BuilderError
from builder.core.stats import pairs_stats
from builder.core.store import Version
from builder.judging.health import pairs_health, warnings_for

Unit = Literal["count", "rate", "score", "tokens", "correlation"]
SCORES = range(6)  # the additive template's 0..5


@dataclass(frozen=True)
class MetricChange:
    metric: str
    unit: Unit
    a: float | None
    b: float | None

    @property
    def change(self) -> float | None:
        return None if self.a is None or self.b is None else round(self.b - self.a, 4)


@dataclass(frozen=True)
class VersionDiff:
    a: str
    b: str
    b_parent: str | None
    metrics: list[MetricChange]
    warnings: dict[str, list[str]]  # version id -> judge-health warnings

    def to_json(self) -> dict:
        return {
            "a": self.a,
            "b": self.b,
            "b_parent": self.b_parent,
            "metrics": [{"metric": m.metric, "unit": m.unit, "a": m.a, "b": m.b, "change": m.change} for m in self.metrics],
            "warnings": self.warnings,
        }


def measure(tables: dict[str, pl.DataFrame]) -> dict[str, tuple[Unit, float | None]]:
    """The numbers a diff compares, from one version's tables."""
    stats, health = pairs_stats(tables), pairs_health(tables)
    parsed = stats["judgments_parsed"]
    return {
        "prompts": ("count", tables["prompts"].height),
        "pairs": ("count", tables["pairs"].height),
        "pairs / prompts": ("rate", stats["pair_rate"]),
        "ties / prompts": ("rate", stats["tie_rate"]),
        "unparsed judgments": ("rate", stats["parse_failure_rate"]),
        "mean judgment score": ("score", _mean(tables["judgments"]["score"])),
        "mean candidate score": ("score", _mean(tables["candidates"]["score_mean"])),
        "mean chosen score": ("score", stats["mean_score"]["chosen"]),
        "mean rejected score": ("score", stats["mean_score"]["rejected"]),
        "mean chosen - rejected score": ("score", _mean(tables["pairs"]["score_margin"])),
        "mean candidate tokens": ("tokens", stats["mean_tokens"]["candidates"]),
        "mean chosen tokens": ("tokens", stats["mean_tokens"]["chosen"]),
        "mean rejected tokens": ("tokens", stats["mean_tokens"]["rejected"]),
        "chosen is the longer": ("rate", health["chosen_longer_rate"]),
        "length-score Spearman": ("correlation", health["length_score_spearman"]),
        "most common score's share": ("rate", _round(health["most_common_score_share"])),
        "responses with a Score line": ("count", health["responses_with_score_line"]),
        "judgments cut by the token limit": ("rate", _round(_share(tables["judgments"]["finish_reason"] == "length"))),
        "median rationale characters": ("count", _median(tables["judgments"].filter(pl.col("score").is_not_null())["rationale"].str.len_chars())),
        **{
            f"judgments scored {score}": ("rate", _round(stats["score_histogram"].get(str(score), 0) / parsed) if parsed else None)
            for score in SCORES
        },
    }


def _share(flags: pl.Series) -> float | None:
    return None if flags.len() == 0 else float(flags.mean())


def _median(values: pl.Series) -> float | None:
    return None if values.len() == 0 else float(values.median())


def read_tables(version: Version) -> dict[str, pl.DataFrame]:
    if version.manifest.kind != "pairs":
        raise BuilderError(f"diff compares pairs versions; {version.id} is a {version.manifest.kind} version")
    return {name: version.read(name) for name in TABLES}


def diff_versions(a: Version, b: Version) -> VersionDiff:
    tables_a, tables_b = read_tables(a), read_tables(b)
    measured_a, measured_b = measure(tables_a), measure(tables_b)
    metrics = [MetricChange(name, unit, value, measured_b[name][1]) for name, (unit, value) in measured_a.items()]
    warnings = {v.id: warnings_for(pairs_health(t)) for v, t in ((a, tables_a), (b, tables_b))}
    return VersionDiff(a.id, b.id, b.manifest.parent, metrics, warnings)


def diff_view(diff: VersionDiff) -> Group:
    table = Table(box=box.SIMPLE_HEAD, title=f"{diff.a} → {diff.b}", title_justify="left")
    table.add_column("metric", no_wrap=True)
    for column in (diff.a, diff.b, "change"):
        table.add_column(column, justify="right", no_wrap=True)
    for m in diff.metrics:
        table.add_row(m.metric, _show(m.unit, m.a), _show(m.unit, m.b), _show_change(m.unit, m.change))
    lines = [table]
    if diff.b_parent:
        lines.append(f"{diff.b}'s parent: {diff.b_parent}")
    for version, found in diff.warnings.items():
        lines += [f"[yellow]⚠ {version}: {w}[/]" for w in found] or [f"{version}: no judge-health warnings"]
    return Group(*lines)


def _show(unit: Unit, value) -> str:
    if value is None:
        return "-"
    if unit == "rate":
        return f"{100 * value:.1f}%"
    return str(int(value)) if unit == "count" else f"{value:.2f}"


def _show_change(unit: Unit, change) -> str:
    if change is None:
        return "-"
    if unit == "rate":
        return f"{100 * change:+.1f} pp"
    return f"{int(change):+d}" if unit == "count" else f"{change:+.2f}"


def _mean(column: pl.Series) -> float | None:
    return None if column.drop_nulls().len() == 0 else round(float(column.mean()), 2)


def _round(value) -> float | None:
    return None if value is None else round(value, 4)
