"""Knobs: a stage config's fields, each declared once with its default, help text and rule.

A config is a frozen dataclass whose fields are made with `knob(...)`. The command line derives its options
from those fields (builder/app/options.py), a recipe sets the same fields by name, and `check_knobs` applies
every field's rule, so a knob has one name, one default, one help text and one meaning on every verb.
Groups of knobs that several stages share (model, engine, sampling, judge) are dataclasses to inherit from.
"""

import math
import typing
from dataclasses import MISSING, Field, dataclass, field, fields

from builder.core.errors import BuilderError

Rule = typing.Literal["positive", "non_negative", "probability", "share", "at_least_2"]


@dataclass(frozen=True)
class Knob:
    help: str
    rule: Rule | None = None
    flag: str | None = None  # the option's name when it is not --field-name (e.g. --endpoint for `endpoints`)
    short: str | None = None
    choices: tuple[str, ...] | None = None
    path: bool = False  # a file the command reads
    argument: bool = False  # given by position on the command line, not as an option


def knob(default, help: str, *, rule: Rule | None = None, flag: str | None = None, short: str | None = None,
         choices: tuple[str, ...] | None = None, path: bool = False, argument: bool = False):
    """A config field with its command-line meaning. `default=MISSING` makes it required."""
    meta = {"knob": Knob(help, rule, flag, short, choices, path, argument)}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def default(value):
    """Another default for a knob an inherited group declares (its help text and rule stay the group's)."""
    return field(default=value, metadata={"default_of_inherited": True})


def knob_of(config: type, name: str) -> Knob | None:
    """The knob a field was declared with, looking through the groups a config inherits from."""
    for cls in config.__mro__:
        declared = getattr(cls, "__dataclass_fields__", {}).get(name)
        if declared is not None and "knob" in declared.metadata:
            return declared.metadata["knob"]
    return None


def knob_fields(config: type) -> list[Field]:
    """The fields that are knobs: the config's own first, then each inherited group's, in declaration order."""
    present = {f.name: f for f in fields(config)}
    order = [name for cls in config.__mro__ for name in getattr(cls, "__annotations__", {})]
    names = [name for name in dict.fromkeys(order) if name in present and knob_of(config, name) is not None]
    return [present[name] for name in names]


def flag_name(name: str, knob: Knob) -> str:
    return knob.flag or "--" + name.replace("_", "-")


def check_knobs(config) -> None:
    """Every knob's rule, and no NaN or infinity in any number: one line naming the option, else nothing."""
    for f in fields(config):
        rule = knob_of(type(config), f.name)
        value = getattr(config, f.name)
        if rule is None or value is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        name = flag_name(f.name, rule)
        if isinstance(value, float) and not math.isfinite(value):
            raise BuilderError(f"{name} must be a finite number (got {value})")
        problem = {
            "positive": value < 1 if isinstance(value, int) else value <= 0,
            "non_negative": value < 0,
            "probability": not 0 < value <= 1,
            "share": not 0 <= value < 1,
            "at_least_2": value < 2,
        }.get(rule.rule, False)
        if problem:
            wanted = {"positive": "be at least 1" if isinstance(value, int) else "be positive", "non_negative": "not be negative",
                      "probability": "be in (0, 1]", "share": "be in [0, 1)", "at_least_2": "be at least 2"}[rule.rule]
            raise BuilderError(f"{name} must {wanted} (got {value})")
