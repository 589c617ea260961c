"""The `builder` command line."""

import json
import os
import sys

import click

from builder.app.common import UserError, open_store, report_built, store_option
from builder.app.eval_cli import eval_group, health_command
from builder.app.judge_options import judge_options
from builder.core.errors import BuilderError
from builder.core.progress import console
from builder.engines.options import backend_options, dtype_option, judge_backend_options

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


class BuilderGroup(click.Group):
    """Turns the tool's own errors into one line and exit status 2, and a Ctrl-C into a hint to resume."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BuilderError as error:
            raise UserError(str(error)) from None
        except KeyboardInterrupt:
            console.print("interrupted: finished batches are saved; run the same command again to continue")
            ctx.exit(130)


@click.group(cls=BuilderGroup)
@click.version_option(package_name="self-rewarding-builder")
def cli():
    """Build versioned preference datasets with the Self-Rewarding Language Models recipe."""


@cli.command("make-pairs")
@click.option("--model", "-m", default=None, help="Policy: a local folder, a registered name (M1, M2…), a Hub id, or the embedded default [default: smollm2-135m-instruct]")
@click.option("--judge", "-j", default=None, help="Judge model, if not the policy itself")
@click.option("--prompts", "-p", default=None, help="JSONL/JSON/parquet/CSV file, a saved `datasets` folder, hf:NAME[:SPLIT], or a version id [default: the shipped sample prompts]")
@click.option("--limit", type=int, default=None, help="Use only the first N prompts")
@click.option("--n-samples", "-n", type=int, default=4, show_default=True, help="Candidates per prompt")
@click.option("--n-judgments", "-k", type=int, default=3, show_default=True, help="Judgments per candidate, averaged")
@click.option("--temperature", type=float, default=0.7, show_default=True)
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Candidate length limit")
@judge_options("pointwise")
@click.option("--score", type=click.Choice(["sampled", "expected"]), default="sampled", show_default=True,
              help="A judgment's score: the sampled digit (the paper's), or its expectation under the judge's probabilities of 0-5")
@click.option("--seed", type=int, default=0, show_default=True)
@backend_options
@judge_backend_options
@click.option("--batch-size", type=int, default=16, show_default=True, help="Requests per generate call")
@dtype_option
@store_option
def make_pairs_command(store, **options):
    """Sample candidates, judge them with the same model, and write a pairs dataset version."""
    from builder.stages.make_pairs import MakePairsConfig, make_pairs

    version, built = make_pairs(MakePairsConfig(**options), open_store(store))
    counts, stats = version.manifest["counts"], version.manifest["stats"]
    if not built:
        console.print(f"already built: {version.id} ({version.folder})")
    else:
        console.print(f"[bold green]built {version.id}[/] in {version.folder}")
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


def _generation_options(command):
    """Model, sampling and engine options shared by every command that generates."""
    for option in reversed([
        click.option("--model", "-m", default=None, help="A local folder, a registered name, a Hub id, or the embedded default"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--batch-size", type=int, default=16, show_default=True, help="Requests per generate call"),
        dtype_option,
    ]):
        command = option(command)
    return backend_options(command)


def _report(version, built: bool) -> None:
    report_built(version, built)
    stats = version.manifest.get("stats", {})
    console.print(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in stats.items()))
    click.echo(version.id)


@cli.command("import-oasst")
@click.argument("path")
@click.option("--lang", default="en", show_default=True, help="Keep messages in this language ('' for all)")
@click.option("--limit", type=int, default=None, help="Keep this many first-turn prompts, sampled with --seed")
@click.option("--seed", type=int, default=0, show_default=True)
@store_option
def import_oasst_command(path, lang, limit, seed, store):
    """Turn oasst1 message trees (JSONL/parquet rows) into a seed version: prompts, IFT, ranked groups."""
    from builder.stages.seed import import_oasst

    if limit is not None and limit < 1:
        raise BuilderError("--limit must be at least 1")
    _report(*import_oasst(path, open_store(store), lang or None, limit, seed))


@cli.command("make-eft")
@click.option("--ranked", "-r", default=None, help="Ranked groups: a file (prompt, responses, ranks) or a version [default: the shipped seed set]")
@click.option("--held-out", type=float, default=0.2, show_default=True, help="Share of groups held out for reward-model evaluation")
@click.option("--limit", type=int, default=None, help="Use only the first N groups")
@click.option("--n-judgments", "-k", type=int, default=3, show_default=True)
@judge_options("pointwise")
@_generation_options
@store_option
def make_eft_command(store, **options):
    """Judge human-ranked responses; keep the judgments whose ordering agrees with the humans' as EFT data."""
    from builder.stages.eft import MakeEftConfig, make_eft

    _report(*make_eft(MakeEftConfig(**options), open_store(store)))


