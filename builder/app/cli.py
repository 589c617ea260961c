"""The `builder` command line."""

import json
import os
import sys

import click

from builder.app.common import UserError, open_store, report_built, store_option
from builder.app.eval_cli import eval_group, health_command
from builder.app.options import config_options, format_option
from builder.core.errors import BuilderError
from builder.core.progress import console
from builder.stages.configs import (
    ImportOasstConfig,
    MakeEftConfig,
    MakeJudgePairsConfig,
    MakePairsConfig,
    MakePromptsConfig,
    MakeVerifiableConfig,
    MixSftConfig,
)
from trainers.configs import DPO_ONLY, METHOD_DEFAULTS, TrainConfig

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class BuilderGroup(click.Group):
    """Turns the tool's own errors into one line and exit status 2, and a Ctrl-C into a hint to resume."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BuilderError as error:
            raise UserError(str(error)) from None
        except OSError as error:  # the machine's, not the user's input: a full disk, a read-only or lost folder
            raise UserError(f"{error.strerror or type(error).__name__}: {error.filename or error}") from None
        except KeyboardInterrupt:
            console.print("interrupted: finished batches are saved; run the same command again to continue")
            ctx.exit(130)


@click.group(cls=BuilderGroup)
@click.version_option(package_name="self-rewarding-builder")
def cli():
    """Build versioned preference datasets with the Self-Rewarding Language Models recipe."""


@cli.command("make-pairs")
@config_options(MakePairsConfig)
@store_option
def make_pairs_command(store, config):
    """Sample candidates, judge them with the same model, and write a pairs dataset version."""
    from builder.stages.make_pairs import make_pairs

    version, built = make_pairs(config, open_store(store))
    if version is None:
        console.print(f"shard {config.shard}: this worker's shards are finished; the run that finishes the last shard "
                      "merges them (or run the same command without --shard)")
        return
    counts, stats = version.manifest.counts, version.manifest.stats
    report_built(version, built)
    console.print(
        f"{counts['prompts']} prompts → {counts['candidates']} candidates → {counts['judgments']} judgments "
        f"({stats['judgments_parsed']} parsed) → [bold]{counts['pairs']} pairs[/]"
        + "".join(f"; dropped {key} {n}" for key, n in stats["drops"].items())
    )
    if counts["pairs"] == 0 and counts["judgments"] and stats["judgments_parsed"] == 0:
        console.print(
            "[yellow]No judgment ended with a 'Score: N' line, so no candidate could be labelled and no pair was made. "
            "Every raw judgment is kept in the judgments table. A judge that cannot follow the template needs EFT "
            "training first (or use --judge with a stronger model).[/]"
        )
    click.echo(version.id)


@cli.command("make-judge-pairs")
@config_options(MakeJudgePairsConfig)
@store_option
def make_judge_pairs_command(store, config):
    """Meta-Rewarding: the model compares two of its judgments of one response, in both orders; write judge preference pairs."""
    from builder.stages.judge_pairs import make_judge_pairs

    version, built = make_judge_pairs(config, open_store(store))
    stats = version.manifest.stats
    report_built(version, built)
    console.print(
        f"{stats['comparisons']} comparisons, each meta-judged in both orders → {stats['decided']} decided → [bold]{stats['pairs']} judge pairs[/]"
        + "".join(f"; dropped {key} {n}" for key, n in stats["drops"].items())
    )
    click.echo(version.id)


def print_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _report(version, built: bool) -> None:
    report_built(version, built)
    console.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in version.manifest.stats.items()))
    click.echo(version.id)


@cli.command("import-oasst")
@config_options(ImportOasstConfig)
@store_option
def import_oasst_command(store, config):
    """Turn oasst1 message trees (JSONL/parquet rows) into a seed version: prompts, IFT, ranked groups."""
    from builder.stages.seed import import_oasst

    _report(*import_oasst(config, open_store(store)))


@cli.command("make-eft")
@config_options(MakeEftConfig)
@store_option
def make_eft_command(store, config):
    """Judge human-ranked responses; keep the judgments whose ordering agrees with the humans' as EFT data."""
    from builder.stages.eft import make_eft

    _report(*make_eft(config, open_store(store)))


@cli.command("make-prompts")
@config_options(MakePromptsConfig)
@store_option
def make_prompts_command(store, config):
    """Self-instruct: ask the model for new tasks from random seed prompts; filter and version them."""
    from builder.stages.self_instruct import make_prompts

    _report(*make_prompts(config, open_store(store)))


@cli.command("make-verifiable")
@config_options(MakeVerifiableConfig)
@store_option
def make_verifiable_command(store, config):
    """Compose instructions with constraints a program can check, from seed tasks: a train split and an eval split by task."""
    from builder.stages.verifiable import make_verifiable

    _report(*make_verifiable(config, open_store(store)))


