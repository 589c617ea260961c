"""make-judge-pairs (Meta-Rewarding's meta-judge) through the CLI: a real run on the tiny model (tables, manifest,
provenance back to the make-pairs judgments), the order-swap rule with a scripted meta-judge at the Generator
seam, `train dpo` on judge pairs alone and mixed with the actor pairs, and the recipe's `meta_judge:` option."""

import json
import re
import shutil

import polars as pl
import pytest
import yaml
from conftest import run_builder

import builder.stages.judge_pairs as judge_pairs_stage
from builder.core.records import Completion
from builder.engines.context import unknown_window
from builder.judging.spec import load_judge
from builder.stages.judge_pairs import balance_scores

PROMPTS = ["Name thing number 1.", "Say hello.", "Name a fruit.", "Name thing number 2."]
PAIRS = ["--n-samples", "2", "--n-judgments", "3", "--max-new-tokens", "16", "--judge-max-new-tokens", "32", "--batch-size", "8", "--seed", "1"]
# Sampled meta-judgments: greedy, the tiny model writes "Verdict: 1" whatever it reads, and every comparison is a tie.
META = ["--judge-max-new-tokens", "32", "--judge-temperature", "1.0", "--batch-size", "8"]
ONE_STEP = ["--max-steps", "1", "--batch-size", "2", "--micro-batch-size", "2", "--max-length", "512"]


@pytest.fixture(scope="module")
def source(tiny_model, tmp_path_factory):
    store = tmp_path_factory.mktemp("judge-pairs-store")
    prompts = store.parent / "judge-pairs-prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    made = run_builder("make-pairs", "--model", tiny_model, "--prompts", prompts, "--store", store, *PAIRS, check=True)
    return store, made.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(source):
    store, pairs = source
    result = run_builder("make-judge-pairs", "--pairs", pairs, "--store", store, *META, check=True)
    return store, pairs, result.stdout.strip().splitlines()[-1], result


def read(store, version, table):
    return pl.read_parquet(store / version / f"{table}.parquet")


def test_the_version_keeps_both_judgments_both_meta_judgments_and_the_verdict(built):
    store, pairs_version, version, result = built
    assert version.startswith("judge-pairs-") and "built " + version in result.stderr
    assert sorted(p.name for p in (store / version).iterdir()) == [
        "README.md", "comparisons.parquet", "dropped.parquet", "manifest.json", "pairs.parquet"]
    manifest = json.loads((store / version / "manifest.json").read_text())
    source = json.loads((store / pairs_version / "manifest.json").read_text())
    assert manifest["kind"] == "judge-pairs" and manifest["parent"] == pairs_version
    assert manifest["models"]["meta_judge"]["model"]["fingerprint"] == source["models"]["judge"]["model"]["fingerprint"]
    assert manifest["models"]["judge"] == source["models"]["judge"]
    shipped = load_judge(None, "meta")
    assert manifest["judge"]["name"] == "meta_judge" and manifest["judge"]["sha256"] == shipped.template.sha256
    assert manifest["judge"]["spec"]["parser"] == "final_verdict_line@1" and manifest["judge"]["spec"]["constraint"]["mode"] == "guided"
    assert manifest["sampling"]["meta_judgments"] == {"n": 1, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 32}
    assert manifest["extra"]["selection"]["rule"] == "highest_variance@1" and manifest["extra"]["selection"]["comparisons_per_prompt"] == 3
    assert manifest["extra"]["judge_template"]["sha256"] == source["judge"]["sha256"]
    identity = manifest["identity"]
    assert identity["input"]["version"] == pairs_version and identity["selection"] == {"rule": "highest_variance@1", "comparisons_per_prompt": 3}
    assert identity["judge_spec"] == manifest["judge"]["spec"] and identity["sampling"] == manifest["sampling"]["meta_judgments"]
    assert run_builder("verify", version, "--store", store).returncode == 0

    comparisons, pairs, dropped = (read(store, version, t) for t in ("comparisons", "pairs", "dropped"))
    judgments = read(store, pairs_version, "judgments").select("judgment_id", "candidate_id", "raw", "score")
    assert comparisons.height > 0 and pairs.height > 0, "sampled meta-judgments of the tiny model decide some comparisons"
    for side in ("a", "b"):  # each judgment compared is the make-pairs judgment: same candidate, text and score
        joined = comparisons.join(judgments, left_on=f"judgment_id_{side}", right_on="judgment_id")
        assert joined.height == comparisons.height
        assert (joined["candidate_id"] == joined["candidate_id_right"]).all() and (joined[f"judgment_{side}"] == joined["raw"]).all()
        assert (joined[f"score_{side}"] == joined["score"]).all()
    assert (comparisons["score_a"] > comparisons["score_b"]).all()
    for row in comparisons.iter_rows(named=True):
        assert row["verdict"] == {("a", "a"): "a", ("b", "b"): "b"}.get((row["winner_ab"], row["winner_ba"]), "tie" if None not in (
            row["winner_ab"], row["winner_ba"]) else "unparsed")
        assert row["raw_ab"].splitlines()[-1].startswith("Verdict:") and row["raw_ba"].splitlines()[-1].startswith("Verdict:")

    by_reason = dict(dropped.group_by("reason").len().iter_rows())
    assert comparisons.height == pairs.height + by_reason.get("tie", 0) + by_reason.get("unparsed_meta_judgment", 0)
    assert (comparisons["verdict"] == "tie").sum() == by_reason.get("tie", 0)
    assert manifest["counts"] == {"comparisons": comparisons.height, "pairs": pairs.height, "dropped": dropped.height}


