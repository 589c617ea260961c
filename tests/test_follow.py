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


def test_a_recipe_without_seed_sft_ends_with_eval_follow(tiny_model, tmp_path):
    """`sft: null`: the first iteration's DPO starts from the base; `eval_follow:` measures the base and every model
    made on the same prompts, and `builder run` prints the table."""
    import yaml

    one_step = {"max_steps": 1, "batch_size": 2, "micro_batch_size": 2, "max_length": 256, "save_steps": 1}
    prompts = verifiable_prompts(tmp_path / "v.jsonl", words=4)
    recipe = {
        "name": "verified", "base": str(tiny_model), "generation": {"batch_size": 8, "dtype": "float32"}, "sft": None,
        "iteration": {"make_pairs": {"verify": True, "verify_rule": "checks_margin", "n_samples": 4, "n_judgments": 1,
                                     "max_new_tokens": 16, "judge_max_new_tokens": 16}, "dpo": one_step},
        "iterations": [{"name": "M1", "prompts": str(prompts)}],
        "eval_follow": {"prompts": str(prompts), "n_samples": 2, "max_new_tokens": 16},
    }
    path = tmp_path / "verified.yaml"
    path.write_text(yaml.safe_dump(recipe))
    store = tmp_path / "store"
    plan = run_builder("run", path, "--dry-run", "--store", store, check=True).stdout
    assert "train sft" not in plan and "mix-sft" not in plan and "eval follow" in plan

    result = run_builder("run", path, "--store", store, check=True)
    assert "instructions followed" in result.stdout
    record = json.loads(next((store / "runs").glob("verified-*.json")).read_text())
    assert [row["step"] for row in record["steps"]] == ["M1 make-pairs", "M1 train dpo", "eval follow"]
    manifest = json.loads((store / record["steps"][-1]["output"] / "manifest.json").read_text())
    assert [p["policy"] for p in manifest["stats"]["policies"]] == [str(tiny_model), "M1"]
    lineage = json.loads((store / "models" / "M1" / "lineage.json").read_text())
    assert str(tiny_model) in json.dumps(lineage)  # trained from the base itself

    recipe["eval_follow"] = {"n_samples": 2}
    del recipe["iterations"][0]["prompts"]  # nor a make_verifiable step: nothing says which instructions to measure
    recipe["iterations"][0]["prompts"] = str(prompts)
    path.write_text(yaml.safe_dump(recipe))
    bad = run_builder("run", path, "--store", store)
    assert bad.returncode == 2 and "eval_follow: no make_verifiable step gives it an eval split" in bad.stderr
