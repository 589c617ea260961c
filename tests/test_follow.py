"""`builder eval follow`: each policy's share of verifiable instructions followed, and its difference from the first
with a bootstrap interval over prompts, end to end on the tiny model through the CLI."""

import json
import shutil

import numpy as np
import polars as pl
from conftest import run_builder
from test_judge_accuracy import verifiable_prompts

from evaluators.instruction_following import paired_difference


def test_paired_difference_resamples_prompts():
    same = paired_difference(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 1.0]), seed=0)
    assert (same["difference"], same["low"], same["high"], same["better"], same["worse"]) == (0.0, 0.0, 0.0, 0, 0)
    rng = np.random.default_rng(1)
    baseline = rng.uniform(0, 1, 200)
    better = paired_difference(baseline, np.clip(baseline + 0.2, 0, 1), seed=0)
    assert 0 < better["low"] <= better["difference"] <= better["high"] <= 0.2
    noisy = paired_difference(baseline, rng.uniform(0, 1, 200), seed=0)
    assert noisy["low"] < 0 < noisy["high"]  # two unrelated policies: the interval holds zero
    assert paired_difference(np.array([]), np.array([]), seed=0)["difference"] is None


def test_eval_follow_end_to_end(tiny_model, tmp_path):
    store = tmp_path / "store"
    prompts = verifiable_prompts(tmp_path / "v.jsonl")
    twin = shutil.copytree(tiny_model, tmp_path / "twin")
    args = ["eval", "follow", "--policy", tiny_model, "--policy", twin, "--prompts", prompts, "-n", "3", "--max-new-tokens", "16",
            "--batch-size", "8", "--store", store]
    result = run_builder(*args, check=True)
    version = result.stdout.strip().splitlines()[-1]
    assert "instructions followed" in result.stdout and "baseline" in result.stdout
    manifest = json.loads((store / version / "manifest.json").read_text())
    first, second = manifest["stats"]["policies"]
    answers = pl.read_parquet(store / version / "answers.parquet")
    assert answers.height == 24 and first["answers"] == second["answers"] == 12 and first["prompts"] == 4
    assert first["followed"] == answers.filter(pl.col("policy") == str(tiny_model))["passed"].sum()
    assert set(first["kinds"]) == {"max_words"} and first["low"] <= first["share"] <= first["high"]
    # the twin has the same weights: the generation cache answers it with the same texts, so the difference is exactly 0
    difference = manifest["stats"]["differences"][0]
    assert (difference["difference"], difference["low"], difference["high"]) == (0.0, 0.0, 0.0)
    checks = pl.read_parquet(store / version / "checks.parquet")
    assert checks.height == 24 and checks.columns[0] == "policy"
    assert "## Against" in (store / version / "README.md").read_text()
    assert run_builder(*args, check=True).stdout.strip().splitlines()[-1] == version  # found, not recomputed
    shown = run_builder("show", version, "--store", store, check=True).stdout
    assert "instructions followed" in shown and "followed" in run_builder("ls", "--store", store, check=True).stdout

    refused = run_builder("eval", "follow", "--policy", tiny_model, "--policy", tiny_model, "--prompts", prompts, "--store", store)
    assert refused.returncode == 2 and refused.stderr.strip() == "Error: eval follow: each --policy once"
