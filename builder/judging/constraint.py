"""What a judge's answer is held to, and how that is recorded.

With the constraint on and an engine that offers guided decoding, the answer is a one-paragraph rationale of
`min_chars`–`max_chars` characters (starting with a visible character), one newline, and the parser's final line:
`Score: N` with N in 0–5, or `Verdict: 1|2|tie`. Such an answer always parses; the parser still reads only
its final line, so a response quoting "Score: 5" cannot move its score. Without guided decoding (constraint
off, or a server that offers none) the judge writes free text and the parser reads it, recorded as such.

A pointwise judge's score digit is probed either way: the engine reports the probability of each of 0–5 at
the answer's last token, which expected scores read (free text gives them only when it ends with the digit).
"""

from builder.core.errors import BuilderError
from builder.core.records import Constraint
from builder.judging.spec import JudgeSpec, RationaleLength

SCORE_CHOICES = tuple("012345")
# The final line each parser reads, as the regex the engine enforces, and its longest text.
FINAL_LINES = {
    "final_score_line@1": ("Score: [0-5]", "Score: 5", SCORE_CHOICES),
    "final_verdict_line@1": ("Verdict: (1|2|tie)", "Verdict: tie", ()),
}
MODES = ("on", "off")


def answer_regex(spec: JudgeSpec, rationale: RationaleLength) -> str:
    final_line = FINAL_LINES[spec.parser][0]
    return rf"[^\s][^\r\n]{{{rationale.min_chars - 1},{rationale.max_chars - 1}}}\n{final_line}"


def judge_constraint(
    spec: JudgeSpec, rationale: RationaleLength, mode: str, guided_decoding: dict | None, max_new_tokens: int, min_is_default: bool = True
) -> tuple[Constraint | None, dict]:
    """(the constraint every judge request carries, its record for the judge spec, identity and manifest)."""
    rationale.check()
    _, longest, choices = FINAL_LINES.get(spec.parser, (None, "", ()))
    if mode == "on" and guided_decoding and spec.parser in FINAL_LINES:
        rationale = fit_budget(rationale, max_new_tokens - len(longest) - 2, guided_decoding, min_is_default)
        regex = answer_regex(spec, rationale)
        record = {"mode": "guided", "regex": regex, "rationale_chars": [rationale.min_chars, rationale.max_chars]} | guided_decoding
        return Constraint(regex, "\n", len(longest), choices), record
    if mode == "on":
        reason = "no guided decoding for this parser" if spec.parser not in FINAL_LINES else "the judge's engine offers no guided decoding"
        record = {"mode": "free text + parser", "why": reason}
    else:
        record = {"mode": "off"}
    return (Constraint(None, choices=choices) if choices else None), record


def fit_budget(rationale: RationaleLength, budget: int, guided_decoding: dict, min_is_default: bool) -> RationaleLength:
    """The rationale's length within the tokens left after the final line (a token is at least one character).
    An engine that closes the rationale itself needs only the shortest rationale to fit; one that cannot (a
    regex alone: vLLM, servers) gets the longest one lowered to the budget too, so its answers are not cut.
    The judge's default shortest length is lowered to fit a small budget; one given on the command line is not."""
    if budget < 1 or (budget < rationale.min_chars and not min_is_default):
        raise BuilderError(f"--judge-max-new-tokens leaves {max(budget, 0)} tokens for the rationale, short of its "
                           f"{rationale.min_chars} characters at least; raise it or lower --rationale-min-chars")
    low = min(rationale.min_chars, budget)
    high = rationale.max_chars if guided_decoding.get("closes_before_token_limit") else min(rationale.max_chars, budget)
    return RationaleLength(low, max(low, high))


def spec_record(spec: JudgeSpec, constraint_record: dict) -> dict:
    """The judge spec as run: what goes into a version's identity and manifest."""
    return {"name": spec.name, "kind": spec.kind, "template_sha256": spec.template.sha256, "parser": spec.parser,
            "constraint": constraint_record}
