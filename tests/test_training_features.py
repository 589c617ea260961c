"""Serious training on the tiny model: DPO+NLL, LoRA, checkpoint selection, a default chat template, the
paper's EFT details and length-controlled pairs. Every run is two optimizer steps of a small batch."""

import json
import shutil

import pytest
from conftest import run_builder

TWO_STEPS = ["--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2", "--max-length", "256"]


@pytest.fixture(scope="module")
def pairs_store(tiny_model, tmp_path_factory):
    """A store with one pairs version of 16 prompts answered and judged by the tiny model."""
    store = tmp_path_factory.mktemp("features-store")
    prompts = store.parent / "features-prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(12))
                       + "".join(json.dumps({"prompt": p}) + "\n" for p in ["Say hello.", "Name a fruit.", "Name a colour.", "Name a river."]))
    made = run_builder("make-pairs", "--model", tiny_model, "--prompts", prompts, "--store", store, "--max-new-tokens", "12",
                       "--judge-max-new-tokens", "24", "--batch-size", "16", check=True)
    pairs = made.stdout.strip().splitlines()[-1]
    assert json.loads((store / pairs / "manifest.json").read_text())["counts"]["pairs"] >= 6
    return store, pairs


def lineage(store, name: str) -> dict:
    return json.loads((store / "models" / name / "lineage.json").read_text())


def test_dpo_plus_nll_uses_trls_losses_and_is_recorded(tiny_model, pairs_store):
    store, pairs = pairs_store
    run_builder("train", "dpo", "--base", tiny_model, "--data", pairs, "--name", "rpo", "--loss", "dpo+nll", "--nll-weight", "0.5",
                *TWO_STEPS, "--store", store, check=True)
    recorded = lineage(store, "rpo")
    assert recorded["config"]["loss"] == "dpo+nll" and recorded["config"]["nll_weight"] == 0.5
    assert recorded["trainer"]["trl_args"]["loss_type"] == ["sigmoid", "sft"]
    assert recorded["trainer"]["trl_args"]["loss_weights"] == [1.0, 0.5]
    assert recorded["steps"] == 2 and "rewards/accuracies" in recorded["metrics"]

    wrong = run_builder("train", "dpo", "--base", tiny_model, "--data", pairs, "--name", "x", "--nll-weight", "0.5", "--store", store)
    assert wrong.returncode == 2 and "--nll-weight" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
