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
    spec: JudgeSpec, rationale: RationaleLength, mode: str, guided_decoding: dict | None, max_new_tokens: int
) -> tuple[Constraint | None, dict]:
    """(the constraint every judge request carries, its record for the judge spec, identity and manifest)."""
    rationale.check()
    _, longest, choices = FINAL_LINES.get(spec.parser, (None, "", ()))
    if mode == "on" and guided_decoding and spec.parser in FINAL_LINES:
        # A token is at least one character: the shortest rationale and the final line must fit the budget.
        needed = rationale.min_chars + len(longest) + 2
        if max_new_tokens < needed:
            raise BuilderError(f"--judge-max-new-tokens {max_new_tokens} leaves no room for a rationale of at least "
                               f"{rationale.min_chars} characters and the final line; give at least {needed}")
        regex = answer_regex(spec, rationale)
        record = {"mode": "guided", "regex": regex, "rationale_chars": [rationale.min_chars, rationale.max_chars]} | guided_decoding
        return Constraint(regex, "\n", len(longest), choices), record
    if mode == "on":
        reason = "no guided decoding for this parser" if spec.parser not in FINAL_LINES else "the judge's engine offers no guided decoding"
        record = {"mode": "free text + parser", "why": reason}
    else:
        record = {"mode": "off"}
    return (Constraint(None, choices=choices) if choices else None), record


def spec_record(spec: JudgeSpec, constraint_record: dict) -> dict:
    """The judge spec as run: what goes into a version's identity and manifest."""
    return {"name": spec.name, "kind": spec.kind, "template_sha256": spec.template.sha256, "parser": spec.parser,
            "constraint": constraint_record}
