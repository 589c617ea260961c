"""The house's seams: the typed manifest (and manifests of earlier releases), plain Arrow types that concatenate
with Hub datasets, knobs declared once, `--format json` on every read verb, and the version's code version."""

import json
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import run_builder

from builder.core.knobs import knob_fields, knob_of
from builder.core.manifest import Manifest
from builder.stages.configs import MakeEftConfig, MakePairsConfig, MakePromptsConfig, MixSftConfig
from evaluators.configs import HeadToHeadConfig, RewardModelConfig
from trainers.configs import TrainConfig

# A pairs manifest as releases before the typed manifest wrote it (abridged to what readers use).
LAYOUT_1_PAIRS = {
    "kind": "pairs", "id": "pairs-0123456789ab", "parent": None, "seed": 3,
    "policy": {"model": {"spec": "/models/M1", "fingerprint": "sha256:aa"}, "engine": {"backend": "transformers"}},
    "judge": {"model": {"spec": "M0", "fingerprint": "sha256:bb"}, "engine": {"backend": "transformers"}},
    "sampling": {"candidates": {"n": 4, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 64},
                 "judgments": {"n": 3, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 96}, "seed": 3},
    "judge_template": {"name": "additive_5point", "sha256": "cc" * 32, "text": "…"},
    "input": {"spec": "prompts.jsonl", "kind": "file", "fingerprint": "sha256:dd"},
    "identity": {"seed": 3}, "stats": {"tie_rate": 0.25}, "counts": {"pairs": 6, "prompts": 8},
    "files": {"pairs.parquet": {"rows": 6, "sha256": "ee", "bytes": 10}},
    "code_version": {"package": "0.1.0", "git": None}, "created_at": "2026-11-01T00:00:00+00:00",
}
LAYOUT_1_EFT = {
    "kind": "eft", "id": "eft-0123456789ab", "parent": "seed-1", "seed": 0,
    "model": {"spec": "smollm2-135m-instruct", "fingerprint": "sha256:ff"},
    "judge": {"engine": {"backend": "transformers"}, "sampling": {"n": 3, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 256}},
    "judge_template": {"name": "additive_5point", "sha256": "cc" * 32, "text": "…"},
    "input": {"ranked": "seed-1", "fingerprint": "sha256:11", "limit": None, "held_out": 0.2},
    "agreement_rule": "every pair …", "identity": {}, "stats": {"agreement_rate": 0.5}, "counts": {}, "files": {},
    "code_version": {"package": "0.1.0", "git": "abc"}, "created_at": "2026-11-01T00:00:00+00:00",
}


def test_a_layout_1_pairs_manifest_reads_into_the_same_fields():
    m = Manifest.from_json(LAYOUT_1_PAIRS)
    assert m.layout == 1 and m.kind == "pairs" and m.seed == 3
    assert m.model_spec("policy") == "/models/M1" and m.model_spec("judge") == "M0"
    assert m.model_names() == "M1 / M0"
    assert m.sampling["candidates"]["n"] == 4 and "seed" not in m.sampling
    assert m.judge["name"] == "additive_5point" and m.inputs["prompts"]["spec"] == "prompts.jsonl"
    assert m.counts["pairs"] == 6 and m.code() == "0.1.0"


def test_a_layout_1_eft_manifest_names_its_one_model_the_judge():
    m = Manifest.from_json(LAYOUT_1_EFT)
    assert m.model_spec("judge") == "smollm2-135m-instruct" and m.sampling["judgments"]["n"] == 3
    assert m.inputs["ranked"]["spec"] == "seed-1" and m.extra["agreement_rule"] == "every pair …"
    assert m.all_parents() == ["seed-1"]


def test_a_manifest_round_trips_through_json():
    m = Manifest(kind="pairs", id="pairs-x", models={"policy": {"model": {"spec": "M2"}, "engine": {}}}, stats={"a": 1})
    again = Manifest.from_json(json.loads(json.dumps(m.to_json())))
    assert again == m and again.layout == 2


def test_earlier_versions_still_list_show_and_query(two_versions, tmp_path):
    """A store holding a version as an earlier release wrote it: ls, show and query read it beside new ones."""
    store, v1, _ = two_versions
    old_store = tmp_path / "store"
    shutil.copytree(store / v1, old_store / v1)
    manifest_path = old_store / v1 / "manifest.json"
    new = json.loads(manifest_path.read_text())
    old = {k: v for k, v in new.items() if k not in ("models", "sampling", "inputs", "judge", "extra", "layout", "parents")}
    old |= {"policy": new["models"]["policy"], "judge": new["models"]["judge"], "judge_template": new["judge"],
            "input": new["inputs"]["prompts"], "sampling": {**new["sampling"], "seed": new["seed"]}}
    manifest_path.chmod(0o644)
    manifest_path.write_text(json.dumps(old))
    listed = run_builder("ls", "--store", old_store, "--format", "json", check=True)
    assert json.loads(listed.stdout)[0]["id"] == v1
    shown = run_builder("show", v1, "--store", old_store, check=True)
    assert "policy" in shown.stdout and "prompts from" in shown.stdout
    queried = run_builder("query", "SELECT policy, count(*) AS n FROM versions GROUP BY policy", "--store", old_store, "--format", "json", check=True)
    assert json.loads(queried.stdout.splitlines()[0])["n"] == 1


