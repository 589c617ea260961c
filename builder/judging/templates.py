"""The judges' prompt templates: plain text with placeholders, rendered in one pass (a placeholder inside
the prompt, a response or a judgment is left as it is)."""

import functools
import hashlib
import re
from dataclasses import dataclass

from builder.core.errors import BuilderError

_PLACEHOLDER = re.compile(r"\{(prompt|response)\}")
PAIRWISE_PLACEHOLDERS = ("{prompt}", "{response_1}", "{response_2}")
_PAIRWISE_PLACEHOLDER = re.compile(r"\{(prompt|response_1|response_2)\}")


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, prompt: str, response: str) -> str:
        # One pass over the template only: placeholders inside the prompt or response are left as they are.
        pieces = self.pieces
        out = list(pieces)
        for i in range(1, len(pieces), 2):
            out[i] = prompt if pieces[i] == "prompt" else response
        return "".join(out)

    @functools.cached_property
    def pieces(self) -> list[str]:
        """The template cut at its placeholders: text, placeholder name, text, …"""
        return _PLACEHOLDER.split(self.text)

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "text": self.text}


def check_placeholders(text: str, shown: str) -> None:
    missing = {"{prompt}", "{response}"} - set(re.findall(r"\{(?:prompt|response)\}", text))
    if missing:
        raise BuilderError(f"judge template {shown} lacks the placeholder(s) {', '.join(sorted(missing))}")


@dataclass(frozen=True)
class PairwiseTemplate:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, prompt: str, first: str, second: str) -> str:
        # One pass over the template only: placeholders inside the prompt or the answers stay as they are.
        values = {"prompt": prompt, "response_1": first, "response_2": second}
        return _PAIRWISE_PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "text": self.text}


def check_pairwise_placeholders(text: str, shown: str) -> None:
    missing = [p for p in PAIRWISE_PLACEHOLDERS if p not in text]
    if missing:
        raise BuilderError(f"pairwise judge template {shown} lacks the placeholder(s) {', '.join(missing)}")


META_PLACEHOLDERS = ("{judge_prompt}", "{judgment_1}", "{judgment_2}")
_META_PLACEHOLDER = re.compile(r"\{(judge_prompt|judgment_1|judgment_2)\}")


@dataclass(frozen=True)
class MetaTemplate:
    """The meta-judge's template: the judge prompt two judgments answered (its rubric, question and response),
    then the two judgments, to be compared."""

    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, judge_prompt: str, first: str, second: str) -> str:
        values = {"judge_prompt": judge_prompt, "judgment_1": first, "judgment_2": second}
        return _META_PLACEHOLDER.sub(lambda m: values[m.group(1)], self.text)

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "text": self.text}


def check_meta_placeholders(text: str, shown: str) -> None:
    missing = [p for p in META_PLACEHOLDERS if p not in text]
    if missing:
        raise BuilderError(f"meta-judge template {shown} lacks the placeholder(s) {', '.join(missing)}")
