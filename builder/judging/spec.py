"""Judges as data: a judge is a folder with `template.txt` and `judge.yaml` (its kind, its parser by name and
version, its decoding defaults and its constraint defaults). The kinds: `pointwise` scores one response,
`pairwise` compares two responses, `meta` compares two judgments of one response (Meta-Rewarding's
meta-judge, read by a verdict parser like a pairwise judge). The shipped judges are folders under
`builder/judging/judges/`; `--judge-template` takes a folder of the same shape, or a bare template file, which
gets the parser and defaults of the shipped judge of its kind.

The spec (template sha256, parser, constraint as run) is part of every judged version's identity and manifest.
"""

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import yaml

from builder.core.errors import BuilderError
from builder.core.records import Sampling
from builder.judging.parsers import PARSER_KIND, get_parser
from builder.judging.templates import (
    JudgeTemplate,
    MetaTemplate,
    PairwiseTemplate,
    check_meta_placeholders,
    check_pairwise_placeholders,
    check_placeholders,
)

KINDS = ("pointwise", "pairwise", "meta")
DEFAULT_JUDGE = {"pointwise": "additive_5point", "pairwise": "pairwise", "meta": "meta_judge"}
READS = {"pointwise": "pointwise", "pairwise": "pairwise", "meta": "pairwise"}  # the kind of parser each kind of judge needs
_KEYS = {"kind", "parser", "decoding", "constraint"}
_DECODING_KEYS = {"temperature", "top_p", "max_new_tokens"}
_CONSTRAINT_KEYS = {"rationale_min_chars", "rationale_max_chars"}


@dataclass(frozen=True)
class Decoding:
    temperature: float
    top_p: float
    max_new_tokens: int


@dataclass(frozen=True)
class RationaleLength:
    """The rationale's length in characters when the judge is constrained (characters, because a regex counts
    them the same on every engine; a token is at least one character, so the tail's budget is exact)."""

    min_chars: int
    max_chars: int

    def override(self, min_chars: int | None, max_chars: int | None) -> "RationaleLength":
        """The command line's values where given, these elsewhere."""
        return RationaleLength(self.min_chars if min_chars is None else min_chars, self.max_chars if max_chars is None else max_chars)

    def check(self) -> None:
        if not 1 <= self.min_chars <= self.max_chars:
            raise BuilderError(f"the rationale's length needs 1 <= min chars <= max chars (got {self.min_chars} and {self.max_chars})")


@dataclass(frozen=True)
class JudgeSpec:
    name: str
    kind: str  # pointwise | pairwise
    template: JudgeTemplate | PairwiseTemplate | MetaTemplate
    parser: str  # name@version in parsers.PARSERS
    decoding: Decoding
    rationale: RationaleLength

    def parse(self, text: str):
        return get_parser(self.parser)(text)

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind, "template_sha256": self.template.sha256, "parser": self.parser,
                "decoding": asdict(self.decoding), "rationale": asdict(self.rationale)}


def load_judge(path: str | None, kind: str) -> JudgeSpec:
    """The shipped judge of `kind` (path None), a judge folder, or a bare template file with the shipped
    judge's parser and defaults."""
    if path is None:
        return _read_folder(resources.files("builder.judging").joinpath("judges", DEFAULT_JUDGE[kind]), DEFAULT_JUDGE[kind], kind, str(path))
    where = Path(path)
    if where.is_dir():
        return _read_folder(where, where.name, kind, path)
    default = load_judge(None, kind)
    text = _read_text(where, path)
    template = _template(kind, where.stem, text, path)
    return JudgeSpec(where.stem, kind, template, default.parser, default.decoding, default.rationale)


def _read_folder(folder, name: str, kind: str, shown: str) -> JudgeSpec:
    config = _read_yaml(folder.joinpath("judge.yaml"), shown)
    unknown = set(config) - _KEYS
    if unknown:
        raise BuilderError(f"judge {shown}: unknown key(s) {', '.join(sorted(unknown))} in judge.yaml (known: {', '.join(sorted(_KEYS))})")
    if config.get("kind") != kind:
        raise BuilderError(f"judge {shown} is {config.get('kind')!r}; this command needs a {kind} judge")
    parser = config.get("parser")
    if not isinstance(parser, str):
        raise BuilderError(f"judge {shown}: judge.yaml must name its parser, e.g. parser: final_score_line@1")
    get_parser(parser)
    if PARSER_KIND[parser] != READS[kind]:
        raise BuilderError(f"judge {shown}: parser {parser} reads {PARSER_KIND[parser]} judgments, not {kind} ones")
    decoding = _section(config, "decoding", _DECODING_KEYS, shown)
    constraint = _section(config, "constraint", _CONSTRAINT_KEYS, shown)
    try:
        spec = JudgeSpec(
            name, kind, _template(kind, name, _read_text(folder.joinpath("template.txt"), shown), shown), parser,
            Decoding(float(decoding["temperature"]), float(decoding["top_p"]), int(decoding["max_new_tokens"])),
            RationaleLength(int(constraint["rationale_min_chars"]), int(constraint["rationale_max_chars"])),
        )
    except (TypeError, ValueError) as error:
        raise BuilderError(f"judge {shown}: a value in judge.yaml has the wrong type ({error})") from None
    spec.rationale.check()
    return spec


def _section(config: dict, key: str, keys: set[str], shown: str) -> dict:
    section = config.get(key)
    if not isinstance(section, dict) or set(section) != keys:
        raise BuilderError(f"judge {shown}: judge.yaml's {key} needs exactly {', '.join(sorted(keys))}")
    return section


def _read_yaml(file, shown: str) -> dict:
    try:
        config = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise BuilderError(f"cannot read judge {shown}: {error}") from None
    except yaml.YAMLError as error:
        raise BuilderError(f"judge {shown}: judge.yaml is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise BuilderError(f"judge {shown}: judge.yaml must be a mapping")
    return config


def _read_text(file, shown: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BuilderError(f"cannot read judge template {shown}: {error}") from None


def _template(kind: str, name: str, text: str, shown: str) -> JudgeTemplate | PairwiseTemplate | MetaTemplate:
    if kind == "pointwise":
        check_placeholders(text, shown)
        return JudgeTemplate(name, text)
    if kind == "meta":
        check_meta_placeholders(text, shown)
        return MetaTemplate(name, text)
    check_pairwise_placeholders(text, shown)
    return PairwiseTemplate(name, text)


def judge_sampling_for(spec: JudgeSpec, n: int, temperature: float | None, top_p: float | None, max_new_tokens: int | None) -> Sampling:
    """The judge's sampling: what the command line gives, the judge's decoding defaults for the rest."""
    d = spec.decoding
    return Sampling(
        n, d.temperature if temperature is None else temperature, d.top_p if top_p is None else top_p,
        d.max_new_tokens if max_new_tokens is None else max_new_tokens,
    )
