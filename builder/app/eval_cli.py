"""`builder eval head-to-head`, `builder eval reward-model` and `builder health`."""

import click

from builder.app.common import open_store, report_built, store_option
from builder.app.judge_options import judge_options
from builder.core.progress import console
from builder.engines.options import backend_options, dtype_option, judge_backend_options

ENGINE = [
    click.option("--seed", type=int, default=0, show_default=True),
    click.option("--batch-size", type=int, default=16, show_default=True, help="Requests per generate call"),
    dtype_option,
    store_option,
]


def engine_options(command):
    for option in reversed(ENGINE):
        command = option(command)
    return backend_options(command)


@click.group("eval")
def eval_group():
    """Evaluate models: head-to-head with order-swap tie detection, reward-model metrics."""


@eval_group.command("head-to-head")
@click.option("--a", "a", multiple=True, required=True, help="Model A: a model spec, a file of answers (prompt, response) or a version id; repeat for several matches")
@click.option("--b", "b", multiple=True, required=True, help="Model B, same forms; one --b is the baseline for every --a, or give one per --a")
@click.option("--judge", "-j", default=None, help="Judge model [default: smollm2-135m-instruct]")
@click.option("--prompts", "-p", default=None, help="Prompts file, `datasets` folder, hf:NAME[:SPLIT] or version id [default: the answers' prompts, or the shipped sample prompts]")
@click.option("--limit", type=int, default=None, help="Use only the first N prompts")
@click.option("--a-temperature", type=float, default=0.7, show_default=True, help="Sampling temperature of generated A answers")
@click.option("--b-temperature", type=float, default=0.7, show_default=True, help="Sampling temperature of generated B answers")
@click.option("--top-p", type=float, default=0.9, show_default=True)
@click.option("--max-new-tokens", type=int, default=256, show_default=True, help="Answer length limit")
@judge_options("pairwise")
@engine_options
@judge_backend_options
def head_to_head_command(store, a, b, **options):
    """Judge A against B on every prompt, in both orders; write a verdicts version and print the summary."""
    from builder.app.eval_views import matches_table
    from builder.app.show import stdout
    from builder.judging.health import h2h_warnings
    from evaluators.head_to_head import HeadToHeadConfig, head_to_head

    version, built = head_to_head(HeadToHeadConfig(a=a, b=b, **options), open_store(store))
    report_built(version, built)
    matches = version.manifest["stats"]["matches"]
    stdout().print(matches_table(matches))
    for warning in h2h_warnings(matches):
        console.print(f"[yellow]⚠ {warning}[/]")
    click.echo(version.id)


@eval_group.command("reward-model")
@click.option("--model", "-m", default=None, help="The model that judges [default: smollm2-135m-instruct]")
@click.option("--ranked", "-r", required=True, type=click.Path(dir_okay=False), help="Ranked groups: rows with prompt, responses (list), ranks (list, 1 = best)")
@click.option("--limit", type=int, default=None, help="Use only the first N groups")
@click.option("--n-judgments", "-k", type=int, default=3, show_default=True, help="Judgments per response, averaged")
@judge_options("pointwise")
@engine_options
def reward_model_command(store, **options):
    """Score every response of each human-ranked group and compare with the human ranking."""
    from builder.app.eval_views import reward_model_table
    from builder.app.show import stdout
    from evaluators.reward_model import RewardModelConfig, evaluate_reward_model

    version, built = evaluate_reward_model(RewardModelConfig(**options), open_store(store))
    report_built(version, built)
    stdout().print(reward_model_table(version.manifest["stats"]))
    click.echo(version.id)


@click.command("health")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON")
@store_option
def health_command(version, as_json, store):
    """Judge health of a version: score distribution and collapse, parse failures, length and position bias."""
    from builder.app.eval_views import health_view
    from builder.app.show import stdout
    from builder.judging.health import health_json, version_health

    found = open_store(store).load(version)
    health = version_health(found)
    if as_json:
        click.echo(health_json(health))
    else:
        stdout().print(f"[bold]{found.id}[/] ({health['kind']})")
        stdout().print(health_view(health))
