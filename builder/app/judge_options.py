"""The judge's options, the same on every command that judges."""

import click


def judge_options(kind: str):
    """The judge's template (or folder), decoding and constraint; each default comes from the judge's judge.yaml."""
    shipped = "the additive 5-point judge" if kind == "pointwise" else "the pairwise judge"
    placeholders = "{prompt} and {response}" if kind == "pointwise" else "{prompt}, {response_1} and {response_2}"

    def decorate(command):
        for option in reversed([
            click.option("--judge-temperature", type=float, default=None, help="[default: the judge's]"),
            click.option("--judge-top-p", type=float, default=None, help="[default: the judge's]"),
            click.option("--judge-max-new-tokens", type=int, default=None, help="[default: the judge's]"),
            click.option("--judge-template", type=click.Path(exists=False), default=None,
                         help=f"A judge folder (template.txt + judge.yaml) or a template file with {placeholders} [default: {shipped}]"),
            click.option("--judge-constraint", type=click.Choice(["on", "off"]), default="on", show_default=True,
                         help="on: the judge's answer is held to a rationale and its final line by guided decoding, where its backend offers it"),
            click.option("--rationale-min-chars", type=int, default=None, help="Guided rationale's shortest length in characters [default: the judge's]"),
            click.option("--rationale-max-chars", type=int, default=None, help="Guided rationale's longest length in characters [default: the judge's]"),
        ]):
            command = option(command)
        return command
    return decorate