@cli.command("make-prompts")
@click.option("--seed-prompts", "-s", default=None, help="Seed prompts: a file or a version [default: the shipped IFT prompts]")
@click.option("--n", type=int, default=1000, show_default=True, help="New prompts to ask for (before filtering)")
@click.option("--shots", type=int, default=8, show_default=True, help="Seed prompts shown per request")
@click.option("--temperature", type=float, default=0.8, show_default=True)
@click.option("--top-p", type=float, default=0.95, show_default=True)
@click.option("--max-new-tokens", type=int, default=96, show_default=True)
@click.option("--min-words", type=int, default=3, show_default=True)
@click.option("--max-chars", type=int, default=600, show_default=True)
@click.option("--similarity", type=float, default=0.7, show_default=True, help="Near-duplicate threshold (estimated Jaccard of character 5-grams)")
@_generation_options
@store_option
def make_prompts_command(store, **options):
    """Self-instruct: ask the model for new tasks from random seed prompts; filter and version them."""
    from builder.stages.self_instruct import MakePromptsConfig, make_prompts

    _report(*make_prompts(MakePromptsConfig(**options), open_store(store)))


@cli.command("mix-sft")
@click.option("--ift", default=None, help="IFT data: a file (prompt, response) or a version [default: the shipped seed set]")
@click.option("--eft", default=None, help="EFT data: a file (prompt, response, judgment) or an EFT version [default: the shipped seed set]")
@click.option("--judge-template", type=click.Path(), default=None, help="A judge folder or template file whose template renders the EFT prompts")
@click.option("--seed", type=int, default=0, show_default=True, help="Shuffle seed")
@store_option
def mix_sft_command(store, **options):
    """Write the M0 → M1 SFT dataset: IFT and EFT examples in TRL's prompt/completion format."""
    from builder.stages.sft_mix import MixSftConfig, mix_sft

    _report(*mix_sft(MixSftConfig(**options), open_store(store)))


@cli.group("train")
def train_group():
    """Train a named model on a dataset version with TRL (SFT or DPO), and register it in the store."""


def _train_options(method: str):
    from trainers.train import METHOD_DEFAULTS

    lr, lr_end, micro_batch = (METHOD_DEFAULTS[method][k] for k in ("learning_rate", "lr_end", "micro_batch_size"))

    def decorate(command):
        for option in reversed([
            click.option("--base", required=True, help="Model to start from: a folder, a registered name, a Hub id, or the default"),
            click.option("--data", required=True, help="The dataset version to train on"),
            click.option("--name", required=True, help="Name to register the result under (M1, M2…)"),
            click.option("--lr", "learning_rate", type=float, default=lr, show_default=True),
            click.option("--lr-end", type=float, default=lr_end, show_default=True, help="Learning rate at the last step (linear decay)"),
            click.option("--batch-size", type=int, default=16, show_default=True, help="Examples per optimizer step"),
            click.option("--micro-batch-size", type=int, default=micro_batch, show_default=True, help="Examples per forward pass (the rest by gradient accumulation)"),
            click.option("--epochs", type=float, default=1.0, show_default=True),
            click.option("--max-steps", type=int, default=-1, show_default=True, help="Stop after this many optimizer steps (-1: the epochs decide)"),
            click.option("--dropout", type=float, default=0.1, show_default=True),
            click.option("--max-length", type=int, default=1024, show_default=True),
            click.option("--save-steps", type=int, default=200, show_default=True, help="Checkpoint every N steps (a killed run resumes from the last)"),
            click.option("--seed", type=int, default=0, show_default=True),
        ]):
            command = option(command)
        return store_option(command)
    return decorate


def _run_training(store, method: str, **options) -> None:
    from trainers.train import TrainConfig, train

    folder, trained = train(TrainConfig(method=method, **options), open_store(store))
    lineage = json.loads((folder / "lineage.json").read_text())
    console.print(("[bold green]trained[/] " if trained else "already trained: ") + f"{lineage['name']} in {folder}")
    console.print(", ".join(f"{k} {v:.4g}" for k, v in lineage["metrics"].items() if k.startswith(("train_loss", "loss", "rewards/"))))
    click.echo(lineage["name"])


