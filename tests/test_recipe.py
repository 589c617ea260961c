"""`builder run <recipe>`: bad recipes fail before any work, the shipped recipes validate, and the loop
M0 → M1 → M2 → M3 runs on the tiny model and continues after a SIGKILL without redoing finished steps."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_builder

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
ONE_STEP = {"max_steps": 1, "batch_size": 2, "micro_batch_size": 2, "max_length": 512, "save_steps": 1}


def tiny_recipe(model: Path, prompts: Path) -> dict:
    return {
        "name": "tiny",
        "base": str(model),
        "seed": 3,
        "generation": {"batch_size": 8, "dtype": "float32"},
        "sft": {"name": "M1", **ONE_STEP},
        "iteration": {
            "make_pairs": {"n_samples": 4, "n_judgments": 2, "max_new_tokens": 12, "judge_max_new_tokens": 24},
            "dpo": ONE_STEP,
        },
        "iterations": [
            {"name": "M2", "prompts": str(prompts)},
            {"name": "M3", "make_prompts": {"n_prompts": 12, "min_words": 1, "similarity": 1.0, "max_new_tokens": 16}},
        ],
    }


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.mark.parametrize("name", ["cpu", "paper", "meta-rewarding"])
def test_the_shipped_recipes_validate(name, tmp_path):
    plan = run_builder("run", RECIPES / f"{name}.yaml", "--dry-run", "--store", tmp_path / "store", check=True).stdout
    for step in ("mix-sft", "M1 train sft", "M2 make-prompts", "M2 make-pairs", "M2 train dpo", "M3 train dpo"):
        assert step in plan
    assert not (tmp_path / "store").exists()  # a dry run writes nothing


@pytest.mark.parametrize("change, message", [
    (lambda r: r["iteration"]["make_pairs"].update(temprature=0.7), "iteration.make_pairs.temprature: unknown key"),
    (lambda r: r["iterations"][0]["dpo"].update(beta="high") if "dpo" in r["iterations"][0] else r["iterations"][0].update(dpo={"beta": "high"}),
     "iterations[0].dpo.beta: expected float, got str"),
    (lambda r: r["sft"].update(epochs=[1]), "sft.epochs: expected float, got list"),
    (lambda r: r.update(seed_data={"ift": "missing.jsonl"}), "seed_data.ift: 'missing.jsonl' is no file"),
    (lambda r: r["iterations"][0].update(prompts="prompts-000000000000"), "iterations[0].prompts: 'prompts-000000000000' is no file"),
    (lambda r: r["iteration"]["make_pairs"].update(judge="M9"), "iterations[0].make_pairs.judge: unknown model 'M9'"),
    (lambda r: r["iterations"][1].update(name="M1"), "iterations[1].name: 'M1' is already the name of an earlier model"),
    (lambda r: r["sft"].update(batch_size=3), "sft: --batch-size must be a positive multiple of --micro-batch-size"),
    (lambda r: r.update(generation={"backend": "transformers", "gpus": 8}), "generation.gpus: unknown key"),
    (lambda r: r.pop("sft"), "sft: expected a mapping, got nothing"),
])
def test_bad_recipes_fail_before_any_work_with_the_key_path(change, message, tmp_path):
    recipe = tiny_recipe(tmp_path / "model", tmp_path / "prompts.jsonl")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "Say hello."}\n')
    change(recipe)
    result = run_builder("run", write_recipe(tmp_path / "bad.yaml", recipe), "--store", tmp_path / "store")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "store").exists()


def test_a_recipe_that_is_not_yaml_or_not_there(tmp_path):
    (tmp_path / "broken.yaml").write_text("sft: [unclosed\n")
    for path, message in [(tmp_path / "broken.yaml", "not valid YAML (line 2)"), (tmp_path / "nope.yaml", "no such file")]:
        result = run_builder("run", path, "--store", tmp_path / "store")
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_loop_runs_m0_to_m3_and_resumes_after_a_kill(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(6)))
    recipe = write_recipe(tmp_path / "tiny.yaml", tiny_recipe(tiny_model, prompts))
    store = tmp_path / "store"
    command = [sys.executable, "-c", "from builder.app.cli import main; main()", "run", str(recipe), "--store", str(store)]

    # Kill the first run as soon as M1 is registered: the loop is between steps or inside M2's make-pairs.
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.monotonic() + 300
    while not (store / "models" / "M1" / "lineage.json").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (store / "models" / "M1" / "lineage.json").exists() and not (store / "models" / "M3").exists()
    m1_written = (store / "models" / "M1" / "lineage.json").stat().st_mtime_ns

    second = run_builder("run", recipe, "--store", store, check=True)
    table = " ".join(second.stdout.split())
    assert "mix-sft" in table and "M1 train sft M1 skipped" in table and "M3 train dpo M3 built" in table
    assert (store / "models" / "M1" / "lineage.json").stat().st_mtime_ns == m1_written

    lineages = {name: json.loads((store / "models" / name / "lineage.json").read_text()) for name in ("M1", "M2", "M3")}
    assert [lineages[n]["base"]["spec"] for n in ("M2", "M3")] == ["M1", "M2"]
    recipe_hash = lineages["M3"]["recipe"]["sha256"]
    assert all(lineage["recipe"]["sha256"] == recipe_hash for lineage in lineages.values())
    pairs = json.loads((store / lineages["M3"]["data"]["version"] / "manifest.json").read_text())
    assert pairs["recipe"]["sha256"] == recipe_hash and pairs["models"]["policy"]["model"]["spec"] == "M2"
    assert (store / "runs" / f"tiny-{recipe_hash[:12]}.yaml").read_text() == recipe.read_text()
    assert "rewards/accuracies" in lineages["M3"]["metrics"]

    models = " ".join(run_builder("models", "--store", store, check=True).stdout.split())
    assert f"{tiny_model.name} → M1 → M2 → M3" in models

    third = run_builder("run", recipe, "--store", store, check=True)
    assert " built " not in " ".join(third.stdout.split())  # everything is found, nothing is redone