def test_every_possible_comparison_is_made_or_dropped_over_the_cap(built):
    store, pairs_version, version, _ = built
    judgments = read(store, pairs_version, "judgments").filter(pl.col("score").is_not_null())
    distinct = judgments.join(judgments, on="candidate_id").filter(pl.col("score") > pl.col("score_right"))
    comparisons, dropped = read(store, version, "comparisons"), read(store, version, "dropped")
    over_cap = dropped.filter(pl.col("reason") == "over_cap")
    assert comparisons.height + over_cap.height == distinct.height
    assert comparisons.group_by("prompt_id").len()["len"].max() <= 3
    agree = dropped.filter(pl.col("reason").is_in(["judgments_agree", "too_few_parsed_judgments"]))
    compared = set(distinct["candidate_id"])
    assert set(agree["candidate_id"]).isdisjoint(compared)
    assert set(agree["candidate_id"]) | compared == set(read(store, pairs_version, "candidates")["candidate_id"])


def test_the_pairs_table_is_what_train_dpo_reads(built, tiny_model):
    store, pairs_version, version, _ = built
    pairs, actor = read(store, version, "pairs"), read(store, pairs_version, "pairs")
    assert pairs.schema["prompt"] == actor.schema["prompt"] and pairs.schema["chosen"] == actor.schema["chosen"]
    comparisons = read(store, version, "comparisons")
    for pair in pairs.iter_rows(named=True):
        row = comparisons.filter(pl.col("comparison_id") == pair["comparison_id"]).row(0, named=True)
        winner, loser = ("a", "b") if row["verdict"] == "a" else ("b", "a")
        assert pair["prompt"] == [{"role": "user", "content": row["judge_prompt"]}]
        assert pair["chosen"] == [{"role": "assistant", "content": row[f"judgment_{winner}"]}]
        assert pair["rejected"] == [{"role": "assistant", "content": row[f"judgment_{loser}"]}]
        assert (pair["chosen_id"], pair["rejected_id"]) == (row[f"judgment_id_{winner}"], row[f"judgment_id_{loser}"])
    rendered = load_judge(None, "pointwise").template
    candidate = read(store, pairs_version, "candidates").filter(pl.col("candidate_id") == comparisons["candidate_id"][0]).row(0, named=True)
    prompt = read(store, pairs_version, "prompts").filter(pl.col("prompt_id") == candidate["prompt_id"])["prompt"][0]
    assert comparisons["judge_prompt"][0] == rendered.render(prompt, candidate["response"])  # exactly what the judge saw

    trained = run_builder("train", "dpo", "--base", tiny_model, "--data", version, "--name", "J1", *ONE_STEP, "--store", store, check=True)
    lineage = json.loads((store / "models" / "J1" / "lineage.json").read_text())
    assert trained.stdout.strip().splitlines()[-1] == "J1" and lineage["data"]["version"] == version and "datasets" not in lineage
    assert lineage["data"]["kind"] == "judge-pairs" and lineage["data"]["rows"] == pairs.height


