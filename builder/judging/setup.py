"""Everything a stage needs to judge, decided before any model is loaded (so that it can enter the version's
identity): the judge spec, its sampling, the constraint its requests carry, and the record of all three."""

from dataclasses import dataclass

from builder.core.records import Constraint, Sampling
from builder.engines.generators import guided_decoding
from builder.engines.options import EngineOptions
from builder.judging.constraint import judge_constraint, spec_record
from builder.judging.spec import JudgeSpec, judge_sampling_for, load_judge


@dataclass(frozen=True)
class JudgeSetup:
    spec: JudgeSpec
    sampling: Sampling
    constraint: Constraint | None
    record: dict  # the judge spec as run: identity and manifest

    @property
    def template(self):
        return self.spec.template


def prepare_judge(
    kind: str, template: str | None, n: int, temperature: float | None, top_p: float | None, max_new_tokens: int | None,
    constraint_mode: str, min_chars: int | None, max_chars: int | None, backend: str, engine_options: EngineOptions | None,
) -> JudgeSetup:
    spec = load_judge(template, kind)
    sampling = judge_sampling_for(spec, n, temperature, top_p, max_new_tokens)
    rationale = spec.rationale.override(min_chars, max_chars)
    guided = guided_decoding(backend, engine_options) if constraint_mode == "on" else None
    constraint, record = judge_constraint(spec, rationale, constraint_mode, guided, sampling.max_new_tokens, min_chars is None)
    return JudgeSetup(spec, sampling, constraint, spec_record(spec, record))
