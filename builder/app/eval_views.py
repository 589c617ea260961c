"""Rich views of evaluation results and judge health, for the terminal (the cards show the same numbers)."""

from rich.console import Group
from rich.table import Table

from builder.app.show import score_histogram
from builder.core.store import Version
from builder.judging.health import version_health, warnings_for
from evaluators.card import ci, interval, lc_text, num, pct


def matches_table(matches: list[dict]) -> Table:
    table = Table(title="head-to-head (A's side, % of decided pairs, Wilson 95% CI; LC: bootstrap)", title_justify="left")
    for column in ("match", "decided", "win", "tie", "loss", "unparsed", "LC win", "flips", "1st pos. wins", "chars A / B"):
        table.add_column(column, justify="left" if column == "match" else "right")
    for m in matches:
        table.add_row(
            m["match"], f"{m['decided']}/{m['prompts']}", ci(m, "win"), ci(m, "tie"), ci(m, "loss"), str(m["unparsed"]),
            lc_text(m), pct(m["position_flip_rate"]), pct(m["first_position_win_rate"]),
            f"{num(m['mean_chars_a'])} / {num(m['mean_chars_b'])}",
        )
    return table


def reward_model_table(stats: dict) -> Table:
    table = Table(title="reward-model metrics vs human rankings", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in (
        ("groups", str(stats["groups"])),
        ("pairwise accuracy", f"{pct(stats['pairwise_accuracy'])} of {stats['pairs']} pairs"),
        ("model ties among pairs", pct(stats["model_tie_rate"])),
        ("exact match", pct(stats["exact_match"])),
        ("5-best", f"{pct(stats['five_best'])} of {stats['n_scored_five']}"),
        ("Spearman (mean)", f"{num(stats['spearman'])} ({stats['spearman_groups']} groups)"),
        ("Kendall tau-b (mean)", f"{num(stats['kendall_tau'])} ({stats['kendall_groups']} groups)"),
    ):
        table.add_row(label, value)
    return table


def judge_accuracy_table(stats: dict) -> Table:
    table = Table(title="judge accuracy on pairs of known order (Wilson 95% CI; a tie counts ½)", title_justify="left")
    for column in ("source", "judged pairs", "accuracy", "ties", "longer wins", "unscored"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, s in stats["sources"].items():
        table.add_row(name, str(s["judged_pairs"]), interval(s["accuracy"], s["low"], s["high"]), pct(s["tie_rate"]),
                      interval(s["longer_wins"], s["longer_low"], s["longer_high"]), str(s["unscored_pairs"]))
    return table


def following_table(stats: dict) -> Table:
    """`eval follow`: each policy's share of answers that follow every constraint, and its difference from the first."""
    table = Table(title="instructions followed (answers passing every constraint; Wilson 95% CI; difference: bootstrap over prompts)",
                  title_justify="left")
    for column in ("policy", "prompts", "answers", "followed", "constraints passed", "vs first (points)"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    differences = {d["policy"]: d for d in stats["differences"]}
    for p in stats["policies"]:
        d = differences.get(p["policy"])
        versus = "baseline" if d is None else "n/a" if d["difference"] is None else \
            f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        table.add_row(p["policy"], str(p["prompts"]), str(p["answers"]), interval(p["share"], p["low"], p["high"]),
                      pct(p["constraint_share"]), versus)
    return table


def judge_notes(stats: dict) -> list[str]:
    """The lines under the table: parse rate, what the verifiers found, and whether the judge beats chance."""
    notes = [f"judgments parsed: {pct(stats['parse_rate'])} of {stats['judgments']}"]
    v = stats.get("verifiable")
    if v:
        notes.append(f"verifiable: {v['prompts']} prompts, {interval(v['pass_rate'], v.get('pass_rate_low'), v.get('pass_rate_high'))} "
                     f"of {v['answers']} answers follow every constraint; "
                     f"{v['prompts_with_pairs']} prompts have both a passing and a failing answer "
                     f"({v['prompts_all_pass']} all pass, {v['prompts_none_pass']} none)")
    head = stats["headline"]
    if head["chance_in_interval"]:
        notes.append(f"[yellow]⚠ on {head['source']} pairs the interval includes 50%: not measurably better than chance[/]")
    elif head["accuracy"] is not None:
        notes.append(f"[green]on {head['source']} pairs the interval excludes 50%[/]")
    else:
        notes.append("[yellow]no pair could be judged: no measurement[/]")
    return notes


def health_view(health: dict, with_matches: bool = True, with_histogram: bool = True) -> Group:
    parts = []
    rates = Table(title="judge health", title_justify="left")
    rates.add_column("measure")
    rates.add_column("value", justify="right")
    for key, label, show in (
        ("judgments", "judgments", str),
        ("parse_failure_rate", "unparsed judgments", pct),
        ("most_common_score_share", "most common score's share", pct),
        ("length_score_spearman", "length–score Spearman", num),
        ("responses_with_score_line", "responses quoting 'Score: N'", str),
        ("chosen_minus_rejected_tokens", "chosen − rejected tokens (mean)", num),
        ("chosen_longer_rate", "chosen is the longer", pct),
    ):
        if key in health:
            rates.add_row(label, show(health[key]))
    parts.append(rates)
    if with_histogram and "score_histogram" in health:
        parts.append(score_histogram(health["score_histogram"]))
    if "verdict_histogram" in health:
        verdicts = Table(title="per-order verdicts (by position)", title_justify="left")
        verdicts.add_column("verdict")
        verdicts.add_column("judgments", justify="right")
        for verdict, n in health["verdict_histogram"].items():
            verdicts.add_row(verdict, str(n))
        parts.append(verdicts)
    if with_matches and health.get("matches"):
        parts.append(matches_table(health["matches"]))
    parts += [f"[yellow]⚠ {w}[/]" for w in warnings_for(health)] or ["[green]no warning[/]"]
    return Group(*parts)


def evaluation_view(version: Version, damaged: list[str]) -> Group:
    """`builder show` for h2h and rm versions."""
    m = version.manifest
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    rows = [
        ("version", f"{version.id}  ({m.kind})"),
        ("created", f"{m.created_at}  code {m.code()}"),
        ("judge", f"{m.model_spec('judge')}  {m.models['judge']['model']['fingerprint'][:23]}"),
        ("judge template", f"{m.judge['name']}  sha256 {m.judge['sha256'][:16]}"),
        ("input", ", ".join(f"{role} {source.get('spec', '-')}" for role, source in m.inputs.items()) or "-"),
        *([("answers from", f"{m.model_spec('policy')}  n={m.sampling['candidates']['n']}")] if "policy" in m.models else []),
        ("plots", ", ".join(m.extra.get("plots", [])) or "none"),
        ("files", "[red]damaged: " + ", ".join(damaged) + "[/]" if damaged else f"{len(m.files)} files, checksums ok"),
    ]
    for label, value in rows:
        summary.add_row(label, value)
    if m.kind == "judge":
        results = Group(judge_accuracy_table(m.stats), *judge_notes(m.stats))
    else:
        results = matches_table(m.stats["matches"]) if m.kind == "h2h" else reward_model_table(m.stats)
    return Group(summary, results, health_view(version_health(version), with_matches=False))
