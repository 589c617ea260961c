"""The knobs of a pointwise judge, shared by make-pairs, make-eft and reward-model evaluation."""

from dataclasses import dataclass

from builder.core.knobs import knob


@dataclass(frozen=True, kw_only=True)
class JudgeKnobs:
    judge_template: str | None = knob(None, "A judge template file with {prompt} and {response} [default: the additive 5-point template]",
                                      path=True)
    n_judgments: int = knob(3, "Judgments per candidate (K), averaged", rule="positive", short="-k")
    judge_temperature: float = knob(0.7, "The judge's sampling temperature (0: greedy)", rule="non_negative")
    judge_top_p: float = knob(0.9, "The judge's nucleus sampling threshold", rule="probability")
    judge_max_new_tokens: int = knob(256, "Length limit of each judgment, in tokens", rule="positive")