def test_rerun_ls_show_and_query(built):
    store, pairs_version, version, _ = built
    again = run_builder("make-judge-pairs", "--pairs", pairs_version, "--store", store, *META, check=True)
    assert again.stdout.strip().splitlines()[-1] == version and "already built" in again.stderr
    listed = run_builder("ls", "--format", "json", "--store", store, check=True)
    entry = next(v for v in json.loads(listed.stdout) if v["id"] == version)
    assert entry["kind"] == "judge-pairs" and "judge pairs of" in entry["summary"]
    shown = run_builder("show", version[:16], "--store", store, check=True).stdout
    assert "judge-pairs" in shown and "higher score won" in shown and "over_cap" in shown
    counted = run_builder("query", "--format", "json", f"SELECT count(*) AS n FROM comparisons WHERE version = '{version}'", "--store", store, check=True)
    assert json.loads(counted.stdout)["n"] == read(store, version, "comparisons").height
    card = (store / version / "README.md").read_text()
    assert "Meta-Rewarding judge preference pairs" in card and "config_name: pairs" in card


def test_a_make_judge_pairs_on_a_version_that_is_not_make_pairs_is_refused(built, tmp_path):
    store, _, version, _ = built
    result = run_builder("make-judge-pairs", "--pairs", version, "--store", store)
    assert result.returncode == 2 and "make-judge-pairs compares the judgments of a make-pairs version" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


class ScriptedMetaJudge:
    """A Generator whose verdict follows a rule over the two judgments shown, to check the order-swap rule."""

    context = unknown_window("scripted")

    def __init__(self, name, rule):
        self.identity, self.rule = {"backend": "scripted", "rule": name}, rule

    def generate(self, requests):
        return [[Completion(self.rule(*shown(r.messages[0]["content"])), "stop", 4)] * r.sampling.n for r in requests]


def shown(text):
    """The scores of judgment 1 and judgment 2 in a meta-judge prompt."""
    blocks = [text.split(f"<judgment_{i}>")[1].split(f"</judgment_{i}>")[0] for i in (1, 2)]
    return [int(re.findall(r"Score: (\d)", block)[-1]) for block in blocks]


def scripted_run(source, tmp_path, monkeypatch, name, rule, *extra):
    store, pairs_version = source
    copy = tmp_path / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("models", ".locks"))
    monkeypatch.setattr(judge_pairs_stage, "load_generator", lambda *args, **kwargs: ScriptedMetaJudge(name, rule))
    result = run_builder("make-judge-pairs", "--pairs", pairs_version, "--store", copy, "--batch-size", "8", *extra, check=True)
    version = result.stdout.strip().splitlines()[-1]
    return copy, version


def test_a_verdict_that_flips_with_the_order_is_a_tie(source, tmp_path, monkeypatch):
    store, version = scripted_run(source, tmp_path, monkeypatch, "first", lambda one, two: "Judgment 1 is fine.\nVerdict: 1")
    comparisons, pairs, dropped = (read(store, version, t) for t in ("comparisons", "pairs", "dropped"))
    assert comparisons.height > 0 and pairs.height == 0
    assert (comparisons["verdict"] == "tie").all() and comparisons["order_dependent"].all()
    ties = dropped.filter(pl.col("reason") == "tie")
    assert ties.height == comparisons.height and ties["detail"].str.contains("order-dependent").all()
    assert set(ties["detail"].str.extract(r"^(\S+):")) == set(comparisons["comparison_id"])
    manifest = json.loads((store / version / "manifest.json").read_text())
    assert manifest["stats"]["order_dependent_rate"] == 1.0 and manifest["stats"]["first_position_rate"] == 1.0


def test_a_consistent_verdict_picks_the_same_judgment_in_both_orders(source, tmp_path, monkeypatch):
    lower = lambda one, two: "The lower score fits.\nVerdict: " + ("1" if one < two else "2")
    store, version = scripted_run(source, tmp_path, monkeypatch, "lower", lower)
    comparisons, pairs = read(store, version, "comparisons"), read(store, version, "pairs")
    assert (comparisons["verdict"] == "b").all() and not comparisons["order_dependent"].any()
    assert pairs.height == comparisons.height and (pairs["chosen_judgment_score"] < pairs["rejected_judgment_score"]).all()
    assert json.loads((store / version / "manifest.json").read_text())["stats"]["higher_score_won_rate"] == 0.0

    # balanced: none of the pairs has a winner with the higher score, so every pair is dropped as score_balance
    balanced, again = scripted_run(source, tmp_path / "b", monkeypatch, "lower", lower, "--balance-scores")
    assert again != version and read(balanced, again, "pairs").height == 0
    assert read(balanced, again, "dropped").filter(pl.col("reason") == "score_balance").height == pairs.height

    mixed = run_builder("train", "dpo", "--base", source_model(store), "--data", pairs_version_of(store, version), "--data", version,
                        "--name", "M2", *ONE_STEP, "--store", store, check=True)
    lineage = json.loads((store / "models" / "M2" / "lineage.json").read_text())
    assert mixed.returncode == 0 and [d["kind"] for d in lineage["datasets"]] == ["pairs", "judge-pairs"]
    assert lineage["datasets"][1]["rows"] == pairs.height and lineage["data"] == lineage["datasets"][0]
    listed = json.loads(run_builder("models", "--format", "json", "--store", store, check=True).stdout)
    assert [d["version"] for d in listed[0]["datasets"]] == [pairs_version_of(store, version), version]


