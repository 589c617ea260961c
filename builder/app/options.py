"""Command-line options derived from config dataclasses: each knob (builder/core/knobs.py) becomes one option
with the field's default, help text and choices, so a knob is declared once for every verb and recipe."""

import functools
import math
import types
import typing
from dataclasses import MISSING

import click

from builder.core.knobs import Knob, flag_name, knob_fields, knob_of


class FiniteFloat(click.ParamType):
    """A float that is a number: NaN and infinities are refused with the option's name."""

    name = "float"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(value)
            except (TypeError, ValueError):
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


class WholeOrAuto(click.ParamType):
    """A knob typed `int | str`: a whole number, or the word `auto` (the stage resolves it)."""

    name = "integer|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither a whole number nor auto", param, ctx)


WHOLE_OR_AUTO = WholeOrAuto()


def _base_type(annotation):
    """int for `int | None`, str for `tuple[str, ...]`, WHOLE_OR_AUTO for `int | str`: the type of one value."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        if {int, str} <= set(typing.get_args(annotation)):
            return WHOLE_OR_AUTO, False
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    return annotation, False


def click_option(name: str, annotation, default, knob: Knob):
    kind, multiple = _base_type(annotation)
    if knob.argument:
        return click.argument(name, metavar=name.upper())
    declarations = [flag_name(name, knob), name] + ([knob.short] if knob.short else [])
    if kind is bool:
        negative = flag_name(name, knob).replace("--", "--no-", 1)
        return click.option(f"{flag_name(name, knob)}/{negative}", name, default=default, show_default=True, help=knob.help)
    if knob.choices:
        param_type = click.Choice(knob.choices)
    elif knob.path:
        param_type = click.Path(dir_okay=False)
    else:
        param_type = kind if kind is WHOLE_OR_AUTO else {int: int, float: FINITE_FLOAT, str: str}.get(kind, str)
    required = default is MISSING
    return click.option(*declarations, type=param_type, default=None if required else default, multiple=multiple, required=required,
                        show_default=not required and default not in (None, ()), help=knob.help)


def config_options(config: type, exclude: tuple[str, ...] = (), defaults: dict | None = None, **fixed):
    """Adds one option per knob of `config` (less `exclude`; `defaults` replaces some defaults); the command
    receives the config itself as `config`, with the `fixed` fields set (e.g. a training method)."""
    hints = typing.get_type_hints(config)
    chosen = [f for f in knob_fields(config) if f.name not in exclude]
    defaults = defaults or {}

    def decorate(command):
        @functools.wraps(command)
        def gather(*args, **kwargs):
            return command(*args, config=config(**fixed, **{f.name: kwargs.pop(f.name) for f in chosen}), **kwargs)

        for f in reversed(chosen):
            gather = click_option(f.name, hints[f.name], defaults.get(f.name, f.default), knob_of(config, f.name))(gather)
        return gather

    return decorate


def format_option(*formats: str):
    """`--format table|json` on every read verb (JSON on stdout)."""
    choices = formats or ("table", "json")
    return click.option("--format", "output", type=click.Choice(choices), default=choices[0], show_default=True,
                        help="table for people, json (on stdout) for programs")
