"""Thin TRL adapters and the model registry, on the tiny model: M0 → M1 (SFT) → M2 (DPO)."""

import json

from conftest import run_builder

ONE_STEP = ["--max-steps", "1", "--batch-size", "2", "--micro-batch-size", "2", "--max-length", "512"]


def test_sft_then_dpo_registers_a_lineage(tiny_model, tmp_path):
    store = tmp_path / "store"
    sft = run_builder("mix-sft", "--store", store, check=True).stdout.strip().splitlines()[-1]
    trained = run_builder("train", "sft", "--base", tiny_model, "--data", sft, "--name", "M1", *ONE_STEP, "--store", store, check=True)
    assert trained.stdout.strip().splitlines()[-1] == "M1"
    lineage = json.loads((store / "models" / "M1" / "lineage.json").read_text())
    assert lineage["data"]["version"] == sft and lineage["base"]["fingerprint"].startswith("sha256:") and lineage["steps"] == 1
    assert lineage["trainer"]["trl_args"]["lr_scheduler_kwargs"] == {"lr_end": 1.1e-6, "power": 1.0}
    assert (store / "models" / "M1" / "README.md").read_text().count("M1") >= 1

    again = run_builder("train", "sft", "--base", tiny_model, "--data", sft, "--name", "M1", *ONE_STEP, "--store", store, check=True)
    assert "already trained" in again.stderr
    clash = run_builder("train", "sft", "--base", tiny_model, "--data", sft, "--name", "M1", *ONE_STEP, "--seed", "5", "--store", store)
    assert clash.returncode == 2 and "already exists" in clash.stderr

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(4)))
    pairs = run_builder("make-pairs", "--model", "M1", "--prompts", prompts, "--max-new-tokens", "12", "--judge-max-new-tokens", "24",
                        "--store", store, check=True).stdout.strip().splitlines()[-1]
    manifest = json.loads((store / pairs / "manifest.json").read_text())
    assert manifest["models"]["policy"]["model"]["spec"] == "M1"
    if manifest["counts"]["pairs"]:
        run_builder("train", "dpo", "--base", "M1", "--data", pairs, "--name", "M2", *ONE_STEP, "--store", store, check=True)
        dpo = json.loads((store / "models" / "M2" / "lineage.json").read_text())
        assert "rewards/accuracies" in dpo["metrics"] and dpo["config"]["beta"] == 0.1
        listing = run_builder("models", "--store", store, check=True).stdout
        assert "M1 → M2" in " ".join(listing.split()) or "M1 →" in listing


def test_train_rejects_the_wrong_kind_of_data(tiny_model, tmp_path):
    store = tmp_path / "store"
    sft = run_builder("mix-sft", "--store", store, check=True).stdout.strip().splitlines()[-1]
    wrong = run_builder("train", "dpo", "--base", tiny_model, "--data", sft, "--name", "M2", "--store", store)
    assert wrong.returncode == 2 and "has no pairs table" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    odd = run_builder("train", "sft", "--base", tiny_model, "--data", sft, "--name", "M1", "--batch-size", "3", "--micro-batch-size", "2", "--store", store)
    assert odd.returncode == 2 and "multiple of --micro-batch-size" in odd.stderr
