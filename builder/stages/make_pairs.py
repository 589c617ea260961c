"""One iteration's data: prompts → N candidates each → K judgments each → averaged scores → pairs.

Every stage is a pure function of the tables before it, except the two generation stages, which go through
the generation cache so that a killed run continues where it stopped and gives the same version.

The build runs shard by shard (builder/core/stage.py `build_sharded`): the prompts, read from their index a
shard at a time, are cut into shards of `--shard-size` (whole planning blocks of 16 batches, so that every
batch, and so every answer of a batch-seeded backend, is the same whatever the shard size); each shard's
tables are saved in the store's staging as it finishes; the merge publishes them as the version's tables and
computes its stats, health and label quality over them lazily. Within the version, every table is in prompt
order (the input's), then sample order, so that it is the same whatever the shard size.
"""

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import polars as pl

from builder.core.manifest import Manifest
from builder.core.prompts import PromptIndex, index_prompts
from builder.core.records import KeyMaker, Request, Sampling, make_request
from builder.core.registry import judge_label_quality
from builder.core.schemas import CANDIDATES_SCHEMA
from builder.core.stage import (
    Sharded,
    StageOutput,
    build_shard,
    build_sharded,
    count_shards,
    merge_shards,
)
from builder.core.staging import FinishedShard
from builder.core.stats import pairs_stats
from builder.core.store import Parts, Store, Version
from builder.engines.batching import Device, engine_identity, local_device, resolve_engine
from builder.engines.generators import Generator, load_generator
from builder.engines.models import ModelRef, resolve_model
from builder.engines.runner import answer_lazily
from builder.judging.health import pairs_health
from builder.judging.judgment_stats import judgment_stats
from builder.judging.score import judge_candidates
from builder.judging.setup import JudgeSetup, prepare_judge
from builder.judging.verify import check_candidates, label_quality, prompt_constraints
from builder.stages.aggregate import (
    JUDGE_ONLY,
    LENGTH_CONTROL_RULE,
    RULES,
    SCORE_COLUMNS,
    build_labels,
    select_pairs,
    to_judge,
)
from builder.stages.configs import MakePairsConfig
from builder.stages.executor import open_executor
from builder.stages.fit_context import context_record, drop_too_long
from builder.stages.pairs_card import render_pairs_card

BLOCK_BATCHES = 16  # a planning block: batches are planned within it, and a shard holds whole blocks
TABLES = ("prompts", "candidates", "judgments", "pairs", "dropped", "checks")


def make_pairs(config: MakePairsConfig, store: Store) -> tuple[Version | None, bool]:
    """Build (or find) the version for this configuration: every unfinished shard (with --shard I/N, worker I's
    shards only), then the merge once every shard is finished. Returns (version, built_now), or (None, False)
    when this worker leaves shards to others. With --executor ray every shard is a Ray task, then the merge runs here."""
    if config.executor != "local":
        return make_pairs_on(config, store)
    build = PairsBuild.prepare(config, store)
    return build_sharded(store, "pairs", build.identity, build.stage(), config.worker())


def make_pairs_on(config: MakePairsConfig, store: Store) -> tuple[Version, bool]:
    """Every shard as a task of the executor, then the merge in this process: the same version as a local run.
    `auto` settings are resolved here, for the device the tasks get, and the tasks receive them resolved."""
    with open_executor(config.executor, config.ray_address) as executor:
        build = PairsBuild.prepare(config, store, executor.device)
        count = shard_count(build.config, store)
        if count:
            task_config, task_store = portable(build.config, store)
            calls = [(task_config, task_store, k) for k in range(count)]
            gpus = gpus_per_task(build.config, executor)
            cpus = executor.node_cpus() if not gpus and runs_a_model(build.config) else 1
            executor.run(run_make_pairs_shard, calls, gpus=gpus, cpus=cpus, label="make-pairs shards")
    return merge_make_pairs(build.config, store)


