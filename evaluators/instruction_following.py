"""`builder eval follow`: how well do these models follow instructions a program can check?

Every policy answers every verifiable prompt N times, through the generation cache (answers that `eval judge` or
a judge gate already paid for, same policy and sampling, are reused), and the verifiers check every answer. An
answer *follows* its instruction when it passes every constraint of its prompt.

Per policy: the share of answers that follow (Wilson 95% interval), the share of single constraints passed,
and the share per constraint kind. Each policy after the first is compared with the first (the baseline) on the
same prompts: the difference in the share of answers that follow, with a 95% percentile-bootstrap interval that
resamples prompts (a prompt's N answers are not independent of each other, so the prompt is the unit), its
seed fixed. An interval above zero says the policy follows more instructions than the baseline.
"""

import time
from dataclasses import asdict

import numpy as np
import polars as pl

from builder.core.manifest import Manifest
from builder.core.records import Sampling, stable_hash
from builder.core.stage import StageOutput, build_version
from builder.core.store import Store, Version
from builder.engines.batching import engine_identity, resolve_engine
from builder.engines.generators import load_generator
from builder.engines.models import resolve_model
from builder.judging.metrics import share_with_ci
from builder.judging.verify import check_candidates, prompt_constraints, with_checks
from builder.stages.make_pairs import generate_candidates
from builder.stages.verifiable import load_verifiable
from evaluators.card import render_follow_card
from evaluators.configs import FollowConfig

BOOTSTRAP_SAMPLES = 4000


def evaluate_following(config: FollowConfig, store: Store) -> tuple[Version, bool]:
    config.validate()
    prompts, source = load_verifiable(config.prompts, store, config.limit)
    constraints = prompt_constraints(prompts)
    sampling = Sampling(config.n_samples, config.temperature, config.top_p, config.max_new_tokens)
    refs = [resolve_model(spec, store.root, config.backend == "openai") for spec in config.policies]  # after the input: it fails first
    config = resolve_engine(config, refs, [sampling], config.backend)
    fingerprint = stable_hash(prompts.select("prompt_id", "constraints").rows())
    identity = {
        "input": fingerprint,
        "policies": [ref.fingerprint for ref in refs],
        "candidates": asdict(sampling),
        "engine": engine_identity(config.backend, config.dtype, config.batch_size, config.backend),
        "seed": config.seed,
    }

    def run(vid: str) -> StageOutput:
        started = time.perf_counter()
        answers, checks, models = [], [], {}
        for index, ref in enumerate(refs):
            policy = load_generator(ref, config.backend, dtype=config.dtype, batch_size=config.batch_size,
                                    engine_options=config.engine_options)
            generated = generate_candidates(policy, prompts, sampling, config.seed, store, config.batch_size)
            checked = check_candidates(constraints, generated)
            name = config.policies[index]
            answers.append(with_checks(generated, checked).with_columns(pl.lit(name).alias("policy")))
            checks.append(checked.with_columns(pl.lit(name).alias("policy")))
            models[f"policy_{index}"] = {"model": ref.to_json(), "engine": policy.identity}
            del policy
        answers_table = pl.concat(answers).select("policy", pl.exclude("policy"))
        checks_table = pl.concat(checks).select("policy", pl.exclude("policy"))
        stats = following_stats(answers_table, checks_table, list(config.policies), config.seed)
        manifest = Manifest(
            kind="follow",
            parent=source.parent_version,
            inputs={"prompts": {**source.to_json(), "limit": config.limit, "prompts_fingerprint": fingerprint}},
            models=models,
            sampling={"candidates": asdict(sampling)},
            seed=config.seed,
            stats=stats,
            extra={"rule": "an answer follows its instruction when it passes every constraint of its prompt; differences: "
                           f"percentile bootstrap over prompts, {BOOTSTRAP_SAMPLES} resamples"},
            timing_s={"answers": round(time.perf_counter() - started, 2)},
        )
        return StageOutput({"answers": answers_table, "checks": checks_table, "prompts": prompts}, manifest, render_follow_card)

    return build_version(store, "follow", identity, run)


def following_stats(answers: pl.DataFrame, checks: pl.DataFrame, policies: list[str], seed: int) -> dict:
    """Each policy's shares, then each later policy's difference from the first with its bootstrap interval."""
    per_policy = []
    for name in policies:
        own, own_checks = answers.filter(pl.col("policy") == name), checks.filter(pl.col("policy") == name)
        followed = share_with_ci(int(own["passed"].sum()), own.height)
        kinds = own_checks.group_by("kind").agg(pl.col("passed").mean().round(4)).sort("kind")
        per_policy.append({
            "policy": name, "prompts": own["prompt_id"].n_unique(), "answers": own.height, "followed": int(own["passed"].sum()),
            "share": followed["share"], "low": followed["low"], "high": followed["high"],
            "constraint_share": round(float(own_checks["passed"].mean()), 4) if own_checks.height else None,
            "kinds": dict(kinds.iter_rows()),
        })
    by_prompt = answers.group_by("policy", "prompt_id").agg(pl.col("passed").mean().alias("share"))
    wide = by_prompt.pivot(on="policy", index="prompt_id", values="share").sort("prompt_id")
    differences = [paired_difference(wide[policies[0]].to_numpy(), wide[name].to_numpy(), seed) | {"policy": name, "baseline": policies[0]}
                   for name in policies[1:]]
    return {"policies": per_policy, "differences": differences}


def paired_difference(baseline: np.ndarray, other: np.ndarray, seed: int, level: float = 0.95) -> dict:
    """Mean over prompts of (other's share − baseline's share), with a percentile-bootstrap interval over prompts."""
    diff = other - baseline
    if diff.size == 0:
        return {"difference": None, "low": None, "high": None, "prompts": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(BOOTSTRAP_SAMPLES, diff.size))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"difference": round(float(diff.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4), "prompts": int(diff.size),
            "better": int((diff > 0).sum()), "worse": int((diff < 0).sum())}
