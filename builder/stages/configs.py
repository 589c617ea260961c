"""Every stage's config: frozen dataclasses of knobs (builder/core/knobs.py). They are also the command line
(builder/app/options.py derives the options) and a recipe's settings (builder/app/recipe.py), and they import
nothing heavy, so `builder --help` stays fast."""

from dataclasses import MISSING, dataclass

from builder.core.errors import BuilderError
from builder.core.knobs import check_knobs, default, knob
from builder.engines.options import (
    EngineKnobs,
    JudgeModelKnobs,
    ModelKnobs,
    SamplingKnobs,
)
from builder.judging.options import JudgeKnobs, PointwiseJudgeKnobs

PROMPTS_HELP = ("JSONL/JSON/parquet/CSV file, a saved `datasets` folder, hf:NAME[:SPLIT], or a version id "
                "[default: the shipped sample prompts]")
LIMIT_HELP = "Use only the first N rows of the input (prompts, or ranked groups)"
SHARD_SIZE = 16_384

RANKED_HELP = ("Human-ranked groups (prompt, responses, ranks with 1 the best): a file, a `datasets` folder, hf:NAME[:SPLIT], "
               "or a version with a ranked/heldout table [default: the shipped seed set]")


@dataclass(frozen=True, kw_only=True)
class ExecutorKnobs:
    """Where a sharded stage's shards run (builder/stages/executor.py); not part of any identity."""

    executor: str = knob("local", "local: every shard in this process; ray: every shard as a Ray task, then the merge here",
                         choices=("local", "ray"))
    ray_address: str | None = knob(None, "ray: the cluster to run on (auto: the one this machine belongs to; ray://HEAD:10001) "
                                         "[default: a local cluster started for this run]")

    def check_executor(self) -> None:
        if self.ray_address is not None and self.executor != "ray":
            raise BuilderError("--ray-address needs --executor ray")


@dataclass(frozen=True, kw_only=True)
class MakePairsConfig(ModelKnobs, SamplingKnobs, JudgeModelKnobs, PointwiseJudgeKnobs, EngineKnobs, ExecutorKnobs):
    """`builder make-pairs`: N candidates per prompt, K self-judgments each, averaged; best vs worst is a pair."""

    prompts: str | None = knob(None, PROMPTS_HELP, short="-p")
    limit: int | None = knob(None, LIMIT_HELP, rule="positive")
    n_samples: int = knob(4, "Candidates per prompt (N)", rule="at_least_2", short="-n")
    length_control: float | None = knob(None, "RHO: the chosen response is the shortest candidate whose mean score is within RHO "
                                              "of the best (and above the worst) [default: off, the highest mean]", rule="non_negative")
    verify: bool = knob(False, "Verifiers as rewards (rule: --verify-rule): on prompts that carry constraints, a candidate that "
                               "fails a check is never chosen over one that passes; within a class the judge decides")
    verify_rule: str = knob("checks_first", "With --verify: checks_first: a prompt whose candidates all pass the same share of "
                                            "its constraints gets its pair from the judge; checks_margin: it gets no pair (and its "
                                            "candidates are not judged), so every verified pair's chosen passes more constraints; "
                                            "checks_margin_ended: as checks_margin, and of two answers passing as many, one that "
                                            "ended ranks above one cut at the length limit (which is never chosen)",
                            choices=("checks_first", "checks_margin", "checks_margin_ended"))
    pairs_per_prompt: int = knob(1, "Pairs per prompt (1: the paper's best against worst): then the pairs nearest to that one, "
                                    "wherever the first is ranked above the second (under checks_margin: passes more "
                                    "constraints), from the same candidates and judgments", rule="positive")
    shard_size: int = knob(SHARD_SIZE, "Prompts per shard: the build runs, saves and resumes shard by shard, in memory bounded "
                                       "by this (rounded up to whole blocks of 16 batches); the version is the same whatever it is",
                           rule="positive")
    shard: str | None = knob(None, "I/N: run only the shards k with k % N == I (worker I of N against one store); the run that "
                                   "finds every shard finished merges them [default: every shard, then the merge]")

    def validate(self) -> None:
        check_knobs(self)
        self.check_engine()
        self.judge_engine()
        self.check_executor()
        if self.worker() is not None and self.executor != "local":
            raise BuilderError("--shard runs one worker's shards in this process; --executor ray runs every shard: give one of them")
        if self.verify_rule != "checks_first" and not self.verify:
            raise BuilderError(f"--verify-rule {self.verify_rule} needs --verify")

    def worker(self) -> tuple[int, int] | None:
        """--shard I/N as (I, N), or None: every shard."""
        return parse_worker(self.shard)


@dataclass(frozen=True, kw_only=True)
class MakeJudgePairsConfig(JudgeKnobs, EngineKnobs):
    """`builder make-judge-pairs`: the meta-judge compares two judgments of one response in both orders; the
    judgment it prefers in both is chosen over the other."""

    pairs: str = knob(MISSING, "The make-pairs version whose judgments are compared (none is recomputed)", short="-p")
    model: str | None = knob(None, "The meta-judge: a spec like make-pairs' --model [default: the model that wrote the judgments]",
                             short="-m")
    judge_template: str | None = knob(None, "The meta-judge: a judge folder of kind meta (template.txt + judge.yaml) or a template "
                                            "file with {judge_prompt}, {judgment_1}, {judgment_2} [default: the shipped meta_judge]")
    comparisons_per_prompt: int = knob(3, "Judgment pairs compared per prompt, the highest-variance candidate's first", rule="positive")
    balance_scores: bool = knob(False, "Keep as many pairs whose chosen judgment gave the lower score as pairs whose chosen gave the "
                                       "higher one (down-sampling the larger side), so DPO cannot teach the judge to inflate or deflate")

    def validate(self) -> None:
        check_knobs(self)
        self.check_engine()