def source_model(store):
    pairs = next(p for p in store.iterdir() if p.name.startswith("pairs-"))
    return json.loads((pairs / "manifest.json").read_text())["models"]["policy"]["model"]["spec"]


def pairs_version_of(store, version):
    return json.loads((store / version / "manifest.json").read_text())["parent"]


def test_an_unparsed_order_is_never_a_pair(source, tmp_path, monkeypatch):
    rule = lambda one, two: "no verdict here" if one > two else "Verdict: 2"  # a shown first: unparsed
    store, version = scripted_run(source, tmp_path, monkeypatch, "half", rule)
    comparisons, pairs, dropped = (read(store, version, t) for t in ("comparisons", "pairs", "dropped"))
    assert (comparisons["verdict"] == "unparsed").all() and pairs.height == 0
    unparsed = dropped.filter(pl.col("reason") == "unparsed_meta_judgment")
    assert unparsed.height == comparisons.height and unparsed["detail"].str.contains("a first: no_final_verdict_line").all()


def test_balance_keeps_as_many_higher_as_lower_score_winners():
    pairs = pl.DataFrame({"comparison_id": ["c1", "c2", "c3", "c4", "c5"], "chosen_judgment_score": [5.0, 4.0, 3.0, 1.0, 2.0],
                          "rejected_judgment_score": [1.0, 2.0, 1.0, 3.0, 0.0]})
    kept, dropped = balance_scores(pairs, seed=0)
    higher = kept["chosen_judgment_score"] > kept["rejected_judgment_score"]
    assert kept.height == 2 and higher.sum() == 1 and dropped.height == 3
    assert balance_scores(pairs, seed=0)[0].equals(kept) and set(kept["comparison_id"]) | set(dropped["comparison_id"]) == set(pairs["comparison_id"])


def tiny_recipe(model, prompts):
    step = {"max_steps": 1, "batch_size": 2, "micro_batch_size": 2, "max_length": 512, "save_steps": 1}
    return {
        "name": "tiny-meta", "base": str(model), "seed": 3, "generation": {"batch_size": 8, "dtype": "float32"},
        "sft": {"name": "M1", **step},
        "iteration": {
            "make_pairs": {"n_samples": 2, "n_judgments": 3, "max_new_tokens": 12, "judge_max_new_tokens": 24},
            "meta_judge": {"judge_temperature": 1.0, "judge_max_new_tokens": 24},
            "dpo": step,
        },
        "iterations": [{"name": "M2", "prompts": str(prompts)}],
    }


def test_a_recipe_trains_the_iteration_on_actor_and_judge_pairs(tiny_model, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    recipe = tmp_path / "meta.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(tiny_model, prompts)))
    plan = run_builder("run", recipe, "--dry-run", "--store", tmp_path / "store", check=True).stdout
    assert "M2 make-judge-pairs" in plan and "make-judge-pairs>)" in plan  # the DPO step's data: (<M2 make-pairs>, <M2 make-judge-pairs>)

    bad = tiny_recipe(tiny_model, prompts)
    bad["iteration"]["meta_judge"]["comparisons"] = 2
    recipe.with_name("bad.yaml").write_text(yaml.safe_dump(bad))
    refused = run_builder("run", recipe.with_name("bad.yaml"), "--store", tmp_path / "store")
    assert refused.returncode == 2 and "iteration.meta_judge.comparisons: unknown key" in refused.stderr

    run_builder("run", recipe, "--store", tmp_path / "store", check=True)
    lineage = json.loads((tmp_path / "store" / "models" / "M2" / "lineage.json").read_text())
    assert [d["kind"] for d in lineage["datasets"]] == ["pairs", "judge-pairs"] and lineage["recipe"]["name"] == "tiny-meta"
    judge_pairs = json.loads((tmp_path / "store" / lineage["datasets"][1]["version"] / "manifest.json").read_text())
    assert judge_pairs["parent"] == lineage["datasets"][0]["version"] and judge_pairs["recipe"]["name"] == "tiny-meta"
