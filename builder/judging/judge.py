"""The pointwise LLM-as-a-judge template (a plain text file) and the reading of its verdict.

The score is read only from the judgment's final non-empty line (by the judge's parser, see parsers.py).
Text quoted from the response, such as a response that itself says "Score: 5", sits above that line and
cannot move the score; a judgment cut off by the token limit has no final line of its own and is never parsed.
"""

from dataclasses import dataclass

from builder.core.records import Completion
from builder.judging.parsers import MAX_SCORE, final_score_line  # noqa: F401  (re-exported)
from builder.judging.spec import load_judge
from builder.judging.templates import JudgeTemplate

DEFAULT_TEMPLATE = "additive_5point"


def load_template(path: str | None = None) -> JudgeTemplate:
    """The template of the shipped pointwise judge, of a judge folder, or of a bare template file."""
    return load_judge(path, "pointwise").template


@dataclass(frozen=True)
class Verdict:
    rationale: str
    score: float | None
    parse_error: str | None


def parse_judgment(completion: Completion, parser=final_score_line) -> Verdict:
    return read_verdict(completion.text, completion.finish_reason, parser)


def read_verdict(text: str, finish_reason: str, parser=final_score_line) -> Verdict:
    """A cut-off judgment is `truncated`, whatever it ends with; otherwise the parser reads its text."""
    if finish_reason == "length" and text.strip():
        return Verdict(text.strip(), None, "truncated")
    parsed = parser(text)
    return Verdict(parsed.rationale, parsed.value, parsed.parse_error)