@dataclass(frozen=True, kw_only=True)
class MakeEftConfig(ModelKnobs, PointwiseJudgeKnobs, EngineKnobs):
    """`builder make-eft`: judge human-ranked responses; keep the judgments that agree with the humans."""

    ranked: str | None = knob(None, RANKED_HELP, short="-r")
    held_out: float = knob(0.2, "Share of groups held out for reward-model evaluation", rule="share")
    limit: int | None = knob(None, LIMIT_HELP, rule="positive")
    rebalance: bool = knob(False, "Down-sample the most common score of the EFT examples to the next most common one's count, as the paper does")

    def validate(self) -> None:
        check_knobs(self)
        self.check_engine()


@dataclass(frozen=True, kw_only=True)
class MakePromptsConfig(ModelKnobs, SamplingKnobs, EngineKnobs):
    """`builder make-prompts`: self-instruct new prompts from random seed prompts, filtered."""

    seed_prompts: str | None = knob(None, "Seed prompts: a file or a version [default: the shipped IFT prompts]", short="-s")
    n_prompts: int = knob(1000, "New prompts to ask for (before filtering)", rule="positive")
    shots: int = knob(8, "Seed prompts shown per request", rule="positive")
    min_words: int = knob(3, "Drop a new prompt with fewer words", rule="positive")
    max_chars: int = knob(600, "Drop a new prompt with more characters", rule="positive")
    similarity: float = knob(0.7, "Near-duplicate threshold (estimated Jaccard of character 5-grams)", rule="probability")
    temperature: float = default(0.8)
    top_p: float = default(0.95)
    max_new_tokens: int = default(96)

    def validate(self) -> None:
        check_knobs(self)
        self.check_engine()


@dataclass(frozen=True, kw_only=True)
class MakeVerifiableConfig:
    """`builder make-verifiable`: instructions with constraints code can check, composed from seed tasks; train and eval splits."""

    n_prompts: int = knob(1000, "Training instructions to compose (the `prompts` table)", rule="positive")
    n_eval: int = knob(200, "Held-out instructions, composed from the held-out tasks only (the `eval` table)", rule="positive")
    eval_share: float = knob(0.2, "Share of the tasks held out: every instruction made from a held-out task is in `eval`", rule="share")
    min_constraints: int = knob(1, "Fewest constraints per instruction", rule="positive")
    max_constraints: int = knob(3, "Most constraints per instruction", rule="positive")
    tasks: str | None = knob(None, "Seed tasks, one per line [default: the 192 shipped tasks, builder/data/verifiable/tasks.txt]", path=True)
    seed: int = knob(0, "Seed of the training instructions (another seed: other instructions, the same split)")
    split_seed: int = knob(0, "Seed of the task split and of the held-out instructions; keep it fixed so every iteration is "
                              "measured on the same eval split")

    def validate(self) -> None:
        check_knobs(self)
        if self.min_constraints > self.max_constraints:
            raise BuilderError("--min-constraints must not exceed --max-constraints")
        if self.eval_share == 0:
            raise BuilderError("--eval-share must be above 0: the eval split needs tasks of its own")


@dataclass(frozen=True, kw_only=True)
class MixSftConfig:
    """`builder mix-sft`: the M0 → M1 SFT data, IFT and EFT examples in TRL's prompt/completion format."""

    ift: str | None = knob(None, "IFT data: a file (prompt, response) or a version [default: the shipped seed set]")
    eft: str | None = knob(None, "EFT data: a file (prompt, response, judgment) or an EFT version [default: the shipped seed set]")
    judge_template: str | None = knob(None, "The judge template the EFT prompts are rendered with [default: the additive 5-point template]",
                                      path=True)
    seed: int = knob(0, "Shuffle seed")
    ift_only: bool = knob(False, "IFT examples only: the data of the IFT-only model that labels make-eft in the paper")

    def validate(self) -> None:
        check_knobs(self)
        if self.ift_only and self.eft is not None:
            raise BuilderError("--ift-only and --eft exclude each other")


@dataclass(frozen=True, kw_only=True)
class ImportOasstConfig:
    """`builder import-oasst`: oasst1 message trees → prompts, IFT and ranked groups."""

    path: str = knob(MISSING, "oasst1 message rows: a JSONL/parquet file, a `datasets` folder or hf:NAME[:SPLIT]", argument=True)
    lang: str | None = knob("en", "Keep messages in this language ('' for all)")
    limit: int | None = knob(None, "Keep this many first-turn prompts, sampled with --seed", rule="positive")
    seed: int = knob(0, "Sampling seed of --limit")

    def validate(self) -> None:
        check_knobs(self)


def parse_worker(text: str | None) -> tuple[int, int] | None:
    """"I/N" (0 <= I < N) as (I, N); one line for anything else."""
    if text is None:
        return None
    index, _, count = text.partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()) or not 0 <= int(index) < int(count):
        raise BuilderError(f"--shard must be I/N with 0 <= I < N, e.g. 0/4 (got {text!r})")
    return int(index), int(count)
