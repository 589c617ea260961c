"""`builder diff` and queries that join versions from different places, on two real versions built here."""

import json

import polars as pl
import pytest
from conftest import run_builder, write_repo_folder

from builder.app.hub import install_version, push_operations
from builder.core.store import Store


def assert_one_line_error(result, expected: str):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr


def read(store, version, table) -> pl.DataFrame:
    return pl.read_parquet(store / version / f"{table}.parquet")


def test_diff_measures_both_versions_from_their_tables(two_versions):
    store, v1, v2 = two_versions
    result = json.loads(run_builder("diff", v1[:10], v2, "--store", store, "--format", "json", check=True).stdout)
    assert (result["a"], result["b"], result["b_parent"]) == (v1, v2, v1)
    metrics = {m["metric"]: m for m in result["metrics"]}
    for side, version in (("a", v1), ("b", v2)):
        prompts, candidates, judgments, pairs, dropped = (read(store, version, t) for t in ("prompts", "candidates", "judgments", "pairs", "dropped"))
        ties = dropped.filter(pl.col("reason") == "tie").height
        assert metrics["ties / prompts"][side] == pytest.approx(ties / prompts.height, abs=1e-4)
        assert metrics["unparsed judgments"][side] == pytest.approx(judgments["score"].null_count() / judgments.height, abs=1e-4)
        assert metrics["pairs"][side] == pairs.height
        assert metrics["mean chosen score"][side] == pytest.approx(pairs["score_chosen"].mean(), abs=0.005)
        assert metrics["mean judgment score"][side] == pytest.approx(judgments["score"].mean(), abs=0.005)
        assert metrics["mean candidate tokens"][side] == pytest.approx(candidates["n_tokens"].mean(), abs=0.005)
        parsed = judgments["score"].drop_nulls()
        assert sum(metrics[f"judgments scored {s}"][side] for s in range(6)) == pytest.approx(1.0, abs=1e-3)
        assert metrics["judgments scored 3"][side] == pytest.approx((parsed == 3).sum() / parsed.len(), abs=1e-4)
    for m in result["metrics"]:
        assert m["change"] == pytest.approx(m["b"] - m["a"], abs=1e-4), m["metric"]
    assert set(result["warnings"]) == {v1, v2}

    table = run_builder("diff", v1, v2, "--store", store, check=True).stdout
    assert f"{v1} → {v2}" in table and "ties / prompts" in table and "length-score Spearman" in table
    assert f"{v2}'s parent: {v1}" in table


def test_diff_refuses_unknown_versions(two_versions):
    store, v1, _ = two_versions
    assert_one_line_error(run_builder("diff", v1, "pairs-nope", "--store", store), "no version 'pairs-nope'")


def test_query_joins_the_store_with_an_attached_version(two_versions, tmp_path):
    """Here only v2 is local; v1 is read where a push put it (the folder a repo holds at v1's tag)."""
    store, v1, v2 = two_versions
    local = Store(tmp_path / "store")
    install_version(store / v2, local)
    elsewhere = write_repo_folder(push_operations(Store(store).load(v1)), tmp_path / "pushed-v1")

    def query(sql, *extra):
        return run_builder("query", "--store", local.root, "--attach", elsewhere, *extra, "--format", "json", sql)

    counts = query("SELECT version, count(*) AS n FROM judgments GROUP BY version ORDER BY version")
    assert [json.loads(line) for line in counts.stdout.splitlines()] == sorted(
        [{"version": v, "n": read(store, v, "judgments").height} for v in (v1, v2)], key=lambda row: row["version"]
    )
    # the same prompt in both iterations: how its chosen score moved
    moved = query(
        "SELECT count(*) AS prompts, round(avg(b.score_chosen - a.score_chosen), 4) AS change FROM pairs a "
        f"JOIN pairs b ON a.prompt_id = b.prompt_id WHERE a.version = '{v1}' AND b.version = '{v2}'"
    )
    expected = read(store, v1, "pairs").join(read(store, v2, "pairs"), on="prompt_id", suffix="_b")
    row = json.loads(moved.stdout)
    assert row["prompts"] == expected.height > 0
    assert row["change"] == pytest.approx((expected["score_chosen_b"] - expected["score_chosen"]).mean(), abs=1e-4)
    versions = query("SELECT version, parent, location FROM versions ORDER BY version")
    located = {row["version"]: row for row in map(json.loads, versions.stdout.splitlines())}
    assert located[v2]["parent"] == v1 and located[v1]["location"] == str(elsewhere.resolve())

    assert_one_line_error(query("SELECT 1", "--attach", store / v1), f"{v1} from {store / v1} is already in the query")
    assert_one_line_error(run_builder("query", "--store", local.root, "--attach", "nowhere", "SELECT 1"), "cannot attach 'nowhere'")
    assert_one_line_error(run_builder("query", "--store", local.root, "--attach", tmp_path, "SELECT 1"), "is not a dataset version")
