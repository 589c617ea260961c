"""make-pairs end to end through the CLI, on a real tiny model, with real parquet files and DuckDB."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import polars as pl
import pytest
from conftest import run_builder

PROMPTS = [f"Name thing number {i}." for i in range(6)] + ["Say hello.", "Name a fruit."]
FAST = ["--n-samples", "4", "--n-judgments", "3", "--max-new-tokens", "16", "--judge-max-new-tokens", "32", "--seed", "7", "--batch-size", "4"]
TABLES = ("prompts", "candidates", "judgments", "pairs", "dropped")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


@pytest.fixture(scope="module")
def built(tiny_model, prompts_file, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    result = run_builder("make-pairs", "--model", tiny_model, "--prompts", prompts_file, "--store", store, *FAST, check=True)
    version = result.stdout.strip().splitlines()[-1]
    return store, version, result


def read(store, version, table):
    return pl.read_parquet(store / version / f"{table}.parquet")


def test_version_has_every_table_and_a_manifest(built):
    store, version, result = built
    folder = store / version
    assert version.startswith("pairs-")
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{t}.parquet" for t in TABLES] + ["README.md", "manifest.json"])
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["id"] == version and manifest["kind"] == "pairs"
    assert manifest["sampling"]["candidates"] == {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 16}
    assert manifest["sampling"]["judgments"]["n"] == 3 and manifest["seed"] == 7
    assert manifest["models"]["policy"]["model"]["fingerprint"].startswith("sha256:")
    assert manifest["models"]["judge"] == manifest["models"]["policy"]
    assert "Score: <total points>" in manifest["judge"]["text"] and len(manifest["judge"]["sha256"]) == 64
    assert manifest["inputs"]["prompts"]["fingerprint"].startswith("sha256:")
    assert manifest["code_version"]["package"] == "0.1.0"
    assert set(manifest["files"]) == {p.name for p in folder.iterdir()} - {"manifest.json"}
    assert all(not (p.stat().st_mode & stat.S_IWUSR) for p in folder.iterdir()), "a finished version is read-only"
    assert "built " + version in result.stderr


def test_counts_and_labels_are_consistent(built):
    store, version, _ = built
    prompts, candidates, judgments, pairs, dropped = (read(store, version, t) for t in TABLES)
    assert (prompts.height, candidates.height, judgments.height) == (8, 32, 96)
    prompt_drops = dropped.filter(pl.col("level") == "prompt")
    assert pairs.height + prompt_drops.height == prompts.height
    assert pairs.height >= 1, "the tiny judge gives varied scores, so some prompts must give pairs"
    assert (pairs["score_chosen"] > pairs["score_rejected"]).all()
    unparsed = judgments.filter(pl.col("score").is_null())
    assert dropped.filter(pl.col("reason") == "unparsed_judgment").height == unparsed.height
    assert (unparsed["parse_error"].is_not_null()).all()


def test_every_pair_traces_back_to_its_judgments_and_prompt(built):
    store, version, _ = built
    prompts, candidates, judgments, pairs, _ = (read(store, version, t) for t in TABLES)
    for pair in pairs.iter_rows(named=True):
        for side in ("chosen", "rejected"):
            candidate = candidates.filter(pl.col("candidate_id") == pair[f"{side}_id"]).row(0, named=True)
            assert candidate["prompt_id"] == pair["prompt_id"]
            assert pair[side] == [{"role": "assistant", "content": candidate["response"]}]
            own = judgments.filter(pl.col("candidate_id") == candidate["candidate_id"])
            assert own.height == 3 and own["score"].mean() == pytest.approx(pair[f"score_{side}"])
        prompt = prompts.filter(pl.col("prompt_id") == pair["prompt_id"]).row(0, named=True)
        assert pair["prompt"] == prompt["messages"] and prompt["source_row"] >= 0


def test_rerun_finds_the_finished_version(built, tiny_model, prompts_file):
    store, version, _ = built
    again = run_builder("make-pairs", "--model", tiny_model, "--prompts", prompts_file, "--store", store, *FAST, check=True)
    assert again.stdout.strip().splitlines()[-1] == version
    assert "already built" in again.stderr


def test_a_model_card_or_log_edit_keeps_the_model_and_its_versions(built, tiny_model, prompts_file, tmp_path):
    # A model's identity is the files that decide its answers; its card, lineage and trainer logs are not.
    store, version, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model, copy)
    (copy / "README.md").write_text("# edited card\n")
    (copy / "lineage.json").write_text("{}")
    (copy / "trainer").mkdir(exist_ok=True)
    (copy / "trainer" / "log_history.json").write_text("[]")
    again = run_builder("make-pairs", "--model", copy, "--prompts", prompts_file, "--store", store, *FAST, check=True)
    assert again.stdout.strip().splitlines()[-1] == version and "already built" in again.stderr


def test_pairs_load_with_datasets_and_the_card_validates(built):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    store, version, _ = built
    pairs = load_dataset("parquet", data_files=str(store / version / "pairs.parquet"), split="train")
    assert {"prompt", "chosen", "rejected"} <= set(pairs.column_names)
    assert pairs[0]["chosen"][0]["role"] == "assistant"
    card = DatasetCard.load(store / version / "README.md")
    assert [c["config_name"] for c in card.data.configs][0] == "pairs"
    assert version in card.text and "Dropped rows, by reason" in card.text


def test_ls_show_query_verify(built):
    store, version, _ = built
    listing = run_builder("ls", "--store", store, check=True)
    assert version in listing.stdout
    shown = run_builder("show", version[:10], "--store", store, check=True)
    assert "score histogram" in shown.stdout and "checksums ok" in shown.stdout
    query = run_builder("query", "--store", store, "--format", "json",
                        "SELECT version, count(*) AS n FROM judgments GROUP BY version", check=True)
    assert json.loads(query.stdout) == {"version": version, "n": 96}
    joined = run_builder("query", "--store", store, "--format", "csv",
                         "SELECT count(*) AS n FROM pairs p JOIN candidates c ON c.candidate_id = p.chosen_id AND c.version = p.version",
                         check=True)
    assert joined.stdout.splitlines()[1] == str(read(store, version, "pairs").height)
    assert run_builder("verify", version, "--store", store).returncode == 0
    bad_sql = run_builder("query", "--store", store, "SELEC count(*) FROM pairs")
    assert bad_sql.returncode == 2 and len(bad_sql.stderr.strip().splitlines()) == 1
    unknown = run_builder("show", "pairs-ffffffffffff", "--store", store)
    assert unknown.returncode == 2 and "no version 'pairs-ffffffffffff'" in unknown.stderr


def test_one_dpo_step_on_the_pairs(built, tiny_model, tmp_path):
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from trainers.train import checkpointing_argument

    store, version, _ = built
    pairs = load_dataset("parquet", data_files=str(store / version / "pairs.parquet"), split="train")
    args = DPOConfig(
        output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, learning_rate=1e-6, beta=0.1,
        bf16=False, use_cpu=True, report_to="none", save_strategy="no", logging_steps=1, **{checkpointing_argument(): False},
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args, train_dataset=pairs,
        processing_class=AutoTokenizer.from_pretrained(tiny_model),
    )
    result = trainer.train()
    assert result.global_step == 1


def cached_rows(store) -> int:
    """Rows in the cache's shards so far (a shard merged away while counting is skipped)."""
    total = 0
    for shard in (store / ".cache" / "generations").glob("*/*.parquet"):
        try:
            total += pl.scan_parquet(shard).select(pl.len()).collect().item()
        except (FileNotFoundError, pl.exceptions.ComputeError):
            pass
    return total


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tiny_model, tmp_path):
    # long enough (40 prompts in batches of 2) that the kill lands mid-run
    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(40)))
    args = ["make-pairs", "--model", tiny_model, "--prompts", prompts_file, *FAST, "--batch-size", "2"]
    reference_store, store = tmp_path / "reference", tmp_path / "store"
    reference = run_builder(*args, "--store", reference_store, check=True).stdout.strip().splitlines()[-1]
    args += ["--store", store]
    process = subprocess.Popen([sys.executable, "-c", "from builder.app.cli import main; main()", *map(str, args)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    deadline = time.time() + 300
    while cached_rows(store) < 240 and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not list(store.glob("pairs-*")), "no version may appear from a killed run"
    rows_before = cached_rows(store)

    resumed = run_builder(*args, check=True)
    version = resumed.stdout.strip().splitlines()[-1]
    assert version == reference
    for table in TABLES:
        assert read(store, version, table).equals(read(reference_store, reference, table)), table
    keep = lambda m: {k: v for k, v in m.items() if k not in ("created_at", "timing_s", "files")}  # noqa: E731
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert keep(manifest) == keep(json.loads((reference_store / reference / "manifest.json").read_text()))
    # nothing doubled: every distinct request answered exactly once in the cache (a candidate text that was
    # sampled twice for one prompt makes one judge request, answered once)
    rows = pl.read_parquet(list((store / ".cache" / "generations").glob("*/*.parquet")))
    distinct_judge_requests = read(store, version, "candidates").select("prompt_id", "response").unique().height
    assert rows.height == 40 * 4 + distinct_judge_requests * 3 and rows.select("key", "sample").is_unique().all()
    assert rows.height > rows_before