@cli.command("mix-sft")
@config_options(MixSftConfig)
@store_option
def mix_sft_command(store, config):
    """Write the M0 → M1 SFT dataset: IFT and EFT examples in TRL's prompt/completion format."""
    from builder.stages.sft_mix import mix_sft

    _report(*mix_sft(config, open_store(store)))


@cli.group("train")
def train_group():
    """Train a named model on a dataset version with TRL (SFT or DPO), and register it in the store."""


def _run_training(store, config) -> None:
    from trainers.train import train

    folder, trained = train(config, open_store(store))
    lineage = json.loads((folder / "lineage.json").read_text())
    console.print(("[bold green]trained[/] " if trained else "already trained: ") + f"{lineage['name']} in {folder}")
    console.print(", ".join(f"{k} {v:.4g}" for k, v in lineage["metrics"].items() if k.startswith(("train_loss", "loss", "rewards/"))))
    click.echo(lineage["name"])


@train_group.command("sft")
@config_options(TrainConfig, exclude=DPO_ONLY, defaults=METHOD_DEFAULTS["sft"], method="sft")
@store_option
def train_sft_command(store, config):
    """SFT on a mix-sft version (loss on the assistant turn only)."""
    _run_training(store, config)


@train_group.command("dpo")
@config_options(TrainConfig, defaults=METHOD_DEFAULTS["dpo"], method="dpo")
@store_option
def train_dpo_command(store, config):
    """DPO on a make-pairs version; the reference model is the base."""
    _run_training(store, config)


@cli.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the recipe and print the plan; run nothing")
@store_option
def run_command(recipe, dry_run, store):
    """Run a whole recipe: seed data → SFT (M1) → make-prompts → make-pairs → DPO per iteration. Finished steps are skipped."""
    from builder.app.recipe import GateStopped, load_recipe, record_run, run_recipe
    from builder.app.show import plan_table, run_table, stdout

    recorded = open_store(store)
    plan = load_recipe(recipe, recorded)
    if dry_run:
        stdout().print(plan_table(plan, recorded))
        return
    recorded.recipe = plan.provenance()

    def announce(i, step):
        console.rule(f"[bold]{i}/{len(plan.steps)} {step.label}")

    try:
        rows = run_recipe(plan, recorded, on_step=announce)
    except GateStopped as stop:
        path = record_run(plan, recorded, stop.rows)
        stdout().print(run_table(stop.rows, recorded))
        console.print(f"run record in {path}")
        raise
    path = record_run(plan, recorded, rows)
    stdout().print(run_table(rows, recorded))
    followed = [row["output"] for row in rows if row["step"] == "eval follow"]
    if followed:
        from builder.app.eval_views import following_table

        stdout().print(following_table(recorded.load(followed[0]).manifest.stats))
    console.print(f"recipe {plan.name} finished; run record in {path}")


@cli.command("models")
@format_option()
@store_option
def models_command(output, store):
    """The registered models with their lineage (M0 → M1 → M2…)."""
    from builder.core.registry import registered_models

    models = registered_models(open_store(store))
    if output == "json":
        return print_json(models)
    from builder.app.show import models_table, stdout

    stdout().print(models_table(models))


@cli.command("ls")
@format_option()
@store_option
def ls_command(output, store):
    """List the dataset versions in the store, newest first."""
    from builder.app.show import kind_summary, stdout, versions_table

    store = open_store(store)
    if output == "json":
        return print_json([{"id": v.id, "kind": v.manifest.kind, "created_at": v.manifest.created_at, "parent": v.manifest.parent,
                            "models": v.manifest.model_names(), "counts": v.manifest.counts, "summary": kind_summary(v.manifest)}
                           for v in store.versions()])
    stdout().print(versions_table(store))


@cli.command("show")
@click.argument("version")
@format_option()
@store_option
def show_command(version, output, store):
    """Summarise one version: manifest, counts, drops by reason, score histogram."""
    from builder.app.show import stdout, version_view

    store = open_store(store)
    found = store.load(version)
    damaged = store.verify(found)
    if output == "json":
        return print_json({"manifest": found.manifest.to_json(), "damaged_files": damaged})
    if found.manifest.kind == "follow":
        from builder.app.eval_views import following_table
        from builder.app.show import kind_view

        return stdout().print(kind_view(found, damaged, with_stats=False), following_table(found.manifest.stats))
    if found.manifest.kind in ("seed", "eft", "prompts", "sft", "verifiable", "judge-pairs"):
        from builder.app.show import kind_view

        return stdout().print(kind_view(found, damaged))
    if found.manifest.kind in ("h2h", "rm", "judge"):
        from builder.app.eval_views import evaluation_view

        return stdout().print(evaluation_view(found, damaged))
    from builder.app.eval_views import health_view
    from builder.judging.health import version_health

    stdout().print(version_view(found, damaged, store))
    stdout().print(health_view(version_health(found), with_histogram=False))