def test_every_read_verb_speaks_json(two_versions):
    store, v1, v2 = two_versions
    listed = json.loads(run_builder("ls", "--store", store, "--format", "json", check=True).stdout)
    assert {row["id"] for row in listed} == {v1, v2} and all(row["kind"] == "pairs" for row in listed)
    shown = json.loads(run_builder("show", v2, "--store", store, "--format", "json", check=True).stdout)
    assert shown["manifest"]["parent"] == v1 and shown["damaged_files"] == []
    verified = json.loads(run_builder("verify", v1, "--store", store, "--format", "json", check=True).stdout)
    assert verified["damaged_files"] == [] and verified["identity_problem"] is None
    assert json.loads(run_builder("models", "--store", store, "--format", "json", check=True).stdout) == []
    health = json.loads(run_builder("health", v1, "--store", store, "--format", "json", check=True).stdout)
    assert health["kind"] == "pairs"
    diff = json.loads(run_builder("diff", v1, v2, "--store", store, "--format", "json", check=True).stdout)
    assert diff["b"] == v2


def test_pairs_concatenate_with_a_hub_style_preference_dataset(two_versions, tmp_path):
    """Our tables use plain string/list Arrow types: `concatenate_datasets` with the usual Hub layout needs no cast."""
    import datasets

    store, v1, _ = two_versions
    ours = datasets.load_dataset("parquet", data_files=str(store / v1 / "pairs.parquet"), split="train",
                                 cache_dir=str(tmp_path / "cache"))
    conversation = [{"role": "user", "content": "Hi"}]
    theirs = datasets.Dataset.from_dict({
        "prompt": [conversation], "chosen": [[{"role": "assistant", "content": "Hello!"}]],
        "rejected": [[{"role": "assistant", "content": "No."}]],
    })
    both = datasets.concatenate_datasets([ours.select_columns(["prompt", "chosen", "rejected"]), theirs])
    assert len(both) == len(ours) + 1 and both[-1]["chosen"][0]["content"] == "Hello!"


def test_the_code_version_is_the_packages_own_checkout_or_none(tmp_path):
    """A copy of the package inside another git repository records no commit: not that repository's."""
    import builder

    outer = tmp_path / "other-repo"
    shutil.copytree(Path(builder.__file__).parent, outer / "builder", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(["git", "init", "-q", str(outer)], check=True)
    script = "from builder.core.store import code_version; import json; print(json.dumps(code_version()))"
    found = subprocess.run([sys.executable, "-c", script], cwd=outer, capture_output=True, text=True, check=True,
                           env={"PYTHONPATH": str(outer), "PATH": "/usr/bin:/bin"})
    assert json.loads(found.stdout) == {"package": builder.__version__, "git": None}


@pytest.mark.parametrize("config", [MakePairsConfig, MakeEftConfig, MakePromptsConfig, MixSftConfig, HeadToHeadConfig,
                                    RewardModelConfig, TrainConfig])
def test_every_config_field_is_a_knob_with_help(config):
    knobs = {f.name for f in knob_fields(config)}
    assert {f.name for f in fields(config)} - knobs <= {"method"}
    assert all(knob_of(config, name).help for name in knobs)


def test_a_knob_means_the_same_on_every_verb():
    """One name, one help text: every config that has a field shares the declaration (or overrides only its default)."""
    configs = [MakePairsConfig, MakeEftConfig, MakePromptsConfig, HeadToHeadConfig, RewardModelConfig]
    for name in ("model", "seed", "batch_size", "dtype", "backend", "n_judgments", "judge_temperature", "judge_template", "limit"):
        helps = {knob_of(c, name).help for c in configs if name in {f.name for f in fields(c)}}
        if name in ("judge_template", "judge_temperature", "limit"):  # the pairwise judge's template and greedy default differ
            continue
        assert len(helps) == 1, (name, helps)


@pytest.mark.parametrize("args, message", [
    (["make-pairs", "--temperature", "nan"], "not a finite number"),
    (["make-pairs", "--judge-temperature", "inf"], "not a finite number"),
    (["make-pairs", "--request-timeout", "nan"], "not a finite number"),
    (["make-pairs", "--n-samples", "1"], "--n-samples must be at least 2"),
    (["make-prompts", "--similarity", "0"], "--similarity must be in (0, 1]"),
    (["make-eft", "--held-out", "1"], "--held-out must be in [0, 1)"),
])
def test_every_knob_rule_is_one_line(args, message, tmp_path):
    result = run_builder(*args, "--store", tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
