"""Seed data, EFT, self-instruct and SFT mixes, through the CLI on real files and the tiny model."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
from conftest import run_builder

from builder.core.records import Completion
from builder.stages.near_duplicates import near_duplicates_of_kept, normalise_text, normalised, signatures, similarity
from builder.stages.self_instruct import MakePromptsConfig, filter_generations, parse_new_prompt


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def message(mid, parent, role, text, rank=None, lang="en"):
    return {"message_id": mid, "parent_id": parent, "role": role, "text": text, "lang": lang, "rank": rank,
            "message_tree_id": "t", "review_count": 3}


# two English trees and one German one, in oasst1's flat schema
OASST = [
    message("p1", None, "prompter", "How do magnets work?"),
    message("a1", "p1", "assistant", "Magnets have aligned electron spins.", rank=1),
    message("a2", "p1", "assistant", "Moving charges and aligned spins create a magnetic field that attracts iron.", rank=0),
    message("a3", "p1", "assistant", "They just do.", rank=2),
    message("f1", "a2", "prompter", "Thanks! And electromagnets?"),  # a second turn: not used
    message("f2", "f1", "assistant", "A current through a coil makes the field.", rank=0),
    message("p2", None, "prompter", "Name a prime number."),
    message("b1", "p2", "assistant", "Seven.", rank=0),
    message("p3", None, "prompter", "Wie spät ist es?", lang="de"),
    message("c1", "p3", "assistant", "Ich weiß es nicht.", rank=0, lang="de"),
]


def test_import_oasst_turns_trees_into_prompts_ift_and_ranked_groups(tmp_path):
    path = write_jsonl(tmp_path / "oasst.jsonl", OASST)
    result = run_builder("import-oasst", path, "--store", tmp_path / "store", check=True)
    version = result.stdout.strip().splitlines()[-1]
    folder = tmp_path / "store" / version
    prompts = pl.read_parquet(folder / "prompts.parquet")
    assert sorted(prompts["prompt"]) == ["How do magnets work?", "Name a prime number."], "first turns, English only"
    ift = pl.read_parquet(folder / "ift.parquet").sort("id")
    assert ift.rows() == [("p1", "How do magnets work?", "Moving charges and aligned spins create a magnetic field that attracts iron."),
                          ("p2", "Name a prime number.", "Seven.")]
    ranked = pl.read_parquet(folder / "ranked.parquet")
    assert ranked.height == 1, "a single reply is not a group"
    group = ranked.row(0, named=True)
    assert group["responses"][0].startswith("Moving charges") and group["ranks"] == [1, 2, 3]
    every_language = run_builder("import-oasst", path, "--lang", "", "--store", tmp_path / "store", check=True)
    assert pl.read_parquet(tmp_path / "store" / every_language.stdout.strip().splitlines()[-1] / "prompts.parquet").height == 3


@pytest.mark.parametrize("rows, expected", [
    ([message("p1", None, "prompter", "Q"), message("a1", "gone", "assistant", "A", rank=0)], "broken tree"),
    ([message("p1", None, "prompter", "Q"), message("a1", "p1", "assistant", "A", rank=0), message("a2", "p1", "assistant", "B")], "partly ranked"),
    ([message("p1", None, "prompter", "Q"), message("a1", "p1", "assistant", "A", rank=0), message("a2", "p1", "assistant", "B", rank=2)], "gaps"),
    ([{"id": 1, "text": "no tree"}], "not in oasst1's message format"),
])
def test_import_oasst_rejects_bad_trees(tmp_path, rows, expected):
    result = run_builder("import-oasst", write_jsonl(tmp_path / "bad.jsonl", rows), "--store", tmp_path / "store")
    assert result.returncode == 2 and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_mix_sft_from_the_shipped_seed_set(tmp_path):
    version = run_builder("mix-sft", "--store", tmp_path, check=True).stdout.strip().splitlines()[-1]
    sft = pl.read_parquet(tmp_path / version / "sft.parquet")
    assert sft.height == 24 + 32 and sft["source"].value_counts().sort("source").rows() == [("eft", 32), ("ift", 24)]
    row = sft.filter(pl.col("source") == "eft").row(0, named=True)
    assert row["prompt"][0]["role"] == "user" and "<response>" in row["prompt"][0]["content"]
    assert row["completion"][0]["role"] == "assistant" and "Score: " in row["completion"][0]["content"].splitlines()[-1]


def test_mix_sft_rejects_judgments_without_a_score(tmp_path):
    bad = write_jsonl(tmp_path / "eft.jsonl", [{"prompt": "Q", "response": "A", "judgment": "Nice answer."}])
    result = run_builder("mix-sft", "--eft", bad, "--store", tmp_path / "store")
    assert result.returncode == 2 and "do not end with a 'Score: N' line" in result.stderr


def test_make_eft_keeps_agreeing_groups_and_holds_some_out(tiny_model, tmp_path):
    # The tiny model's scores are near random, so whether one group agrees with its humans is luck; with 24 groups of
    # two, some agree whatever the library versions (about 18 train groups, each agreeing about 4 times in 10).
    ranked = write_jsonl(tmp_path / "ranked.jsonl", [{"prompt": f"Name one use of item number {i}.",
                                                      "responses": [f"Item {i} can hold water.", "I do not know."],
                                                      "ranks": [1, 2]} for i in range(24)])
    store = tmp_path / "store"
    fast = ["--model", tiny_model, "-k", "2", "--judge-max-new-tokens", "32", "--batch-size", "8", "--store", store]
    version = run_builder("make-eft", "--ranked", ranked, *fast, check=True).stdout.strip().splitlines()[-1]
    folder = store / version
    manifest = json.loads((folder / "manifest.json").read_text())
    stats = manifest["stats"]
    assert stats["groups"] == 24 and stats["heldout_groups"] + stats["train_groups"] == 24 and stats["heldout_groups"] >= 1
    groups = pl.read_parquet(folder / "groups.parquet")
    eft = pl.read_parquet(folder / "eft.parquet")
    assert stats["agreeing_groups"] == groups["agrees"].sum() and set(eft["prompt_id"]) == set(groups.filter("agrees")["prompt_id"])
    assert eft["judgment"].str.contains("Score: ").all()
    first = eft.row(0, named=True)  # SFT-ready: the judge prompt the model saw, then the judgment it gave
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"] and first["messages"][1]["content"] == first["judgment"]
    assert first["response"] in first["messages"][0]["content"] and "Score:" in first["messages"][0]["content"]
    heldout = pl.read_parquet(folder / "heldout.parquet")
    assert not set(heldout["prompt_id"]) & set(groups["prompt_id"]), "held-out groups are never judged"
    dropped = pl.read_parquet(folder / "dropped.parquet")
    rejected = dropped.filter(pl.col("reason").is_in(["disagrees_with_human_ranking", "unscored_response"]))
    assert rejected.height == stats["train_groups"] - stats["agreeing_groups"]
    shown = run_builder("show", version, "--store", store, check=True)
    assert "agreement rate" in shown.stdout and "checksums ok" in shown.stdout
    # the EFT version feeds the SFT mix, which names it as a parent
    sft = run_builder("mix-sft", "--eft", version, "--store", store, check=True).stdout.strip().splitlines()[-1]
    assert json.loads((store / sft / "manifest.json").read_text())["parents"] == [version]
    judge_turns = pl.read_parquet(store / sft / "sft.parquet").filter(pl.col("source") == "eft")
    assert sorted(judge_turns["prompt"].list.first().struct.field("content")) == sorted(eft["messages"].list.first().struct.field("content"))
    # and its held-out groups are what reward-model evaluation reads
    rm = run_builder("eval", "reward-model", "--model", tiny_model, "--ranked", folder / "heldout.parquet", "-k", "1",
                     "--judge-max-new-tokens", "32", "--store", store, check=True)
    assert rm.stdout.strip().splitlines()[-1].startswith("rm-")
    for built in (version, sft, rm.stdout.strip().splitlines()[-1]):  # each kind's id comes back from its manifest
        assert run_builder("verify", built, "--store", store).returncode == 0


def test_make_eft_rejects_ranks_with_gaps(tmp_path):
    bad = write_jsonl(tmp_path / "ranked.jsonl", [{"prompt": "Q", "responses": ["A", "B"], "ranks": [1, 3]}])
    result = run_builder("make-eft", "--ranked", bad, "--store", tmp_path / "store")
    assert result.returncode == 2 and "gaps" in result.stderr


def test_make_prompts_then_make_pairs_on_the_new_prompts(tiny_model, tmp_path):
    store = tmp_path / "store"
    made = run_builder("make-prompts", "--model", tiny_model, "--n-prompts", "24", "--max-new-tokens", "24", "--store", store, check=True)
    version = made.stdout.strip().splitlines()[-1]
    folder = store / version
    generations = pl.read_parquet(folder / "generations.parquet")
    assert generations.height == 24 and (generations["shown_seed_ids"].list.len() == 8).all()
    assert generations["raw"].is_not_null().all()
    kept = pl.read_parquet(folder / "prompts.parquet")
    stats = json.loads((folder / "manifest.json").read_text())["stats"]
    assert stats["kept"] == kept.height == generations["reason"].null_count()
    assert stats["kept"] + sum(v for k, v in stats.items() if k.startswith("dropped_")) == 24
    assert kept.height >= 1 and kept["prompt"].is_unique().all()
    shown = run_builder("show", version, "--store", store, check=True).stdout
    assert "keep rate" in shown and "dropped near duplicate" in shown, "every filter's count, zeros included"
    assert version in run_builder("ls", "--store", store, check=True).stdout
    pairs = run_builder("make-pairs", "--model", tiny_model, "--prompts", version, "-n", "2", "-k", "1",
                        "--max-new-tokens", "16", "--judge-max-new-tokens", "32", "--store", store, check=True)
    built = pairs.stdout.strip().splitlines()[-1]
    manifest = json.loads((store / built / "manifest.json").read_text())
    assert manifest["parent"] == version and manifest["counts"]["prompts"] == kept.height
    assert run_builder("verify", version, "--store", store).returncode == 0


def test_parse_new_prompt():
    assert parse_new_prompt(Completion("Task 9: Write a limerick about cats.\nMore text", "stop", 9)) == ("Write a limerick about cats.", None)
    assert parse_new_prompt(Completion('**New task:** "Plan a picnic."', "stop", 5)) == ("Plan a picnic.", None)
    assert parse_new_prompt(Completion("  \n ", "stop", 1)) == (None, "empty")
    assert parse_new_prompt(Completion("Task 9: Write a very long", "length", 6)) == (None, "truncated")
    assert parse_new_prompt(Completion("Task 9: Name a bird.\nTask 10: Name a", "length", 9)) == ("Name a bird.", None)


def test_near_duplicates():
    texts = ["Give me three tips for keeping basil alive indoors.", "Give me three tips for keeping basil alive indoors!",
             "Explain how a vaccine trains the immune system.", "give me 3 tips for keeping basil alive indoors"]
    sig = signatures(texts, num_perm=128)
    sims = similarity(sig, sig)
    assert np.allclose(np.diag(sims), 1) and sims[0, 1] == 1 and sims[0, 2] < 0.2
    assert near_duplicates_of_kept(sig, 0.7) == [None, 0, None, 0]
    # a chain: B is near A, C is near B but not near A; B is dropped, so C is compared with A only and kept
    chain = np.array([[1, 1, 1, 1], [1, 1, 1, 2], [1, 1, 2, 2]], dtype=np.uint64)
    assert near_duplicates_of_kept(chain, 0.7) == [None, 0, None]
    for text in ["A\u00a0 b\tC. ", "Ünïcode  ÄB!?", " x "]:
        assert pl.select(normalised(pl.lit(text))).item() == normalise_text(text)


def test_filters_apply_in_order_and_say_why():
    seeds = ["Name three primary colours.", "What is the capital of Japan?", "Give me a synonym for 'happy'."]
    raw = ["Task 9: Name three primary colours!", "Task 9: name  three primary colours please.",
           "Task 9: Write a poem about the sea and the sky.", "Task 9: write a poem about the sea and the sky",
           "Task 9: Write a poem about the sea and the skies.", "", "Task 9: Hi there", "Task 9: " + "word " * 200,
           "Task 9: Describe how bees make honey in a hive."]
    generations = filter_generations([Completion(t, "stop", 5) for t in raw], [["s1", "s2"]] * len(raw), seeds, ["s1", "s2", "s3"],
                                     MakePromptsConfig())
    assert generations.select("reason", "detail").rows() == [
        ("copy_of_seed", "s1"), ("near_copy_of_seed", "s1 (0.73)"), (None, None), ("duplicate", "g000002"),
        ("near_duplicate", "g000002"), ("empty", "empty"), ("too_short", "2 words"), ("too_long", "999 characters"), (None, None),
    ]
    assert generations["shown_seed_ids"].to_list()[0] == ["s1", "s2"] and generations["raw"].to_list() == raw


def test_seed_tables_from_a_saved_datasets_folder(tmp_path):
    from datasets import Dataset

    Dataset.from_list(OASST).save_to_disk(str(tmp_path / "oasst"))
    version = run_builder("import-oasst", tmp_path / "oasst", "--store", tmp_path / "store", check=True).stdout.strip().splitlines()[-1]
    assert pl.read_parquet(tmp_path / "store" / version / "ranked.parquet")["ranks"].to_list() == [[1, 2, 3]]
    ift = [{"prompt": "Say hi.", "response": "Hi!"}, {"prompt": "Name a colour.", "response": "Blue."}]
    Dataset.from_list(ift).save_to_disk(str(tmp_path / "ift"))
    sft = run_builder("mix-sft", "--ift", tmp_path / "ift", "--store", tmp_path / "store", check=True).stdout.strip().splitlines()[-1]
    assert json.loads((tmp_path / "store" / sft / "manifest.json").read_text())["stats"]["ift_examples"] == 2


def test_empty_and_wrong_seed_inputs_fail_in_one_line(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"question": "Q", "answer": "A"}])
    for args, expected in [(["make-eft", "--ranked", tmp_path / "empty.jsonl"], "is empty"),
                           (["mix-sft", "--ift", wrong], "is not ift data"),
                           (["import-oasst", tmp_path / "empty.jsonl"], "is empty"),
                           (["make-eft", "--ranked", "no-such-thing"], "no such file")]:
        result = run_builder(*args, "--store", tmp_path / "store")
        assert result.returncode == 2 and expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def cached_rows(store) -> pl.DataFrame:
    """Every cached answer of the store (a compaction may remove a shard while it is read: read again)."""
    for _ in range(20):
        shards = list((store / ".cache" / "generations").glob("*/*.parquet"))
        try:
            return pl.read_parquet(shards).select("key", "text") if shards else pl.DataFrame(schema={"key": pl.String, "text": pl.String})
        except (FileNotFoundError, pl.exceptions.ComputeError):
            time.sleep(0.05)
    raise AssertionError("the cache kept changing under the reader")


def test_make_prompts_sigkill_then_rerun_recomputes_nothing(tiny_model, tmp_path):
    args = ["make-prompts", "--model", tiny_model, "--n-prompts", "80", "--max-new-tokens", "16", "--batch-size", "1"]
    reference = run_builder(*args, "--store", tmp_path / "reference", check=True).stdout.strip().splitlines()[-1]
    store = tmp_path / "store"
    process = subprocess.Popen([sys.executable, "-c", "from builder.app.cli import main; main()", *map(str, args), "--store", str(store)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    while cached_rows(store).height < 4 and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(store.glob("prompts-*"))
    before = cached_rows(store)
    version = run_builder(*args, "--store", store, check=True).stdout.strip().splitlines()[-1]
    assert version == reference
    for table in ("generations", "prompts", "dropped"):
        assert pl.read_parquet(store / version / f"{table}.parquet").equals(pl.read_parquet(tmp_path / "reference" / reference / f"{table}.parquet"))
    rows = cached_rows(store)
    assert rows.height == 80 and rows["key"].is_unique().all()
    assert before.height and before.join(rows, on=["key", "text"], how="anti").height == 0, "an answer saved before the kill was asked again"
