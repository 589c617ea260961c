"""A store with every kind of version and two registered models, made with the tiny model through the real
CLI, for the viewer's tests: the two pairs versions of `two_versions` (copied), a pairs version with drops,
then seed, eft, sft, prompts, rm and h2h versions, M1 (SFT) and M2 (DPO)."""

import json
import shutil
from pathlib import Path

from conftest import run_builder

FAST = ["--max-new-tokens", "16", "--judge-max-new-tokens", "24", "--batch-size", "8"]
ONE_STEP = ["--max-steps", "1", "--batch-size", "2", "--micro-batch-size", "2", "--max-length", "512"]


def oasst_rows() -> list[dict]:
    def message(mid, parent, role, text, rank=None):
        return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "lang": "en", "rank": rank,
                "message_tree_id": "t", "review_count": 3}

    return [
        message("p1", None, "prompter", "How do magnets work?"),
        message("a1", "p1", "assistant", "Aligned electron spins make a field.", rank=0),
        message("a2", "p1", "assistant", "They just do.", rank=1),
        message("p2", None, "prompter", "Name a prime number."),
        message("b1", "p2", "assistant", "Seven.", rank=0),
    ]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def last_line(result) -> str:
    return result.stdout.strip().splitlines()[-1]


def build_every_kind(tiny_model: Path, pairs_store: Path, child_pairs: str, folder: Path) -> dict[str, str]:
    """Returns {kind: version id} (pairs: `child_pairs`, the second of the two); the store is folder / 'store'."""
    store = folder / "store"
    shutil.copytree(pairs_store, store)
    inputs = folder / "inputs"
    inputs.mkdir()
    ids = {}
    common = ["--store", store]
    ids["seed"] = last_line(run_builder("import-oasst", write_jsonl(inputs / "oasst.jsonl", oasst_rows()), *common, check=True))
    ids["eft"] = last_line(run_builder("make-eft", "--model", tiny_model, "--limit", "4", "-k", "1", "--judge-max-new-tokens", "24", *common, check=True))
    ids["sft"] = last_line(run_builder("mix-sft", *common, check=True))  # the shipped seed set: the tiny EFT may keep no group
    ids["prompts"] = last_line(run_builder("make-prompts", "--model", tiny_model, "--n-prompts", "4", "--max-new-tokens", "16", *common, check=True))
    ranked = write_jsonl(inputs / "ranked.jsonl", [
        {"prompt": "Name a fruit.", "responses": ["It is an apple.", "A stone.", "Hello."], "ranks": [1, 2, 3]},
        {"prompt": "Say hello.", "responses": ["Hello.", "It is a lamp."], "ranks": [1, 2]},
    ])
    ids["rm"] = last_line(run_builder("eval", "reward-model", "--model", tiny_model, "--ranked", ranked, "-k", "2", "--judge-max-new-tokens", "24", *common, check=True))
    prompts = write_jsonl(inputs / "prompts.jsonl", [{"prompt": p} for p in ["Say hello.", "Name a fruit.", "Name thing number 1."]])
    ids["h2h"] = last_line(run_builder("eval", "head-to-head", "--a", tiny_model, "--b", tiny_model, "--a-temperature", "1.0",
                                       "--judge", tiny_model, "--prompts", prompts, *FAST, *common, check=True))
    run_builder("train", "sft", "--base", tiny_model, "--data", ids["sft"], "--name", "M1", *ONE_STEP, *common, check=True)
    # a pairs version with drops: a duplicate and an empty prompt, and judgments cut off by a tight token limit
    drops = write_jsonl(inputs / "drops.jsonl", [{"prompt": p} for p in ["Say hello.", "Say hello.", "", "Name a fruit.", "Name thing number 3."]])
    ids["pairs_drops"] = last_line(run_builder("make-pairs", "--model", tiny_model, "--prompts", drops, "-n", "3", "-k", "2", "--max-new-tokens", "12",
                                               "--judge-max-new-tokens", "9", "--judge-constraint", "off", *common, check=True))
    ids["pairs"] = child_pairs
    if json.loads((store / child_pairs / "manifest.json").read_text())["counts"]["pairs"]:
        run_builder("train", "dpo", "--base", "M1", "--data", child_pairs, "--name", "M2", *ONE_STEP, *common, check=True)
    return ids