@train_group.command("sft")
@_train_options("sft")
def train_sft_command(store, **options):
    """SFT on a mix-sft version (loss on the assistant turn only)."""
    _run_training(store, "sft", **options)


@train_group.command("dpo")
@_train_options("dpo")
@click.option("--beta", type=float, default=0.1, show_default=True)
@click.option("--precompute-ref-log-probs/--no-precompute-ref-log-probs", default=True, show_default=True,
              help="Score the data with the frozen reference once before training instead of at every step")
def train_dpo_command(store, **options):
    """DPO on a make-pairs version; the reference model is the base."""
    _run_training(store, "dpo", **options)


@cli.command("run")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--dry-run", is_flag=True, help="Check the recipe and print the plan; run nothing")
@store_option
def run_command(recipe, dry_run, store):
    """Run a whole recipe: seed data → SFT (M1) → make-prompts → make-pairs → DPO per iteration. Finished steps are skipped."""
    from builder.app.recipe import load_recipe, record_run, run_recipe
    from builder.app.show import plan_table, run_table, stdout

    recorded = open_store(store)
    plan = load_recipe(recipe, recorded)
    if dry_run:
        stdout().print(plan_table(plan, recorded))
        return
    recorded.recipe = plan.provenance()

    def announce(i, step):
        console.rule(f"[bold]{i}/{len(plan.steps)} {step.label}")

    rows = run_recipe(plan, recorded, on_step=announce)
    path = record_run(plan, recorded, rows)
    stdout().print(run_table(rows, recorded))
    console.print(f"recipe {plan.name} finished; run record in {path}")


@cli.command("models")
@store_option
def models_command(store):
    """The registered models with their lineage (M0 → M1 → M2…)."""
    from rich.table import Table

    from builder.app.show import stdout
    from builder.core.registry import ancestry, final_metrics, registered_models

    models = registered_models(open_store(store))
    by_name = {m["name"]: m for m in models}
    table = Table(title="models", title_justify="left")
    for column in ("name", "lineage", "training", "final metrics"):
        table.add_column(column, overflow="fold", no_wrap=column == "lineage", ratio=None if column in ("name", "lineage") else 1)
    for m in models:
        training = f"{m['method']}, {m['steps']} steps on {m['data']['version']}"
        table.add_row(m["name"], " → ".join(ancestry(m, by_name)), training, final_metrics(m["metrics"]))
    stdout().print(table)


@cli.command("ls")
@store_option
def ls_command(store):
    """List the dataset versions in the store, newest first."""
    from builder.app.show import stdout, versions_table

    stdout().print(versions_table(open_store(store)))


@cli.command("show")
@click.argument("version")
@store_option
def show_command(version, store):
    """Summarise one version: manifest, counts, drops by reason, score histogram."""
    from builder.app.show import stdout, version_view

    store = open_store(store)
    found = store.load(version)
    if found.manifest.get("kind") in ("seed", "eft", "prompts", "sft"):
        from builder.app.show import kind_view

        stdout().print(kind_view(found, store.verify(found)))
        return
    if found.manifest.get("kind") in ("h2h", "rm"):
        from builder.app.eval_views import evaluation_view

        stdout().print(evaluation_view(found, store.verify(found)))
        return
    from builder.app.eval_views import health_view
    from builder.judging.health import version_health

    stdout().print(version_view(found, store.verify(found)))
    stdout().print(health_view(version_health(found), with_histogram=False))


@cli.command("verify")
@click.argument("version")
@store_option
def verify_command(version, store):
    """Check every file of a version against the sha256 in its manifest."""
    store = open_store(store)
    found = store.load(version)
    damaged = store.verify(found)
    if damaged:
        raise BuilderError(f"{found.id}: checksum mismatch in {', '.join(damaged)}")
    console.print(f"{found.id}: {len(found.manifest['files'])} files match the manifest")


@cli.command("query")
@click.argument("sql")
@click.option("--format", "output", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
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
@click.option("--format", "output", type=click.Choice(["table", "json"]), default="table", show_default=True)
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


cli.add_command(eval_group)
cli.add_command(health_command)


def main():
    # Click's usage errors print usage and a hint over three lines; the builder keeps every error to one line.
    try:
        code = cli.main(standalone_mode=False)
    except click.ClickException as error:
        click.echo(f"Error: {error.format_message()}", err=True)
        code = error.exit_code
    except click.Abort:
        code = 130
    sys.exit(code or 0)

