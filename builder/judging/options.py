"""The knobs of a judge, the same on every command that judges; each `None` default is the judge's own, from
its judge.yaml (builder/judging/judges/<name>/)."""

from dataclasses import dataclass

from builder.core.knobs import knob

CONSTRAINT_MODES = ("on", "off")
SCORE_MODES = ("sampled", "expected")


@dataclass(frozen=True, kw_only=True)
class JudgeKnobs:
    judge_template: str | None = knob(None, "A judge folder (template.txt + judge.yaml) or a template file "
                                            "[default: the shipped judge: additive 5-point, or pairwise in head-to-head]")
    judge_temperature: float | None = knob(None, "The judge's sampling temperature, 0 greedy [default: the judge's]", rule="non_negative")
    judge_top_p: float | None = knob(None, "The judge's nucleus sampling threshold [default: the judge's]", rule="probability")
    judge_max_new_tokens: int | None = knob(None, "Length limit of each judgment, in tokens [default: the judge's]", rule="positive")
    judge_constraint: str = knob("on", "on: the judge's answer is held to a rationale and its final line by guided decoding, "
                                       "where its backend offers it; off: free text read by the judge's parser", choices=CONSTRAINT_MODES)
    rationale_min_chars: int | None = knob(None, "Guided rationale's shortest length in characters [default: the judge's]",
                                           rule="non_negative")
    rationale_max_chars: int | None = knob(None, "Guided rationale's longest length in characters [default: the judge's]",
                                           rule="positive")


@dataclass(frozen=True, kw_only=True)
class PointwiseJudgeKnobs(JudgeKnobs):
    n_judgments: int = knob(3, "Judgments per candidate (K), averaged", rule="positive", short="-k")
    score: str = knob("sampled", "sampled: the judge's sampled score (the paper's); expected: the mean of 0–5 under the "
                                 "judge's probabilities at the score position", choices=SCORE_MODES)
