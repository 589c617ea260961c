"""Serious training on the tiny model: DPO+NLL, LoRA, checkpoint selection, a default chat template, the
paper's EFT details and length-controlled pairs. Every run is two optimizer steps of a small batch."""

import json
import shutil

import pytest
from conftest import run_builder

TWO_STEPS = ["--max-steps", "2", "--batch-size", "2", "--micro-batch-size", "2", "--max-length", "256"]


def pairs_arguments(model, store) -> list:
    return ["--model", model, "--prompts", store.parent / "features-prompts.jsonl", "--store", store, "--max-new-tokens", "12",
            "--judge-max-new-tokens", "24", "--batch-size", "16"]


@pytest.fixture(scope="module")
def pairs_store(tiny_model, tmp_path_factory):
    """A store with one pairs version of 16 prompts answered and judged by the tiny model."""
    store = tmp_path_factory.mktemp("features-store")
    prompts = store.parent / "features-prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(12))
                       + "".join(json.dumps({"prompt": p}) + "\n" for p in ["Say hello.", "Name a fruit.", "Name a colour.", "Name a river."]))
    made = run_builder("make-pairs", *pairs_arguments(tiny_model, store), check=True)
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


def test_lora_dpo_and_sft_register_merged_models_with_their_adapter(tiny_model, pairs_store):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from builder.engines.models import folder_fingerprint, resolve_model

    store, pairs = pairs_store
    lora = ["--lora", "--lora-r", "4", "--lora-alpha", "8", "--lora-target-modules", "q_proj,v_proj", "--lr", "1e-3"]
    run_builder("train", "dpo", "--base", tiny_model, "--data", pairs, "--name", "L2", *lora, *TWO_STEPS, "--store", store, check=True)
    folder = store / "models" / "L2"
    recorded = lineage(store, "L2")
    assert recorded["adapter"]["kind"] == "lora" and recorded["adapter"]["r"] == 4 and recorded["config"]["lora"] is True
    assert 0 < recorded["adapter"]["parameters"]["trainable"] < recorded["adapter"]["parameters"]["total"]
    assert (folder / "adapter" / "adapter_config.json").exists() and (folder / "model.safetensors").exists()

    # the merged copy is the base with the adapter applied
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)(ids).logits
        adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), folder / "adapter")(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)(ids).logits
    assert torch.allclose(merged, adapted, atol=1e-4) and not torch.allclose(merged, base, atol=1e-4)

    # the fingerprint covers the adapter as well as the merged weights
    before = resolve_model("L2", store).fingerprint
    config = folder / "adapter" / "adapter_config.json"
    config.write_text(config.read_text() + "\n")
    assert folder_fingerprint(folder) != before

    # a LoRA model generates like any registered model; SFT takes --lora too
    prompts = store.parent / "two-prompts.jsonl"
    prompts.write_text('{"prompt": "Say hello."}\n{"prompt": "Name a fruit."}\n')
    run_builder("make-pairs", "--model", "L2", "--prompts", prompts, "--max-new-tokens", "8", "--judge-max-new-tokens", "16",
                "--store", store, check=True)
    sft = run_builder("mix-sft", "--store", store, check=True).stdout.strip().splitlines()[-1]
    run_builder("train", "sft", "--base", tiny_model, "--data", sft, "--name", "L1", "--lora", *TWO_STEPS, "--store", store, check=True)
    assert lineage(store, "L1")["adapter"]["target_modules"] == "all-linear"
    assert "L1" in run_builder("models", "--store", store, check=True).stdout


def test_four_bit_is_refused_without_cuda(tiny_model, pairs_store):
    store, pairs = pairs_store
    refused = run_builder("train", "dpo", "--base", tiny_model, "--data", pairs, "--name", "Q", "--lora", "--load-in-4bit", "--store", store)
    assert refused.returncode == 2 and "CUDA" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    alone = run_builder("train", "dpo", "--base", tiny_model, "--data", pairs, "--name", "Q", "--load-in-4bit", "--store", store)
    assert alone.returncode == 2 and "goes with --lora" in alone.stderr


