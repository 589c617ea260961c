"""`builder eval head-to-head`, `builder eval reward-model` and `builder health`."""

import click

from builder.app.common import open_store, report_built, store_option
from builder.app.options import config_options, format_option
from builder.core.progress import console
from evaluators.configs import FollowConfig, HeadToHeadConfig, JudgeAccuracyConfig, RewardModelConfig


@click.group("eval")
def eval_group():
    """Evaluate models: head-to-head with order-swap tie detection, reward-model metrics, judge accuracy,
    instruction following."""


@eval_group.command("head-to-head")
@config_options(HeadToHeadConfig)
@store_option
def head_to_head_command(store, config):
    """Judge A against B on every prompt, in both orders; write a verdicts version and print the summary."""
    from builder.app.eval_views import matches_table
    from builder.app.show import stdout
    from builder.judging.health import h2h_warnings
    from evaluators.head_to_head import head_to_head

    version, built = head_to_head(config, open_store(store))
    report_built(version, built)
    matches = version.manifest.stats["matches"]
    stdout().print(matches_table(matches))
    for warning in h2h_warnings(matches):
        console.print(f"[yellow]⚠ {warning}[/]")
    click.echo(version.id)


@eval_group.command("reward-model")
@config_options(RewardModelConfig)
@store_option
def reward_model_command(store, config):
    """Score every response of each human-ranked group and compare with the human ranking."""
    from builder.app.eval_views import reward_model_table
    from builder.app.show import stdout
    from evaluators.reward_model import evaluate_reward_model

    version, built = evaluate_reward_model(config, open_store(store))
    report_built(version, built)
    stdout().print(reward_model_table(version.manifest.stats))
    click.echo(version.id)


@eval_group.command("judge")
@config_options(JudgeAccuracyConfig)
@store_option
def judge_command(store, config):
    """Can I trust this judge? Its accuracy on answer pairs of known order: verifiable prompts, human rankings, labelled pairs."""
    from builder.app.eval_views import judge_accuracy_table, judge_notes
    from builder.app.show import stdout
    from builder.core.registry import record_judge_measurement
    from evaluators.judge_accuracy import evaluate_judge, measurement

    store = open_store(store)
    version, built = evaluate_judge(config, store)
    report_built(version, built)
    if config.judge and record_judge_measurement(store, config.judge, measurement(version)):
        console.print(f"recorded in the lineage of model {config.judge}")
    stdout().print(judge_accuracy_table(version.manifest.stats))
    for note in judge_notes(version.manifest.stats):
        console.print(note)
    click.echo(version.id)


@eval_group.command("follow")
@config_options(FollowConfig)
@store_option
def follow_command(store, config):
    """How well do these models follow instructions a program can check? Each one's share, and its difference from the first."""
    from builder.app.eval_views import following_table
    from builder.app.show import stdout
    from evaluators.instruction_following import evaluate_following

    version, built = evaluate_following(config, open_store(store))
    report_built(version, built)
    stdout().print(following_table(version.manifest.stats))
    click.echo(version.id)


@click.command("health")
@click.argument("version")
@format_option()
@store_option
def health_command(version, output, store):
    """Judge health of a version: score distribution and collapse, parse failures, length and position bias."""
    from builder.app.eval_views import health_view
    from builder.app.show import stdout
    from builder.judging.health import health_json, version_health

    found = open_store(store).load(version)
    health = version_health(found)
    if output == "json":
        click.echo(health_json(health))
    else:
        stdout().print(f"[bold]{found.id}[/] ({health['kind']})")
        stdout().print(health_view(health))
