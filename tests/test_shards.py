"""make-pairs shard by shard: the same version whatever the shard size or the number of workers, a killed worker
that loses and doubles nothing, and tables in parts that every reader reads. The scripted generator
(tests/scripted.py) stands in for a model, except in the one tiny-model test."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl
import pytest
from conftest import run_builder
from scripted import ScriptedGenerator, plug_in

import builder.core.store as store_module
from builder.core.store import Store
from builder.stages.configs import MakePairsConfig
from builder.stages.make_pairs import make_pairs, merge_make_pairs, run_make_pairs_shard, shard_count

HERE = Path(__file__).parent
TABLES = ("prompts", "candidates", "judgments", "pairs", "dropped", "checks")


@pytest.fixture
def scripted(monkeypatch) -> ScriptedGenerator:
    generator = ScriptedGenerator()
    plug_in(generator, monkeypatch)
    return generator


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    """100 rows: prompts (some with constraints), an empty one and a repeated one."""
    rows = [{"prompt": f"Question {i}: tell me about rivers ({i})."} for i in range(98)] + [{"prompt": "  "}, {"prompt": "Question 3: tell me about rivers (3)."}]
    for i in range(0, 98, 7):
        rows[i]["constraints"] = json.dumps([{"kind": "max_words", "params": {"n": 5}}])
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(prompts: Path, **knobs) -> MakePairsConfig:
    return MakePairsConfig(**{"prompts": str(prompts), "dtype": "float32", "batch_size": 1, "verify": True, "length_control": 0.5} | knobs)


def comparable(folder: Path) -> dict:
    """A version's manifest less what says when and how long it was built (and the card, which says when)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("created_at", "timing_s", "code_version"):
        manifest.pop(key)
    manifest["files"].pop("README.md")
    return manifest