def best_step(picked: dict) -> int:
    """transformers' rule: a later checkpoint wins only when strictly better."""
    sign = 1 if picked["greater_is_better"] else -1
    best = picked["evaluated"][0]
    for entry in picked["evaluated"][1:]:
        if sign * entry[picked["metric"]] > sign * best[picked["metric"]]:
            best = entry
    return best["step"]


def weights(folder):
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_checkpoint_selection_evaluates_every_checkpoint_and_keeps_the_best(tiny_model, pairs_store, monkeypatch):
    import torch

    monkeypatch.setenv("COLUMNS", "250")  # `builder models` on one line per model
    store, pairs = pairs_store
    several = ["--max-steps", "3", "--save-steps", "1", "--batch-size", "2", "--micro-batch-size", "2", "--max-length", "256"]
    run_builder("train", "dpo", "--base", tiny_model, "--data", pairs, "--name", "B", "--eval-share", "0.3", "--lr", "5e-3",
                *several, "--store", store, check=True)
    picked = lineage(store, "B")["checkpoints"]
    assert picked["rule"] == "best" and picked["metric"] == "eval_rewards/accuracies" and picked["eval_rows"] >= 1
    assert [e["step"] for e in picked["evaluated"]] == [1, 2, 3]
    assert picked["chosen_step"] == best_step(picked)
    assert not list((store / "models" / "B" / "trainer").glob("checkpoint-*"))
    listing = " ".join(run_builder("models", "--store", store, check=True).stdout.split())
    assert f"step {picked['chosen_step']} of 1, 2, 3" in listing
    # In this seeded run the held-out accuracy never improves after step 1, so the first checkpoint is the model:
    # the same weights as one step of the same training.
    assert picked["chosen_step"] == 1
    run_builder("train", "dpo", "--base", tiny_model, "--data", pairs, "--name", "B1", "--eval-share", "0.3", "--lr", "5e-3",
                *several[2:], "--max-steps", "1", "--store", store, check=True)
    chosen, one_step = weights(store / "models" / "B"), weights(store / "models" / "B1")
    assert all(torch.equal(chosen[k], one_step[k]) for k in chosen)

    sft = run_builder("mix-sft", "--store", store, check=True).stdout.strip().splitlines()[-1]
    run_builder("train", "sft", "--base", tiny_model, "--data", sft, "--name", "S", "--eval-share", "0.2", "--select-checkpoint", "last",
                *several, "--store", store, check=True)
    picked = lineage(store, "S")["checkpoints"]
    assert picked["metric"] == "eval_loss" and picked["chosen_step"] == 3 and len(picked["evaluated"]) == 3

    refused = run_builder("train", "sft", "--base", tiny_model, "--data", sft, "--name", "S2", "--select-checkpoint", "best", "--store", store)
    assert refused.returncode == 2 and "--eval-share" in refused.stderr


