"""push and pull without a Hub: the commit a push would send, that layout loaded back with `datasets` and its
card parsed with huggingface_hub, and pull's checks on real downloads, good and tampered. A real round trip
runs only with HF_TOKEN set."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import uuid

import polars as pl
import pytest
from conftest import run_builder, write_repo_folder
from huggingface_hub import CommitOperationAdd, CommitOperationDelete

from builder.app.hub import HubRef, install_version, parse_hub_ref, push_operations
from builder.core.cards import TABLES
from builder.core.errors import BuilderError
from builder.core.store import Store


def assert_one_line_error(result, expected: str):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr


@pytest.fixture(scope="module")
def pushed(two_versions, tmp_path_factory):
    """Each version as the repo holds it at its tag."""
    store, v1, v2 = two_versions
    root = tmp_path_factory.mktemp("pushed")
    return {v: write_repo_folder(push_operations(Store(store).load(v)), root / v) for v in (v1, v2)}


def test_the_commit_is_every_listed_file_and_the_manifest(two_versions):
    store, _, v2 = two_versions
    version = Store(store).load(v2)
    operations = push_operations(version, files_in_repo=[".gitattributes", "pairs.parquet", "verdicts.parquet", "plots/old.png"])
    adds = {op.path_in_repo: op for op in operations if isinstance(op, CommitOperationAdd)}
    deletes = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
    assert set(adds) == set(version.manifest.files) | {"manifest.json"}
    assert {f"{t}.parquet" for t in TABLES} | {"README.md"} <= set(adds)
    for name, meta in version.manifest.files.items():
        assert adds[name].upload_info.sha256.hex() == meta["sha256"], name  # the bytes sent are the bytes checksummed
    manifest_bytes = (version.folder / "manifest.json").read_bytes()
    assert adds["manifest.json"].upload_info.sha256.hex() == hashlib.sha256(manifest_bytes).hexdigest()
    assert deletes == ["plots/old.png", "verdicts.parquet"], "a previous version's leftovers go; .gitattributes stays"


def test_the_pushed_layout_loads_per_config_and_its_card_parses(two_versions, pushed):
    from datasets import get_dataset_config_names, load_dataset
    from huggingface_hub import DatasetCard

    _, v1, v2 = two_versions
    folder = pushed[v2]
    manifest = json.loads((folder / "manifest.json").read_text())
    card = DatasetCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["task_categories"] == ["text-generation"]
    assert "self-rewarding" in data["tags"] and data["size_categories"] == "n<1K"
    non_empty = [t for t in TABLES if manifest["counts"][t] > 0]
    assert [c["config_name"] for c in data["configs"]] == non_empty
    assert [c["config_name"] for c in data["configs"] if c.get("default")] == ["pairs"]
    assert all((folder / c["data_files"]).is_file() for c in data["configs"])
    assert f"(parent: `{v1}`)" in card.text, "the card names its parent, which is a tag of the same repo"

    assert get_dataset_config_names(str(folder)) == non_empty
    default = load_dataset(str(folder), split="train")
    assert default.num_rows == manifest["counts"]["pairs"] and {"prompt", "chosen", "rejected"} <= set(default.column_names)
    for table in non_empty:
        loaded = load_dataset(str(folder), table, split="train")
        assert loaded.num_rows == manifest["counts"][table]
        assert loaded.column_names == pl.read_parquet(folder / f"{table}.parquet").columns


def test_install_checks_every_file_before_anything_enters_the_store(two_versions, pushed, tmp_path):
    _, v1, _ = two_versions
    store = Store(tmp_path / "store")

    tampered = shutil.copytree(pushed[v1], tmp_path / "tampered")
    judgments = pl.read_parquet(tampered / "judgments.parquet")
    judgments.with_columns(pl.lit(5.0).alias("score")).write_parquet(tampered / "judgments.parquet")
    with pytest.raises(BuilderError, match=rf"^{v1}: checksum mismatch in judgments.parquet; nothing was installed$"):
        install_version(tampered, store)
    (tampered / "prompts.parquet").unlink()
    with pytest.raises(BuilderError, match="checksum mismatch in prompts.parquet, judgments.parquet;"):
        install_version(tampered, store)
    assert not store.versions() and not list(store.root.glob(".partial-*"))

    escaping = shutil.copytree(pushed[v1], tmp_path / "escaping")
    manifest = json.loads((escaping / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = {"sha256": "0" * 64}
    (escaping / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BuilderError, match="plain file names"):
        install_version(escaping, store)
    with pytest.raises(BuilderError, match="no manifest.json"):
        install_version(tmp_path, store)

    version, installed = install_version(pushed[v1], store)
    assert installed and version.id == v1 and store.verify(version) == []
    for name in [*version.manifest.files, "manifest.json"]:
        assert (version.folder / name).read_bytes() == (pushed[v1] / name).read_bytes()
        assert not (version.folder / name).stat().st_mode & stat.S_IWUSR
    assert install_version(pushed[v1], store)[1] is False, "a second pull finds it in the store"


def hub_cache_with(cache, repo_id: str, revision: str, folder) -> None:
    """huggingface_hub's cache layout (refs/<revision> names a commit; snapshots/<commit>/ holds its files), which
    snapshot_download serves when offline."""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(f"{revision}".encode()).hexdigest()
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_pull_through_the_cli(two_versions, pushed, tmp_path, monkeypatch):
    _, v1, v2 = two_versions
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    hub_cache_with(cache, "someone/self-rewarding", v1, pushed[v1])
    hub_cache_with(cache, "someone/self-rewarding", "main", pushed[v2])
    tampered = shutil.copytree(pushed[v2], tmp_path / "tampered")
    (tampered / "pairs.parquet").write_bytes((tampered / "pairs.parquet").read_bytes()[:-100])
    hub_cache_with(cache, "someone/self-rewarding", "tampered", tampered)
    store = tmp_path / "store"

    first = run_builder("pull", f"someone/self-rewarding@{v1}", "--store", store, check=True, process=True)
    assert first.stdout.strip() == v1 and "installed" in first.stderr
    latest = run_builder("pull", "someone/self-rewarding", "--store", store, check=True, process=True)
    assert latest.stdout.strip() == v2
    again = run_builder("pull", "someone/self-rewarding", "--store", store, check=True, process=True)
    assert "already in the store" in again.stderr
    assert run_builder("verify", v1, "--store", store).returncode == 0

    assert_one_line_error(run_builder("pull", "someone/self-rewarding@tampered", "--store", tmp_path / "other", process=True),
                          f"{v2}: checksum mismatch in pairs.parquet")
    assert not (tmp_path / "other" / v2).exists()
    assert_one_line_error(run_builder("pull", "someone/not-here", "--store", store, process=True), "pull someone/not-here failed")
    assert_one_line_error(run_builder("pull", "no-namespace", "--store", store, process=True), "expected a Hub dataset repo as user/name")


def test_push_refuses_bad_input_in_one_line(two_versions, tmp_path, monkeypatch):
    store, v1, _ = two_versions
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no stored login either
    assert_one_line_error(run_builder("push", v1, "--repo", "someone/data", "--store", store), "push needs a Hugging Face token")
    assert_one_line_error(run_builder("push", "pairs-nope", "--repo", "someone/data", "--store", store), "no version 'pairs-nope'")
    assert_one_line_error(run_builder("push", v1, "--repo", "some/one/data", "--store", store), "expected a Hub dataset repo")
    assert_one_line_error(run_builder("push", v1, "--store", store), "Missing option '--repo'")
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert_one_line_error(run_builder("push", v1, "--repo", "someone/data", "--store", store), "push to someone/data failed: OfflineModeIsEnabled")


def test_hub_refs():
    assert parse_hub_ref("someone/data@pairs-0123456789ab") == HubRef("someone/data", "pairs-0123456789ab")
    assert parse_hub_ref("someone/data@pairs-0123456789ab").duckdb_url == "hf://datasets/someone/data@pairs-0123456789ab"
    assert parse_hub_ref("someone/data").duckdb_url == "hf://datasets/someone/data"
    for bad in ("someone/data@", "data", "a/b/c", "some one/data", "someone/da--ta"):
        with pytest.raises(BuilderError):
            parse_hub_ref(bad)


@pytest.mark.skipif(not os.environ.get("HF_TOKEN"), reason="a real push/pull round trip needs HF_TOKEN and the Hub")
def test_round_trip_on_the_hub(two_versions, tmp_path, monkeypatch):
    """Pushes both versions to a new private repo, then pulls, loads and queries them back; deletes the repo."""
    from huggingface_hub import HfApi, constants

    store, v1, v2 = two_versions
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    api = HfApi()
    repo = f"{api.whoami()['name']}/builder-round-trip-{uuid.uuid4().hex[:8]}"
    try:
        assert run_builder("push", v1, "--repo", repo, "--private", "--store", store, check=True).stdout.strip() == f"{repo}@{v1}"
        run_builder("push", v2, "--repo", repo, "--store", store, check=True)
        assert "already pushed" in run_builder("push", v2, "--repo", repo, "--store", store, check=True).stderr
        assert {v1, v2} <= {tag.name for tag in api.list_repo_refs(repo, repo_type="dataset").tags}

        pulled = tmp_path / "pulled"
        assert run_builder("pull", f"{repo}@{v1}", "--store", pulled, check=True).stdout.strip() == v1
        assert run_builder("pull", repo, "--store", pulled, check=True).stdout.strip() == v2
        for version in (v1, v2):
            for name in json.loads((store / version / "manifest.json").read_text())["files"]:
                assert (pulled / version / name).read_bytes() == (store / version / name).read_bytes()

        # in a fresh process: `datasets` read HF_HUB_OFFLINE when this one imported it
        load = f"from datasets import load_dataset; print(load_dataset({repo!r}, 'judgments', revision={v1!r}, split='train').num_rows)"
        rows = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, env=os.environ.copy(), check=True)
        assert int(rows.stdout.split()[-1]) == json.loads((store / v1 / "manifest.json").read_text())["counts"]["judgments"]

        only_v2 = tmp_path / "only-v2"
        run_builder("pull", repo, "--store", only_v2, check=True)
        joined = run_builder("query", "--store", only_v2, "--attach", f"{repo}@{v1}", "--format", "csv",
                             "SELECT count(DISTINCT version) AS n FROM pairs", check=True)
        assert joined.stdout.splitlines()[1] == "2"
    finally:
        api.delete_repo(repo, repo_type="dataset", missing_ok=True)
