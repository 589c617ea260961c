"""Rich views of the store: `builder ls` and `builder show`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from builder.core.manifest import Manifest
from builder.core.store import Store, Version

if TYPE_CHECKING:
    import polars as pl


def _pct(rate) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}%"


def _value(number) -> str:
    return "-" if number is None else str(number)


def versions_table(store: Store) -> Table:
    table = Table(title=f"versions in {store.root}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("version", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("models", overflow="fold", min_width=6)
    table.add_column("prompts", justify="right", no_wrap=True)
    table.add_column("summary", overflow="fold", min_width=20)
    for v in store.versions():
        m = v.manifest
        table.add_row(v.id, m.created_at[:10], m.model_names(), str(m.counts.get("prompts", "-")), kind_summary(m))
    return table


def models_table(models: list[dict]) -> Table:
    from builder.core.registry import (
        ancestry,
        checkpoint_summary,
        final_metrics,
        judge_accuracy_text,
    )

    by_name = {m["name"]: m for m in models}
    table = Table(title="models", title_justify="left")
    for column in ("name", "lineage", "training", "final metrics", "judge accuracy"):
        table.add_column(column, overflow="fold", no_wrap=column == "lineage", ratio=None if column in ("name", "lineage") else 1)
    for m in models:
        data = " + ".join(d["version"] for d in m.get("datasets") or [m["data"]])
        training = f"{m['method']}, {m['steps']} steps on {data}" + checkpoint_summary(m)
        table.add_row(m["name"], " → ".join(ancestry(m, by_name)), training, final_metrics(m["metrics"]), judge_accuracy_text(m))
    return table


def kind_summary(manifest: Manifest) -> str:
    """What `builder ls` says about a version, in a few words fitting its kind."""
    stats, kind = manifest.stats, manifest.kind
    if kind == "pairs":
        return (f"{manifest.counts.get('pairs', 0)} pairs, ties {_pct(stats.get('tie_rate'))}, "
                f"unparsed {_pct(stats.get('parse_failure_rate'))}")
    if kind == "judge-pairs":
        return (f"{manifest.counts.get('pairs', 0)} judge pairs of {stats.get('comparisons')} comparisons, ties {_pct(stats.get('tie_rate'))}, "
                f"higher score won {_pct(stats.get('higher_score_won_rate'))}")
    if kind == "eft":
        return f"agreement {_pct(stats.get('agreement_rate'))}, {stats.get('eft_examples')} EFT examples"
    if kind == "prompts":
        return f"kept {stats.get('kept')} of {stats.get('requested')} generated"
    if kind == "verifiable":
        return f"{stats.get('train_instructions')} train + {stats.get('eval_instructions')} eval instructions, {stats.get('constraint_kinds')} constraint kinds"
    if kind == "sft":
        return f"{stats.get('ift_examples')} IFT + {stats.get('eft_examples')} EFT examples"
    if kind == "seed":
        return f"{stats.get('ift')} IFT, {stats.get('ranked_groups')} ranked groups"
    if kind == "h2h":
        return "; ".join(f"{m['match']}: win {_pct(m.get('win_rate'))} tie {_pct(m.get('tie_rate'))} loss {_pct(m.get('loss_rate'))}"
                         for m in stats.get("matches", []))
    if kind == "judge":
        head = stats.get("headline", {})
        if head.get("accuracy") is None:
            return "judge accuracy: no judged pair"
        return (f"judge accuracy {_pct(head['accuracy'])} [{100 * head['low']:.0f}–{100 * head['high']:.0f}] "
                f"on {head['judged_pairs']} {head['source']} pairs")
    if kind == "follow":
        return "; ".join(f"{p['policy']}: {_pct(p['share'])} followed" for p in stats.get("policies", []))
    if kind == "rm":
        return f"pairwise accuracy {_pct(stats.get('pairwise_accuracy'))} over {stats.get('groups')} groups"
    return ""


def label_quality_lines(manifest: Manifest, store: Store | None) -> list[str]:
    """Label quality as recorded, except that a judge measured since the version was built is shown as it is now."""
    from builder.core.registry import judge_label_quality
    from builder.judging.verify import describe_label_quality

    quality = manifest.stats.get("label_quality")
    if store is not None and quality and quality.get("basis") != "verifiers":
        quality = judge_label_quality(store, manifest.models["judge"]["model"]["fingerprint"], (manifest.judge or {}).get("sha256"))
    rule = manifest.extra.get("labels", {}).get("rule")
    return describe_label_quality(quality) + ([f"labelling rule: {rule}"] if rule else [])


def version_view(version: Version, damaged: list[str], store: Store | None = None) -> Group:
    m = version.manifest
    stats = m.stats
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    policy, judge, prompts = m.models["policy"], m.models["judge"], m.inputs["prompts"]
    for label, value in (
        ("version", version.id + (f"  (parent {m.parent})" if m.parent else "")),
        ("created", f"{m.created_at}  code {m.code()}"),
        ("policy", f"{policy['model']['spec']}  {policy['model']['fingerprint'][:23]}"),
        ("judge", f"{judge['model']['spec']}  {judge['model']['fingerprint'][:23]}"),
        ("engine", ", ".join(f"{k}={v}" for k, v in policy["engine"].items() if k != "model")),
        ("candidates", _sampling(m.sampling["candidates"])),
        ("judgments", _sampling(m.sampling["judgments"])),
        ("seed", str(m.seed)),
        ("judge template", f"{m.judge['name']}  sha256 {m.judge['sha256'][:16]}"),
        *judge_spec_rows(m),
        ("prompts from", f"{prompts['spec']}  ({prompts['fingerprint'][:30]})"),
        ("files", "[red]damaged: " + ", ".join(damaged) + "[/]" if damaged else f"{len(m.files)} files, checksums ok"),
    ):
        summary.add_row(label, value)

    counts = Table(title="rows", title_justify="left")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for name, rows in m.counts.items():
        counts.add_row(name, str(rows))

    drops = Table(title="dropped, by reason", title_justify="left")
    for column in ("level", "reason", "rows"):
        drops.add_column(column, justify="right" if column == "rows" else "left")
    for key, n in stats["drops"].items():
        level, reason = key.split(":", 1)
        drops.add_row(level, reason, str(n))
    if not stats["drops"]:
        drops.add_row("-", "nothing dropped", "0")

    rates = Table.grid(padding=(0, 2))
    rates.add_column(style="bold")
    rates.add_column()
    rates.add_row("pairs / prompts", _pct(stats["pair_rate"]))
    rates.add_row("ties / prompts", _pct(stats["tie_rate"]))
    rates.add_row("unparsed judgments", _pct(stats["parse_failure_rate"]))
    rates.add_row("mean tokens", ", ".join(f"{k} {_value(v)}" for k, v in stats["mean_tokens"].items()))
    rates.add_row("mean score", ", ".join(f"{k} {_value(v)}" for k, v in stats["mean_score"].items()))

    if "rationale_chars" in stats:  # versions written before judge specs have none of these
        q = stats["rationale_chars"]
        rates.add_row("reached token limit", f"{_pct(stats['length_limit_rate'])} (cut {_pct(stats['cut_rate'])})")
        rates.add_row("rationale chars", f"min {_value(q['min'])}, quartiles {_value(q['p25'])} / {_value(q['median'])} / {_value(q['p75'])}, max {_value(q['max'])}")
        rates.add_row("score probabilities", f"{_pct(stats['score_probs_rate'])} of parsed; mean top probability {_value(stats['mean_top_prob'])}")
        rates.add_row("ties by scoring", ", ".join(f"{k} {_pct(v)}" for k, v in stats["tie_rate_by_score"].items()))
    quality = Text("\n".join(label_quality_lines(m, store)))
    parts = [Panel(summary, title="manifest", title_align="left"), counts, drops, rates, Panel(quality, title="label quality", title_align="left"),
             score_histogram(stats["score_histogram"])]
    if stats["parse_failure_rate"] and stats["parse_failure_rate"] > 0.5:
        parts.append(
            "[yellow]Most judgments did not end with a 'Score: N' line, so their candidates gave no labels. "
            "A judge that does not follow the template needs EFT training first.[/]"
        )
    return Group(*parts)


def judge_spec_rows(manifest: Manifest) -> list[tuple[str, str]]:
    """The judge spec as run; nothing for versions written before judge specs existed."""
    spec = (manifest.judge or {}).get("spec")
    if not spec:
        return []
    constraint = spec["constraint"]
    if constraint["mode"] == "guided":
        low, high = constraint["rationale_chars"]
        held = f"guided by {constraint['library']} {constraint['version']}: rationale {low}-{high} chars, then the final line"
    else:
        held = constraint["mode"] + (f" ({constraint['why']})" if constraint.get("why") else "")
    return [("judge parser", spec["parser"]), ("judge constraint", held), ("scores", manifest.judge.get("score", "sampled"))]


def score_histogram(histogram: dict) -> Table:
    table = Table(title="score histogram (parsed judgments)", title_justify="left")
    table.add_column("score", justify="right")
    table.add_column("judgments", justify="right")
    table.add_column("")
    peak = max(histogram.values(), default=0)
    for score, n in histogram.items():
        table.add_row(score, str(n), "█" * round(40 * n / peak) if peak else "")
    if not histogram:
        table.add_row("-", "0", "no judgment parsed")
    return table


def frame_table(frame: pl.DataFrame, max_width: int = 60) -> Table:
    table = Table(show_lines=False)
    for name in frame.columns:
        table.add_column(name, overflow="fold", max_width=max_width)
    for row in frame.iter_rows():
        table.add_row(*(Text("" if value is None else str(value)) for value in row))  # Text: data is not markup
    return table


def _sampling(s: dict) -> str:
    return f"n={s['n']} temperature={s['temperature']} top_p={s['top_p']} max_new_tokens={s['max_new_tokens']}"


def stdout() -> Console:
    return Console()


def kind_view(version: Version, damaged: list[str], with_stats: bool = True) -> Group:
    """Seed, EFT, prompts, SFT and judge-pairs versions: where they came from, their tables, and their statistics
    (agreement rate, filter counts…) as the manifest records them."""
    m = version.manifest
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("version", f"{version.id}  ({m.kind})")
    for parent in m.all_parents():
        summary.add_row("parent", parent)
    for role, used in m.models.items():
        summary.add_row(role, f"{used['model']['spec']}  {used['model']['fingerprint'][:23]}")
    for role, source in m.inputs.items():
        summary.add_row(f"input {role}", ", ".join(f"{k} {v}" for k, v in source.items() if v is not None and k != "kind"))
    summary.add_row("created", f"{m.created_at}  code {m.code()}")
    summary.add_row("files", f"{len(m.files)} files, " + (f"[red]checksum mismatch: {', '.join(damaged)}[/]" if damaged else "checksums ok"))
    counts = Table(title="rows", title_justify="left")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for name, rows in m.counts.items():
        counts.add_row(name, str(rows))
    stats = Table(title="statistics", title_justify="left")
    stats.add_column("measure")
    stats.add_column("value", justify="right")
    for name, value in m.stats.items():
        stats.add_row(name.replace("_", " "), _pct(value) if name.endswith("_rate") else _value(value))
    parts = [Panel(summary, title="manifest", title_align="left"), counts] + ([stats] if with_stats else [])
    if m.counts.get("dropped") and not any(name.startswith("dropped") for name in damaged):
        dropped = version.scan("dropped").group_by("level", "reason").len().sort("level", "reason").collect()
        drops = Table(title="dropped, by reason", title_justify="left")
        for column in ("level", "reason", "rows"):
            drops.add_column(column, justify="right" if column == "rows" else "left")
        for level, reason, n in dropped.iter_rows():
            drops.add_row(level, reason, str(n))
        parts.append(drops)
    return Group(*parts)


def plan_table(recipe, store: Store) -> Table:
    """`builder run --dry-run`: every step with the settings that differ from its command's defaults."""
    from dataclasses import fields

    table = Table(title=f"recipe {recipe.name} ({recipe.sha256[:12]}): {len(recipe.steps)} steps", title_justify="left", box=box.SIMPLE)
    for column in ("#", "step", "settings", "status"):
        table.add_column(column, overflow="fold")
    for i, step in enumerate(recipe.steps, 1):
        defaults = {f.name: f.default for f in fields(step.config)}
        settings = ", ".join(f"{k}={v}" for k, v in step.settings.items() if defaults.get(k) != v)
        done = step.produces_model and (store.root / "models" / step.produces_model / "lineage.json").exists()
        table.add_row(str(i), step.label, settings, "trained" if done else "to do" if step.produces_model else "-")
    return table


def run_table(rows: list[dict], store: Store) -> Table:
    """After `builder run`: what each step made, whether it ran now, and each model's final TRL metrics."""
    import json

    from builder.core.registry import final_metrics

    table = Table(title="run", title_justify="left", box=box.SIMPLE)
    for column in ("step", "output", "this run", "seconds", "final metrics"):
        table.add_column(column, overflow="fold")
    for row in rows:
        lineage = store.root / "models" / row["output"] / "lineage.json"
        metrics = json.loads(lineage.read_text())["metrics"] if " train " in row["step"] and lineage.exists() else {}
        table.add_row(row["step"], row["output"], "built" if row["ran"] else "skipped", f"{row['seconds']:.0f}", final_metrics(metrics))
    return table
