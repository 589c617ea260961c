"""The evaluators' configs: frozen dataclasses of knobs, also their command line (see builder/stages/configs.py)."""

from dataclasses import MISSING, dataclass

from builder.core.errors import BuilderError
from builder.core.knobs import check_knobs, knob
from builder.engines.options import EngineKnobs, JudgeModelKnobs, ModelKnobs, SamplingKnobs
from builder.judging.options import JudgeKnobs, PointwiseJudgeKnobs
from builder.stages.configs import LIMIT_HELP, PROMPTS_HELP, RANKED_HELP


@dataclass(frozen=True, kw_only=True)
class HeadToHeadConfig(JudgeModelKnobs, JudgeKnobs, EngineKnobs):
    """`builder eval head-to-head`: A against B on every prompt, judged in both orders."""

    a: tuple[str, ...] = knob(MISSING, "Model A: a model spec, a file of answers (prompt, response) or a version id; "
                                       "repeat for several matches", flag="--a")
    b: tuple[str, ...] = knob(MISSING, "Model B, same forms; one --b is the baseline for every --a, or give one per --a", flag="--b")
    prompts: str | None = knob(None, PROMPTS_HELP + " (or the answers' own prompts)", short="-p")
    limit: int | None = knob(None, LIMIT_HELP, rule="positive")
    a_temperature: float = knob(0.7, "Sampling temperature of generated A answers", rule="non_negative")
    b_temperature: float = knob(0.7, "Sampling temperature of generated B answers", rule="non_negative")
    top_p: float = knob(0.9, "Nucleus sampling threshold of generated answers", rule="probability")
    max_new_tokens: int = knob(256, "Length limit of each generated answer, in tokens", rule="positive")

    def validate(self) -> None:
        check_knobs(self)
        if not self.a or not self.b:
            raise BuilderError("head-to-head needs --a and --b")
        if len(self.b) != 1 and len(self.a) != len(self.b):
            raise BuilderError(f"give one --b (a baseline for every --a) or as many --b as --a (got {len(self.a)} and {len(self.b)})")
        self.check_engine()
        self.judge_engine()


@dataclass(frozen=True, kw_only=True)
class RewardModelConfig(ModelKnobs, PointwiseJudgeKnobs, EngineKnobs):
    """`builder eval reward-model`: the model judges human-ranked groups; its ordering against the humans'."""

    ranked: str | None = knob(None, RANKED_HELP, short="-r")
    limit: int | None = knob(None, LIMIT_HELP, rule="positive")

    def validate(self) -> None:
        check_knobs(self)
        self.check_engine()


@dataclass(frozen=True, kw_only=True)
class JudgeAccuracyConfig(SamplingKnobs, JudgeModelKnobs, PointwiseJudgeKnobs, EngineKnobs):
    """`builder eval judge`: how often the judge prefers the better of two answers whose order is known."""

    judge: str | None = knob(None, "The judge to measure, a model spec like --policy [default: smollm2-135m-instruct]", short="-j")
    policy: str | None = knob(None, "The model that answers the verifiable prompts [default: the judge]")
    prompts: str | None = knob(None, "Verifiable prompts (a `constraints` column): a file, a verifiable version (its eval split), or "
                                     "VERSION:TABLE [default: the shipped tasks' eval split; none when only --ranked or --pairs is given]",
                               short="-p")
    ranked: str | None = knob(None, "Also: human-ranked groups, as `eval reward-model` reads them (a file or a version)", short="-r")
    pairs: str | None = knob(None, "Also: labelled pairs, a file (or a pairs version's pairs.parquet) with prompt, chosen, rejected",
                             path=True)
    limit: int | None = knob(None, LIMIT_HELP + " of each source", rule="positive")
    n_samples: int = knob(4, "Answers per verifiable prompt (N)", rule="at_least_2", short="-n")

    def validate(self) -> None:
        check_knobs(self)
        self.check_engine()
        self.judge_engine()



@dataclass(frozen=True, kw_only=True)
class FollowConfig(SamplingKnobs, EngineKnobs):
    """`builder eval follow`: each policy's share of verifiable instructions followed, and its difference from the first."""

    policies: tuple[str, ...] = knob(MISSING, "A model spec (M0, M3, a folder…); repeat: every later one is compared with the first",
                                     flag="--policy")
    prompts: str | None = knob(None, "Verifiable prompts (a `constraints` column): a file, a verifiable version (its eval split), or "
                                     "VERSION:TABLE [default: the shipped tasks' eval split]", short="-p")
    limit: int | None = knob(None, LIMIT_HELP, rule="positive")
    n_samples: int = knob(4, "Answers per prompt and policy (N)", rule="positive", short="-n")

    def validate(self) -> None:
        check_knobs(self)
        if not self.policies:
            raise BuilderError("eval follow needs at least one --policy")
        if len(set(self.policies)) != len(self.policies):
            raise BuilderError("eval follow: each --policy once")
        self.check_engine()