def portable(config: MakePairsConfig, store: Store) -> tuple[MakePairsConfig, Store]:
    """The configuration and store as a task elsewhere reads them: every path that exists here made absolute (a
    worker's folder is not this one; on a cluster the store and inputs must be on a filesystem every node shares).
    Only the paths change, and no path is in a version's tables or identity."""
    def absolute(spec: str | None) -> str | None:
        return str(Path(spec).expanduser().resolve()) if spec and Path(spec).expanduser().exists() else spec

    paths = {name: absolute(getattr(config, name)) for name in ("prompts", "model", "judge", "judge_template")}
    return replace(config, **paths), Store(store.root.resolve(), store.recipe)


def runs_a_model(config: MakePairsConfig) -> bool:
    """Whether a task drives a model itself (transformers, vllm) rather than only calling servers."""
    return bool({config.backend, config.judge_engine()[0]} & {"transformers", "vllm"})


def gpus_per_task(config: MakePairsConfig, executor) -> int:
    """A task that drives a model asks for its GPUs where the cluster has any; one that calls servers for none."""
    return config.tensor_parallel_size if runs_a_model(config) and executor.has_gpus() else 0


@dataclass
class PairsBuild:
    """One configuration's build, decided before any model is loaded: its prompts' index, judge, models and identity."""

    config: MakePairsConfig
    store: Store
    index: PromptIndex
    setup: JudgeSetup
    policy_ref: ModelRef
    judge_ref: ModelRef
    judge_backend: str
    judge_options: object
    identity: dict
    verified_input: bool  # some prompt carries constraints: every shard checks its candidates
    engines: Callable[[], tuple[Generator, Generator]] | None = None

    @classmethod
    def prepare(cls, config: MakePairsConfig, store: Store, device: Callable[[], Device] = local_device) -> "PairsBuild":
        """`device`: where the shards generate, for `auto` dtype and batch size (the build's config holds them resolved)."""
        config.validate()
        index = index_prompts(config.prompts, store, config.limit)
        judge_backend, judge_options = config.judge_engine()
        setup = prepare_judge("pointwise", config.judge_template, config.n_judgments, config.judge_temperature, config.judge_top_p,
                              config.judge_max_new_tokens, config.judge_constraint, config.rationale_min_chars,
                              config.rationale_max_chars, judge_backend, judge_options)
        policy_ref = resolve_model(config.model, store.root, config.backend == "openai")
        judge_ref = policy_ref if config.judge is None else resolve_model(config.judge, store.root, judge_backend == "openai")
        config = resolve_engine(config, [policy_ref, judge_ref], [candidate_sampling(config), setup.sampling], judge_backend, device=device)
        engine = engine_identity(config.backend, config.dtype, config.batch_size, judge_backend)
        identity = {
            "input": index.fingerprint,
            "policy": policy_ref.fingerprint,
            "judge": judge_ref.fingerprint,
            "engine": engine,
            "candidates": asdict(candidate_sampling(config)),
            "judgments": asdict(setup.sampling),
            "judge_spec": setup.record,
            "score": config.score,
            "seed": config.seed,
        } | ({"judge_engine": {"backend": judge_backend}} if judge_backend != config.backend else {}) \
          | ({"length_control": config.length_control} if config.length_control is not None else {}) \
          | ({"labels": {"rule": config.verify_rule}} if config.verify else {}) \
          | ({"pairs_per_prompt": config.pairs_per_prompt} if config.pairs_per_prompt != 1 else {})  # off: earlier versions' ids
        build = cls(config, store, index, setup, policy_ref, judge_ref, judge_backend, judge_options, identity, index.constrained > 0)
        build.engines = once(build.load_engines)
        return build

    @property
    def rule(self) -> str:
        return self.config.verify_rule if self.config.verify else JUDGE_ONLY

    def block_size(self) -> int:
        return BLOCK_BATCHES * self.config.batch_size

    def shard_size(self) -> int:
        """--shard-size rounded up to whole planning blocks."""
        block = self.block_size()
        return -(-self.config.shard_size // block) * block

    def stage(self) -> Sharded:
        return Sharded(self.index.rows, self.shard_size(), self.run_shard, self.merge)

    def load_engines(self) -> tuple[Generator, Generator]:
        config = self.config
        options = {"dtype": config.dtype, "batch_size": config.batch_size, "engine_options": config.engine_options}
        policy = load_generator(self.policy_ref, config.backend, **options)
        same_engine = self.judge_ref == self.policy_ref and (self.judge_backend, self.judge_options) == (config.backend, config.engine_options)
        judge = policy if same_engine else load_generator(self.judge_ref, self.judge_backend, **options | {"engine_options": self.judge_options})
        return policy, judge

    def run_shard(self, rows: range) -> tuple[dict[str, pl.DataFrame], dict]:
        """One shard's tables, in prompt order, and its record for the merge."""
        config, setup, store = self.config, self.setup, self.store
        started = time.perf_counter()
        policy, judge = self.engines()
        prompts = self.index.read(rows)
        blocks = pl.int_range(rows.start, rows.stop, eager=True) // self.block_size()
        fitting, too_long = drop_too_long(prompts.with_columns(blocks.alias("block")), policy, judge, setup.template,
                                          config.max_new_tokens, setup.sampling.max_new_tokens)
        fitting, blocks = fitting.drop("block"), fitting["block"]

        begun = time.perf_counter()
        candidates = generate_candidates(policy, fitting, candidate_sampling(config), config.seed, store, config.batch_size, blocks)
        candidates_s = time.perf_counter() - begun
        constraints = prompt_constraints(fitting) if self.verified_input else {}
        checks = check_candidates(constraints, candidates) if self.verified_input else None
        judgments = judge_candidates(judge, setup.spec, fitting, to_judge(candidates, checks, self.rule), setup.sampling, config.seed,
                                     store, config.batch_size, setup.constraint, blocks)
        judgments_s = time.perf_counter() - begun - candidates_s
        scored, pairs, dropped = build_labels(fitting, candidates, judgments, checks, self.rule, config.length_control, config.score,
                                               config.pairs_per_prompt)
        order = in_prompt_order(fitting, scored)
        tables = {
            "prompts": fitting,
            "candidates": order(scored),
            "judgments": order(judgments, "sample_index"),
            "pairs": order(pairs),
            "dropped": order(pl.concat([too_long, dropped]), "level", "judgment_id"),
        } | ({"checks": order(checks, "constraint_index")} if checks is not None else {})
        record = {
            "engines": {"policy": policy.identity, "judge": judge.identity},
            "context": context_record(policy, judge),
            "verified_prompts": len(constraints),
            "ties": {score: ties(fitting, candidates, judgments, score) for score in SCORE_COLUMNS},
            "timing_s": {"candidates": candidates_s, "judgments": judgments_s, "total": time.perf_counter() - started},
        }
        if config.length_control is not None:
            record["length_control"] = length_control_counts(fitting, scored, pairs)
        return tables, record

    def merge(self, shards: list[FinishedShard]) -> StageOutput:
        """The version from its finished shards: their tables as parts (the input's dropped prompts first), and
        every figure computed over the parts lazily or added up from the shards' records."""
        config, setup = self.config, self.setup
        tables = {}
        for name in TABLES:
            files = [f for f in ([self.index.dropped] if name == "dropped" else []) + [s.table(name) for s in shards] if f]
            if files:
                tables[name] = Parts(tuple(files), sum(pl.scan_parquet(f).select(pl.len()).collect().item() for f in files))
        lazy = {name: pl.scan_parquet(list(parts.files)) for name, parts in tables.items()}
        n_prompts = tables["prompts"].height
        quality = label_quality(lazy["pairs"])
        if not quality["verified_pairs"]:
            quality |= judge_label_quality(self.store, self.judge_ref.fingerprint, setup.template.sha256)
        else:
            quality["basis"] = "verifiers"
        first = shards[0].record
        extra = {"context": first["context"], "batch_size": config.batch_size,
                 "labels": {"rule": self.rule, "text": RULES[self.rule], "pairs_per_prompt": config.pairs_per_prompt,
                            "verified_prompts": sum(s.record["verified_prompts"] for s in shards)}}
        if config.length_control is not None:
            extra["length_control"] = length_control_record([s.record["length_control"] for s in shards], config.length_control)
        tie_rates = {score: round(sum(s.record["ties"][score] for s in shards) / n_prompts, 4) if n_prompts else None
                     for score in SCORE_COLUMNS}
        source = self.index.source
        manifest = Manifest(
            kind="pairs",
            parent=source.parent_version,
            inputs={"prompts": {**source.to_json(), "limit": config.limit, "prompts_fingerprint": self.index.fingerprint}},
            models={"policy": {"model": self.policy_ref.to_json(), "engine": first["engines"]["policy"]},
                    "judge": {"model": self.judge_ref.to_json(), "engine": first["engines"]["judge"]}},
            sampling={"candidates": asdict(candidate_sampling(config)), "judgments": asdict(setup.sampling)},
            judge=setup.template.to_json() | {"spec": setup.record, "score": config.score},
            seed=config.seed,
            stats=pairs_stats(lazy) | judgment_stats(lazy["judgments"], setup.constraint, setup.sampling.max_new_tokens)
            | {"tie_rate_by_score": tie_rates, "label_quality": quality},
            health=pairs_health(lazy),
            extra=extra,
        )
        return StageOutput(tables, manifest, render_pairs_card)


def candidate_sampling(config: MakePairsConfig) -> Sampling:
    return Sampling(config.n_samples, config.temperature, config.top_p, config.max_new_tokens)


def once(load: Callable[[], tuple[Generator, Generator]]) -> Callable[[], tuple[Generator, Generator]]:
    """Load the engines at the first shard that needs them (a finished build needs none), then keep them."""
    loaded: list = []

    def engines() -> tuple[Generator, Generator]:
        if not loaded:
            loaded.append(load())
        return loaded[0]

    return engines


def in_prompt_order(prompts: pl.DataFrame, candidates: pl.DataFrame) -> Callable[..., pl.DataFrame]:
    """Sorts a shard's table by its prompt's position, then (where it names a candidate) by the candidate's
    sample index, then by `then`; rows that name no prompt or candidate come after those that do."""
    position = prompts.select("prompt_id").with_row_index("_prompt")
    candidate = candidates.select("candidate_id", pl.col("sample_index").alias("_candidate"))

    def order(table: pl.DataFrame, *then: str) -> pl.DataFrame:
        keyed, by = table.join(position, on="prompt_id", how="left"), ["_prompt"]
        if "candidate_id" in table.columns:
            keyed, by = keyed.join(candidate, on="candidate_id", how="left"), [*by, "_candidate"]
        return keyed.sort([*by, *then], nulls_last=True).drop(by)

    return order


def ties(prompts: pl.DataFrame, candidates: pl.DataFrame, judgments: pl.DataFrame, score: str) -> int:
    """The prompts this scoring would drop as ties (over the same judgments): the tie rate's numerator."""
    _, _, dropped = build_labels(prompts, candidates, judgments, score=score)
    return dropped.filter(pl.col("reason") == "tie").height


def length_control_counts(prompts: pl.DataFrame, scored: pl.DataFrame, pairs: pl.DataFrame) -> dict:
    """One shard's share of length_control_record: whole numbers, so that they add up exactly."""
    plain, _ = select_pairs(prompts, scored)
    changed = pairs.join(plain.select("prompt_id", pl.col("chosen_id").alias("plain_id")), on="prompt_id")
    return {"chosen_changed": changed.filter(pl.col("chosen_id") != pl.col("plain_id")).height,
            "pairs": pairs.height, "gap": _gap_sum(pairs), "pairs_without": plain.height, "gap_without": _gap_sum(plain)}


def _gap_sum(pairs: pl.DataFrame) -> int:
    return int((pairs["chosen_tokens"] - pairs["rejected_tokens"]).sum())


def length_control_record(shards: list[dict], rho: float) -> dict:
    """The rule, its parameter, and what it changed: the chosen-minus-rejected length gap with and without it,
    from every shard's length_control_counts."""
    total = {key: sum(shard[key] for shard in shards) for key in shards[0]}
    mean = lambda gap, n: round(gap / n, 2) if n else None
    return {
        "rho": rho, "rule": LENGTH_CONTROL_RULE, "chosen_changed": total["chosen_changed"],
        "chosen_minus_rejected_tokens": mean(total["gap"], total["pairs"]),
        "chosen_minus_rejected_tokens_without": mean(total["gap_without"], total["pairs_without"]),
    }


def generate_candidates(policy: Generator, prompts: pl.DataFrame, sampling: Sampling, seed: int, store: Store, batch_size: int,
                        blocks: pl.Series | None = None) -> pl.DataFrame:
    """One candidates row per prompt and sample, in prompt order; `blocks`: each prompt's planning block (see
    runner.fill_cache)."""
    key = KeyMaker(policy.identity, sampling, seed)
    asked = pl.concat(
        [
            pl.DataFrame({"key": [key(m) for m in chunk]}, schema={"key": pl.String})
            for chunk in (part["messages"].to_list() for part in prompts.select("messages").iter_slices(1 << 16))
        ]
    ).with_columns(prompts.select(pl.col("messages").list.eval(pl.element().struct.field("content").str.len_chars()).list.sum()
                                  .cast(pl.Int64).alias("length")))
    if blocks is not None:
        asked = asked.with_columns(blocks.alias("block"))

    def build(rows: pl.Series) -> list[Request]:
        messages, keys = prompts["messages"].gather(rows).to_list(), asked["key"].gather(rows).to_list()
        return [make_request(policy.identity, m, sampling, seed, key=k) for m, k in zip(messages, keys, strict=True)]

    answers = answer_lazily(policy, asked, build, store.generation_cache(policy.identity), batch_size, "candidates")
    return (
        prompts.select("prompt_id", asked["key"].alias("request_key"))
        .with_row_index("order")
        .join(answers, left_on="request_key", right_on="key")
        .sort("order", "sample")
        .select(
            pl.format("{}-c{}", "prompt_id", "sample").alias("candidate_id"),
            "prompt_id",
            pl.col("sample").alias("sample_index"),
            pl.col("text").alias("response"),
            "finish_reason",
            "n_tokens",
            "request_key",
        )
        .cast(CANDIDATES_SCHEMA)
    )


def candidate_requests(policy: Generator, prompts: pl.DataFrame, sampling: Sampling, seed: int) -> list[Request]:
    return [make_request(policy.identity, messages, sampling, seed) for messages in prompts["messages"].to_list()]


# The shard interface: what an executor (a Slurm array, a Kubernetes indexed job, Ray tasks) calls. Every
# call is safe from several processes and machines at once against one store.

def shard_count(config: MakePairsConfig, store: Store) -> int:
    """How many shards this configuration's build has: ceil(usable prompts / shard size), the shard size being the
    one the build's staging recorded when a first worker started it (else `config.shard_size`, rounded up to whole
    planning blocks). 0 when the version is already built."""
    build = PairsBuild.prepare(config, store)
    return count_shards(store, "pairs", build.identity, build.stage())


def run_make_pairs_shard(config: MakePairsConfig, store: Store, shard_index: int) -> bool:
    """Build shard `shard_index` (0 <= shard_index < shard_count) and save its tables as parts in the store's
    staging (`<store>/.staging/<version-id>/shard-NNNNN/`, a completion marker last). Returns False when that shard
    was already finished (or the version is built), True when this call finished it. Another process working on the
    same shard makes this call wait, then return False. Generators are loaded once per process and kept for the next
    call with the same models and engine settings. Its paid work goes through the generation cache, so a killed call
    rerun loses nothing and asks nothing twice."""
    build = PairsBuild.prepare(config, store)
    key = (build.policy_ref, build.judge_ref, build.judge_backend, build.judge_options, build.config.backend, build.config.dtype,
           build.config.batch_size, build.config.engine_options)

    def engines() -> tuple[Generator, Generator]:
        if key not in _ENGINES:
            _ENGINES.clear()  # one configuration's engines at a time: a model is large
            _ENGINES[key] = build.load_engines()
        return _ENGINES[key]

    build.engines = engines
    return build_shard(store, "pairs", build.identity, build.stage(), shard_index)


_ENGINES: dict[tuple, tuple[Generator, Generator]] = {}  # run_make_pairs_shard's engines, kept between its calls


def merge_make_pairs(config: MakePairsConfig, store: Store) -> tuple[Version, bool]:
    """Once every shard is finished: aggregate the parts (stats, health, label quality, card, lazily) and publish the
    version, manifest last. Returns (version, built_now); an already built version is returned as it is. Raises
    BuilderError naming the unfinished shards otherwise."""
    build = PairsBuild.prepare(config, store)
    return merge_shards(store, "pairs", build.identity, build.stage())