@cli.command("verify")
@click.argument("version", required=False)
@click.option("--repair", is_flag=True, help="Remove half-written versions and cache shards left by runs that are gone")
@format_option()
@store_option
def verify_command(version, repair, output, store):
    """Check a version: its id against its manifest's identity, every file against the manifest's sha256."""
    from builder.core.stage import identity_problem

    store = open_store(store)
    if repair:
        removed = store.remove_stale_partials()
        click.echo(f"removed {len(removed)} leftovers of runs that are gone" + "".join(f"\n  {p}" for p in removed))
    if version is None:
        if not repair:
            raise BuilderError("verify needs a VERSION (or --repair)")
        return
    found = store.load(version)
    problem, damaged = identity_problem(found), store.verify(found)
    if output == "json":
        print_json({"id": found.id, "files": len(found.manifest.files), "damaged_files": damaged, "identity_problem": problem})
    if problem:
        raise BuilderError(f"{found.id}: {problem}")
    if damaged:
        raise BuilderError(f"{found.id}: checksum mismatch in {', '.join(damaged)}")
    if output != "json":
        click.echo(f"{found.id}: the id matches the manifest's identity; {len(found.manifest.files)} files match the manifest")


@cli.command("query")
@click.argument("sql")
@format_option("table", "csv", "json")
@click.option("--attach", multiple=True, help="Also query this version: a version folder, or a pushed one as user/name[@tag] (read with DuckDB's hf:// paths); repeatable")
@store_option
def query_command(sql, output, attach, store):
    """Run DuckDB SQL over every version: views prompts, candidates, judgments, pairs, dropped, versions."""
    from builder.app.query import run_query
    from builder.app.show import frame_table, stdout

    frame = run_query(open_store(store), sql, attach)
    if output == "csv":
        sys.stdout.write(frame.write_csv())
    elif output == "json":
        for row in frame.to_dicts():
            sys.stdout.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    else:
        stdout().print(frame_table(frame))


@cli.command("diff")
@click.argument("a")
@click.argument("b")
@format_option()
@store_option
def diff_command(a, b, output, store):
    """How scores, ties, lengths and judge health moved from pairs version A to pairs version B."""
    from builder.app.diff import diff_versions, diff_view
    from builder.app.show import stdout

    store = open_store(store)
    diff = diff_versions(store.load(a), store.load(b))
    if output == "json":
        click.echo(json.dumps(diff.to_json(), indent=2))
    else:
        stdout().print(diff_view(diff))


@cli.command("push")
@click.argument("version")
@click.option("--repo", required=True, help="Hub dataset repo, user/name (created if missing)")
@click.option("--private", is_flag=True, help="Create the repo private")
@click.option("--branch", default=None, help="Commit to this branch (created if missing) [default: main]")
@store_option
def push_command(version, repo, private, branch, store):
    """Upload a version to the Hub as one commit tagged with its id (token: `hf auth login` or HF_TOKEN)."""
    from builder.app.hub import push_version

    pushed = push_version(open_store(store), version, repo, private, branch)
    if pushed.already_pushed:
        console.print(f"already pushed: {repo} has tag {pushed.tag}")
    else:
        console.print(f"[bold green]pushed {pushed.tag}[/] to {repo}: {pushed.commit_url}")
    click.echo(f"{repo}@{pushed.tag}")


@cli.command("pull")
@click.argument("ref", metavar="USER/NAME[@TAG]")
@store_option
def pull_command(ref, store):
    """Download a pushed version into the store, checking every file against the manifest's sha256."""
    from builder.app.hub import parse_hub_ref, pull_version

    version, installed = pull_version(parse_hub_ref(ref), open_store(store))
    console.print(f"{'installed' if installed else 'already in the store:'} {version.id} ({version.folder}), checksums ok")
    click.echo(version.id)


@cli.command("view")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on; 0 picks a free one")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; the default is reachable from this machine only")
@store_option
def view_command(port, host, store):
    """Browse the store in a web browser, read-only: versions, prompts with their judged candidates, verdicts, figures."""
    try:
        from builder.app.view.server import serve
    except ImportError as error:
        raise BuilderError(f"builder view needs the view extra ({error.name} is missing): pip install -e '.[view]'") from None

    def announce(url):
        click.echo(f"builder view: {url} (read-only; Ctrl-C stops it)")

    serve(open_store(store), host, port, announce)
    click.echo("builder view: stopped")


cli.add_command(eval_group)
cli.add_command(health_command)


def run(args: list[str] | None = None) -> int:
    """The command line's exit status for these arguments. Click's usage errors print usage and a hint over three
    lines; the builder keeps every error to one line."""
    try:
        code = cli.main(args, prog_name="builder", standalone_mode=False)
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        code = error.exit_code
    except click.Abort:
        code = 130
    return code or 0


def main():
    sys.exit(run())
