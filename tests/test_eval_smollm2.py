"""Head-to-head on the real SmolLM2-135M-Instruct: one model at two temperatures, judged by itself."""

import json

import polars as pl
import pytest
from conftest import run_builder

pytestmark = pytest.mark.slow


def test_head_to_head_of_smollm2_at_two_temperatures(tmp_path):
    result = run_builder("eval", "head-to-head", "--a", "smollm2-135m-instruct", "--a-temperature", "0.2",
                         "--b", "smollm2-135m-instruct", "--b-temperature", "1.0", "--limit", "2",
                         "--max-new-tokens", "32", "--judge-max-new-tokens", "48", "--store", tmp_path, check=True)
    version = result.stdout.strip().splitlines()[-1]
    verdicts = pl.read_parquet(tmp_path / version / "verdicts.parquet")
    assert verdicts.height == 2 and verdicts["raw_ab"].str.len_chars().min() > 0
    # whatever the small judge says, an unparsed order makes the pair unparsed, never a win
    unparsed = verdicts["verdict_ab"].is_null() | verdicts["verdict_ba"].is_null()
    assert (verdicts.filter(unparsed)["outcome"] == "unparsed").all()
    [summary] = json.loads((tmp_path / version / "manifest.json").read_text())["stats"]["matches"]
    assert summary["unparsed"] == int(unparsed.sum()) and summary["decided"] == 2 - summary["unparsed"]
    assert (tmp_path / version / "outcomes.png").stat().st_size > 1000