@pytest.fixture(scope="module")
def base_model(tiny_model, tmp_path_factory):
    """The tiny model as a true base model: its tokenizer has no chat template."""
    folder = tmp_path_factory.mktemp("base-model") / "M0"
    shutil.copytree(tiny_model, folder, ignore=shutil.ignore_patterns("trainer", "chat_template.jinja"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


def test_a_base_model_without_chat_template_gets_the_recorded_default(base_model, tmp_path):
    from transformers import AutoTokenizer

    store = tmp_path / "store"
    assert not AutoTokenizer.from_pretrained(base_model).chat_template
    eft = run_builder("make-eft", "--model", base_model, "--limit", "2", "--n-judgments", "1", "--judge-max-new-tokens", "16",
                      "--store", store, check=True).stdout.strip().splitlines()[-1]
    assert json.loads((store / eft / "manifest.json").read_text())["models"]["judge"]["engine"]["chat_template"] == "builder default"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hello."}\n{"prompt": "Name a fruit."}\n')
    pairs = run_builder("make-pairs", "--model", base_model, "--prompts", prompts, "--max-new-tokens", "8", "--judge-max-new-tokens", "16",
                        "--store", store, check=True).stdout.strip().splitlines()[-1]
    engine = json.loads((store / pairs / "manifest.json").read_text())["models"]["policy"]["engine"]
    assert engine["chat_template"] == "builder default" and len(engine["chat_template_sha256"]) == 64

    sft = run_builder("mix-sft", "--store", store, check=True).stdout.strip().splitlines()[-1]
    run_builder("train", "sft", "--base", base_model, "--data", sft, "--name", "M1", *TWO_STEPS, "--store", store, check=True)
    assert lineage(store, "M1")["chat_template"] == "builder default"
    assert AutoTokenizer.from_pretrained(store / "models" / "M1").chat_template  # M1 carries it as its own


def test_rebalance_cuts_the_most_common_score_to_the_next():
    import polars as pl

    from builder.stages.eft import rebalance, score_counts

    examples = pl.DataFrame({"candidate_id": [f"c{i}" for i in range(10)], "prompt_id": ["p"] * 10,
                             "judgment_id": [f"j{i}" for i in range(10)], "score": [4.0] * 6 + [3.0, 3.0, 5.0, 2.0]})
    kept, down = rebalance(examples, seed=0)
    assert score_counts(kept) == {"2": 1, "3": 2, "4": 2, "5": 1} and down.height == 4 and set(down["score"]) == {4.0}
    assert rebalance(examples, seed=0)[1].equals(down) and not rebalance(examples, seed=1)[1].equals(down)  # seeded
    even = examples.head(8).with_columns(pl.Series("score", [4.0] * 4 + [3.0] * 4))
    assert rebalance(even, seed=0)[1].height == 0  # two scores tied for most common: nothing to flatten


def test_make_eft_rebalance_is_recorded_and_part_of_the_identity(tiny_model, tmp_path):
    store = tmp_path / "store"
    fast = ["--model", tiny_model, "--n-judgments", "1", "--judge-max-new-tokens", "24", "--held-out", "0", "--store", store]
    plain = run_builder("make-eft", *fast, check=True).stdout.strip().splitlines()[-1]
    flat = run_builder("make-eft", *fast, "--rebalance", check=True).stdout.strip().splitlines()[-1]
    assert plain != flat
    manifest = json.loads((store / flat / "manifest.json").read_text())
    assert "rebalance" not in json.loads((store / plain / "manifest.json").read_text())["identity"]
    assert manifest["identity"]["rebalance"] and manifest["extra"]["rebalance"]["rule"].startswith("the most common score")
    before, after = manifest["extra"]["rebalance"]["scores_before"], manifest["extra"]["rebalance"]["scores_after"]
    assert sum(before.values()) - sum(after.values()) == manifest["extra"]["rebalance"]["down_sampled"] == manifest["stats"]["rebalanced_away"]
    assert sum(after.values()) == manifest["stats"]["eft_examples"]
    query = f"SELECT count(*) FROM dropped WHERE version = '{flat}' AND reason = 'rebalanced'"
    assert run_builder("query", "--store", store, "--format", "csv", query, check=True).stdout.split()[-1] == str(manifest["extra"]["rebalance"]["down_sampled"])

    ift = run_builder("mix-sft", "--ift-only", "--store", store, check=True).stdout.strip().splitlines()[-1]
    assert json.loads((store / ift / "manifest.json").read_text())["stats"]["eft_examples"] == 0


def test_the_paper_recipe_labels_eft_with_the_ift_only_model(tmp_path):
    from pathlib import Path

    recipe = Path(__file__).parent.parent / "recipes" / "paper.yaml"
    plan = " ".join(run_builder("run", recipe, "--dry-run", "--store", tmp_path / "store", check=True).stdout.split())
    assert plan.index("ift mix-sft") < plan.index("SFT-IFT train sft") < plan.index("SFT-IFT make-eft") < plan.index("M1 train sft")
    assert "rebalance=True" in plan and "model=SFT-IFT" in plan


def scored_frame(rows: list[tuple[str, int, float | None, int]]):
    """(prompt_id, sample_index, score_mean, n_tokens) → a scored candidates table."""
    import polars as pl

    return pl.DataFrame(
        [{"candidate_id": f"{p}-c{i}", "prompt_id": p, "sample_index": i, "response": "x" * n, "n_tokens": n,
          "score_mean": s, "n_scored": 0 if s is None else 3} for p, i, s, n in rows],
        schema_overrides={"score_mean": pl.Float64},
    )


def test_length_control_chooses_the_shortest_candidate_near_the_best():
    import polars as pl

    from builder.stages.aggregate import select_pairs

    prompts = pl.DataFrame({"prompt_id": ["p", "q", "r"], "messages": [[{"role": "user", "content": c}] for c in "pqr"]})
    scored = scored_frame([
        ("p", 0, 5.0, 90), ("p", 1, 4.67, 20), ("p", 2, 4.0, 10), ("p", 3, 1.0, 5),  # c1 within 0.5 of 5 and shorter
        ("q", 0, 3.0, 50), ("q", 1, 2.0, 10),  # within 1.5 of the best, but c1 is the rejected: never chosen
        ("r", 0, 2.0, 10), ("r", 1, 2.0, 5),  # a tie stays a tie
    ])
    plain, _ = select_pairs(prompts, scored)
    assert dict(plain.select("prompt_id", "chosen_id").iter_rows()) == {"p": "p-c0", "q": "q-c0"}
    controlled, dropped = select_pairs(prompts, scored, length_control=0.5)
    assert dict(controlled.select("prompt_id", "chosen_id").iter_rows()) == {"p": "p-c1", "q": "q-c0"}
    assert controlled.filter(pl.col("prompt_id") == "p")["score_chosen"].item() == 4.67
    assert controlled["rejected_id"].to_list() == plain["rejected_id"].to_list() == ["p-c3", "q-c1"]
    assert dropped["reason"].to_list() == ["tie"]
    wide, _ = select_pairs(prompts, scored, length_control=1.5)
    assert dict(wide.select("prompt_id", "chosen_id").iter_rows()) == {"p": "p-c2", "q": "q-c0"}
    zero, _ = select_pairs(prompts, scored, length_control=0.0)
    assert zero["chosen_id"].to_list() == plain["chosen_id"].to_list()


def test_make_pairs_length_control_is_recorded_only_when_on(tiny_model, pairs_store):
    store, pairs = pairs_store
    again = run_builder("make-pairs", *pairs_arguments(tiny_model, store), check=True)
    assert again.stdout.strip().splitlines()[-1] == pairs and "already built" in again.stderr  # ids without it unchanged
    controlled = run_builder("make-pairs", *pairs_arguments(tiny_model, store), "--length-control", "1.0", check=True)
    version = controlled.stdout.strip().splitlines()[-1]
    assert version != pairs
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert manifest["identity"]["length_control"] == 1.0 and "length_control" not in json.loads((store / pairs / "manifest.json").read_text())["extra"]
    record = manifest["extra"]["length_control"]
    assert record["rho"] == 1.0 and record["rule"].startswith("chosen = the shortest")
    plain_gap = json.loads((store / pairs / "manifest.json").read_text())["health"]["chosen_minus_rejected_tokens"]
    assert record["chosen_minus_rejected_tokens_without"] == plain_gap
    assert record["chosen_minus_rejected_tokens"] == manifest["health"]["chosen_minus_rejected_tokens"]
    assert "Length control (ρ = 1.0" in (store / version / "README.md").read_text()
    refused = run_builder("make-pairs", *pairs_arguments(tiny_model, store), "--length-control", "-1")
    assert refused.returncode == 2 and "--length-control" in refused.stderr
