"""The seed chain on the real SmolLM2-135M-Instruct: make-eft → make-prompts → make-pairs --prompts <version>."""

import json

import pytest
from conftest import run_builder

pytestmark = pytest.mark.slow


def test_the_seed_chain_on_the_default_model(tmp_path):
    store = tmp_path / "store"
    eft = run_builder("make-eft", "--limit", "4", "--held-out", "0.25", "-k", "1", "--judge-max-new-tokens", "48",
                      "--store", store, check=True).stdout.strip().splitlines()[-1]
    stats = json.loads((store / eft / "manifest.json").read_text())["stats"]
    assert stats["groups"] == 4 and stats["judgments"] >= 1 and "agreement_rate" in stats
    prompts = run_builder("make-prompts", "--n-prompts", "8", "--max-new-tokens", "48", "--store", store,
                          check=True).stdout.strip().splitlines()[-1]
    kept = json.loads((store / prompts / "manifest.json").read_text())["stats"]["kept"]
    pairs = run_builder("make-pairs", "--prompts", prompts, "-n", "2", "-k", "1", "--max-new-tokens", "24",
                        "--judge-max-new-tokens", "32", "--store", store)
    if kept:
        assert pairs.returncode == 0, pairs.stderr
        manifest = json.loads((store / pairs.stdout.strip().splitlines()[-1] / "manifest.json").read_text())
        assert manifest["parent"] == prompts and manifest["counts"]["prompts"] == kept
    else:  # every generated prompt was filtered: make-pairs says so in one line
        assert pairs.returncode == 2 and len(pairs.stderr.strip().splitlines()) == 1