def test_every_shard_size_gives_the_same_version(scripted, prompts_file, tmp_path):
    built = {}
    for size in (16, 32, 48, 1000):  # batch size 1: blocks of 16 prompts; 98 usable prompts
        store = Store(tmp_path / f"store-{size}")
        assert shard_count(config(prompts_file, shard_size=size), store) == -(-98 // size)
        version, now = make_pairs(config(prompts_file, shard_size=size), store)
        assert now and not (store.root / ".staging" / version.id).exists(), "the staging is removed once published"
        built[size] = version
    first = built[16]
    assert {v.id for v in built.values()} == {first.id}
    for version in built.values():
        assert comparable(version.folder) == comparable(first.folder)  # table files byte-equal (their sha256)
        for name in TABLES:
            assert version.read(name).equals(first.read(name))
    assert first.manifest.counts["prompts"] == 98 and first.manifest.counts["checks"] > 0
    assert first.manifest.stats["drops"]["prompt:empty_prompt"] == 1 and first.manifest.stats["drops"]["prompt:duplicate_prompt"] == 1
    assert first.read("prompts")["source_row"].is_sorted(), "tables are in the input's order"


def test_a_shard_rounds_up_to_whole_planning_blocks(scripted, prompts_file, tmp_path):
    assert shard_count(config(prompts_file, shard_size=5, batch_size=2), Store(tmp_path)) == 4  # blocks of 32 prompts


def test_workers_then_the_last_one_merges(scripted, prompts_file, tmp_path):
    reference, _ = make_pairs(config(prompts_file, shard_size=16), Store(tmp_path / "one-run"))
    store = tmp_path / "store"
    args = ["make-pairs", "--prompts", prompts_file, "--store", store, "--batch-size", "1", "--verify", "--length-control", "0.5",
            "--dtype", "float32", "--shard-size", "16"]
    first = run_builder(*args, "--shard", "0/2", check=True)
    assert first.stdout == "" and "this worker's shards are finished" in first.stderr
    assert sorted(p.name for p in (store / ".staging" / reference.id).glob("shard-*")) == [f"shard-0000{k}" for k in (0, 2, 4, 6)]
    second = run_builder(*args, "--shard", "1/2", check=True)
    assert second.stdout.strip() == reference.id and "built " + reference.id in second.stderr
    assert comparable(store / reference.id) == comparable(reference.folder)
    assert "already built" in run_builder(*args, check=True).stderr


def test_the_executor_interface(scripted, prompts_file, tmp_path):
    store, settings = Store(tmp_path / "store"), config(prompts_file, shard_size=32)
    n = shard_count(settings, store)
    assert n == 4
    assert [run_make_pairs_shard(settings, store, k) for k in (3, 1, 0)] == [True, True, True]
    assert run_make_pairs_shard(settings, store, 1) is False, "a finished shard is not built again"
    with pytest.raises(Exception, match="1 of 4 shards are not finished \\(2\\)"):
        merge_make_pairs(settings, store)
    asked = scripted.answered
    run_make_pairs_shard(settings, store, 2)
    version, now = merge_make_pairs(settings, store)
    assert now and shard_count(settings, store) == 0 and merge_make_pairs(settings, store) == (version, False)
    reference, _ = make_pairs(settings, Store(tmp_path / "one-run"))
    assert version.id == reference.id and comparable(version.folder) == comparable(reference.folder)
    assert scripted.answered - asked > 0 and scripted.answered == 2 * (98 + 98 * 4), "nothing was asked twice"


def test_a_killed_worker_loses_nothing_and_doubles_nothing(prompts_file, tmp_path):
    reference_store, store, log = tmp_path / "reference", tmp_path / "store", tmp_path / "asked.log"
    args = ["make-pairs", "--prompts", prompts_file, "--batch-size", "1", "--verify", "--dtype", "float32", "--shard-size", "16"]
    command = [sys.executable, str(HERE / "scripted.py"), *map(str, args)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    reference = subprocess.run([*command, "--store", reference_store], env=env, capture_output=True, text=True, check=True).stdout.strip()

    process = subprocess.Popen([*command, "--store", store], env=env | {"SCRIPTED_LOG": str(log), "SCRIPTED_DELAY": "0.01"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = store / ".staging" / reference
    deadline = time.time() + 120
    while len(list(staging.glob("shard-*"))) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(staging.glob("shard-*")))
    assert 2 <= finished < 7 and not (store / reference).exists()

    rerun = subprocess.run([*command, "--store", store], env=env | {"SCRIPTED_LOG": str(log)}, capture_output=True, text=True, check=True)
    assert rerun.stdout.strip() == reference
    assert comparable(store / reference) == comparable(reference_store / reference)
    asked = log.read_text().split()
    assert len(asked) == len(set(asked)) == 98 + 98 * 4, "every request asked once over the killed run and its rerun"


def test_tables_in_parts_read_everywhere(scripted, prompts_file, tmp_path, monkeypatch):
    single, _ = make_pairs(config(prompts_file), Store(tmp_path / "single"))
    monkeypatch.setattr(store_module, "PART_ROWS", 100)
    monkeypatch.setattr(store_module, "ROW_GROUP_ROWS", 20)
    store = tmp_path / "parts"
    parted, _ = make_pairs(config(prompts_file), Store(store))
    assert parted.id == single.id
    assert sorted(p.name for p in (parted.folder / "judgments").iterdir())[:2] == ["00000.parquet", "00001.parquet"]
    assert "prompts.parquet" in parted.manifest.files and "judgments/00000.parquet" in parted.manifest.files  # 98 and 1,176 rows
    for name in TABLES:
        rows = single.read(name)
        assert parted.read(name).equals(rows)
        layout = f"{name}/*.parquet" if (parted.folder / name).is_dir() else f"{name}.parquet"
        assert pl.read_parquet(parted.folder / layout).equals(rows)
    assert duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{parted.folder}/judgments/*.parquet')").fetchone()[0] == 1176

    from datasets import load_dataset

    card = (parted.folder / "README.md").read_text()
    assert "data_files: judgments/*.parquet" in card and "data_files: pairs.parquet" in card
    loaded = load_dataset("parquet", data_files=str(parted.folder / "judgments/*.parquet"), split="train")
    assert loaded.num_rows == 1176 and loaded["judgment_id"] == single.read("judgments")["judgment_id"].to_list()

    assert run_builder("verify", parted.id, "--store", store, check=True).returncode == 0
    shown = run_builder("show", parted.id, "--store", store, check=True).stdout
    assert "unparsed_judgment" in shown
    query = run_builder("query", "--store", store, "--format", "csv", "SELECT count(*) AS n FROM judgments", check=True).stdout
    assert query.split() == ["n", "1176"]
    diff = run_builder("diff", single.id, parted.id, "--store", store, check=True)
    assert diff.returncode == 0
    reused, _ = make_pairs(config(parted.id), Store(store))  # a version's parted prompts as the next input
    assert reused.manifest.parent == parted.id and reused.manifest.counts["prompts"] == 98


def test_the_tiny_model_in_two_shards_equals_one_run(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Name thing number {i}."}) + "\n" for i in range(40)))
    args = ["make-pairs", "--model", tiny_model, "--prompts", prompts, "--n-samples", "2", "--n-judgments", "1",
            "--max-new-tokens", "8", "--judge-max-new-tokens", "24", "--batch-size", "2"]  # blocks of 32 prompts
    one = run_builder(*args, "--store", tmp_path / "one", check=True).stdout.strip()
    store = tmp_path / "two"
    run_builder(*args, "--store", store, "--shard-size", "32", "--shard", "1/2", check=True)
    assert len(list((store / ".staging" / one).glob("shard-*"))) == 1
    two = run_builder(*args, "--store", store, "--shard-size", "32", check=True).stdout.strip()
    assert two == one and comparable(store / two) == comparable(tmp_path / "one" / one)
