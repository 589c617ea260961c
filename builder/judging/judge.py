"""The LLM-as-a-judge template (a plain text file) and the parser for its verdict.

The score is read only from the judgment's final non-empty line, as an exact whole number 0–5 in ASCII digits. Text quoted from the response, such as a
response that itself says "Score: 5", sits above that line and cannot move the score; a judgment cut off
by the token limit has no final line of its own and is never parsed.
"""

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from builder.core.errors import BuilderError
from builder.core.records import Completion

DEFAULT_TEMPLATE = "additive_5point"
_PLACEHOLDER = re.compile(r"\{(prompt|response)\}")
# ASCII only (no "５" or "٣" as digits); possessive quantifiers never backtrack, so a line is read in linear time.
_SCORE_LINE = re.compile(
    r"[*_\s]*+score[*_\s]*+:[*_\s]*+([0-9]++(?:\.[0-9]++)?+)\s*+(?:/\s*+5|points?)?+[*_.\s]*+", re.IGNORECASE | re.ASCII
)
MAX_SCORE = 5


@dataclass(frozen=True)
class JudgeTemplate:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render(self, prompt: str, response: str) -> str:
        # One pass over the template only: placeholders inside the prompt or response are left as they are.
        return _PLACEHOLDER.sub(lambda m: prompt if m.group(1) == "prompt" else response, self.text)

    def to_json(self) -> dict:
        return {"name": self.name, "sha256": self.sha256, "text": self.text}


def load_template(path: str | None = None) -> JudgeTemplate:
    if path is None:
        text = resources.files("builder.judging").joinpath("judges", f"{DEFAULT_TEMPLATE}.txt").read_text(encoding="utf-8")
        return JudgeTemplate(DEFAULT_TEMPLATE, text)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise BuilderError(f"cannot read judge template {path}: {error}") from None
    missing = {"{prompt}", "{response}"} - set(re.findall(r"\{(?:prompt|response)\}", text))
    if missing:
        raise BuilderError(f"judge template {path} lacks the placeholder(s) {', '.join(sorted(missing))}")
    return JudgeTemplate(file.stem, text)


@dataclass(frozen=True)
class Verdict:
    rationale: str
    score: float | None
    parse_error: str | None


def parse_judgment(completion: Completion) -> Verdict:
    lines = [line for line in completion.text.strip().splitlines() if line.strip()]
    if not lines:
        return Verdict("", None, "empty")
    rationale = "\n".join(lines[:-1]).strip()
    if completion.finish_reason == "length":
        return Verdict(completion.text.strip(), None, "truncated")
    match = _SCORE_LINE.fullmatch(lines[-1])
    if not match:
        return Verdict(completion.text.strip(), None, "no_final_score_line")
    score = exact_score(match.group(1))
    if score is None:
        return Verdict(rationale, None, "score_out_of_range")
    return Verdict(rationale, float(score), None)


def exact_score(number: str) -> int | None:
    """The whole number 0–5 that ASCII digits like "4", "04" or "4.0" spell exactly; None for anything else
    ("4.5", "7", and "4.9999999999999999", which a float would round to 5). Read as text, never as a float."""
    whole, _, fraction = number.partition(".")
    whole = whole.lstrip("0") or "0"
    if fraction.strip("0") or len(whole) > 1 or int(whole) > MAX_SCORE:
        return None
    return int(whole)
