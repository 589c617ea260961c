"""Labels you can trust: Wilson intervals, the checks_first rule, label quality, `eval judge` end to end on the
tiny model, `make-pairs --verify`, and a judge gate that stops a recipe."""

import json
import random

import polars as pl
import pytest
from conftest import run_builder

from builder.core.schemas import CANDIDATES_SCHEMA, JUDGMENTS_SCHEMA, PROMPTS_SCHEMA
from builder.judging.constraints import Constraint
from builder.judging.metrics import share_with_ci, wilson_interval
from builder.judging.verify import check_candidates, describe_label_quality, label_quality
from builder.stages.aggregate import CHECKS_FIRST, CHECKS_MARGIN, CHECKS_MARGIN_ENDED, JUDGE_ONLY, build_labels, to_judge

SHORT = [Constraint("max_words", {"n": 3})]  # "ok" passes, a five-word answer fails
PASSING, FAILING = "ok", "one two three four five"


def test_wilson_interval_at_zero_one_and_between():
    low, high = wilson_interval(0, 10)
    assert low == 0 and high == pytest.approx(0.2775, abs=1e-4)  # not the bootstrap's 0–0
    low, high = wilson_interval(10, 10)
    assert high == 1 and low == pytest.approx(0.7225, abs=1e-4)
    low, high = wilson_interval(52, 100)  # about the 0.52 on ~200 pairs, here on 100
    assert low == pytest.approx(0.4231, abs=1e-3) and high == pytest.approx(0.6153, abs=1e-3) and low < 0.5 < high
    assert wilson_interval(0, 0) == (None, None)
    assert share_with_ci(2.5, 4)["share"] == 0.625  # a tie counts ½


def labelled_tables(groups: dict[str, list[tuple[str, list[float | None]]]]):
    """groups[prompt] = [(response, judge scores)…] → prompts (all with the SHORT constraint), candidates, judgments."""
    prompts = pl.DataFrame(
        [{"prompt_id": p, "prompt": p, "messages": [{"role": "user", "content": p}], "source": "t", "source_row": i, "source_id": None}
         for i, p in enumerate(groups)], schema=PROMPTS_SCHEMA)
    candidates, judgments = [], []
    for p, answers in groups.items():
        for c, (response, scores) in enumerate(answers):
            cid = f"{p}-c{c}"
            candidates.append({"candidate_id": cid, "prompt_id": p, "sample_index": c, "response": response, "finish_reason": "stop",
                               "n_tokens": len(response), "request_key": "k"})
            judgments += [{"judgment_id": f"{cid}-j{j}", "candidate_id": cid, "prompt_id": p, "sample_index": j, "raw": "",
                           "rationale": "", "score": s, "parse_error": None if s is not None else "empty", "finish_reason": "stop",
                           "n_tokens": 1, "request_key": "k"} for j, s in enumerate(scores)]
    candidates = pl.DataFrame(candidates, schema=CANDIDATES_SCHEMA)
    checks = check_candidates({p: SHORT for p in groups}, candidates)
    return prompts, candidates, pl.DataFrame(judgments, schema=JUDGMENTS_SCHEMA), checks


def test_checks_first_never_chooses_a_failing_candidate_over_a_passing_one():
    tables = labelled_tables({"a": [(FAILING, [5, 5]), (PASSING, [1, 1]), (PASSING, [3, 2])]})
    _, judge_pairs, _ = build_labels(*tables, JUDGE_ONLY)
    assert judge_pairs["chosen_id"].to_list() == ["a-c0"]  # the judge alone prefers the failing answer
    _, pairs, _ = build_labels(*tables, CHECKS_FIRST)
    # chosen: the better-scored of the passing answers; rejected: the failing one, whatever the judge gave it
    assert pairs.select("chosen_id", "rejected_id", "chosen_passed", "rejected_passed").row(0) == ("a-c2", "a-c0", True, False)
    assert pairs["score_margin"][0] == pytest.approx(2.5 - 5)  # the verifiers overrule the judge: a negative margin, kept


def test_checks_first_on_random_groups():
    """Property: over many random groups, no pair has a failing chosen while a scored passing candidate exists,
    and when both classes are scored the rejected one fails."""
    rng = random.Random(0)
    groups = {f"p{i}": [(rng.choice([PASSING, FAILING]), [rng.choice([None, 1, 2, 3, 4, 5]) for _ in range(2)]) for _ in range(4)]
              for i in range(200)}
    scored, pairs, _ = build_labels(*labelled_tables(groups), CHECKS_FIRST)
    classes = scored.filter(pl.col("n_scored") > 0).group_by("prompt_id").agg(pl.col("passed").any().alias("any_pass"),
                                                                              (~pl.col("passed")).any().alias("any_fail"))
    checked = pairs.join(classes, on="prompt_id")
    assert checked.height > 100
    assert checked.filter(pl.col("any_pass") & ~pl.col("chosen_passed")).height == 0
    assert checked.filter(pl.col("any_pass") & pl.col("any_fail") & pl.col("rejected_passed")).height == 0
    assert label_quality(pairs)["counts"]["reversed"] == 0


def test_checks_first_ties_only_within_a_class_and_ignores_prompts_without_constraints():
    prompts, candidates, judgments, checks = labelled_tables({"tie": [(PASSING, [3]), (PASSING, [3])], "plain": [(FAILING, [2]), (PASSING, [4])]})
    checks = checks.filter(pl.col("prompt_id") == "tie")  # "plain" carries no constraint: the judge alone decides
    _, pairs, dropped = build_labels(prompts, candidates, judgments, checks, CHECKS_FIRST)
    assert dropped.filter(pl.col("reason") == "tie")["prompt_id"].to_list() == ["tie"]
    assert pairs.select("chosen_id", "chosen_passed").row(0) == ("plain-c1", None)


def test_checks_margin_keeps_only_pairs_the_verifiers_tell_apart():
    prompts, candidates, judgments, checks = labelled_tables({
        "mixed": [(FAILING, [5]), (PASSING, [1]), (PASSING, [3])],
        "all_fail": [(FAILING, [5]), (FAILING, [1])],
        "all_pass": [(PASSING, [2]), (PASSING, [4])],
        "plain": [(FAILING, [2]), (PASSING, [4])],
    })
    checks = checks.filter(pl.col("prompt_id") != "plain")  # no constraint: the judge alone decides, as in checks_first
    _, first, _ = build_labels(prompts, candidates, judgments, checks, CHECKS_FIRST)
    assert sorted(first["prompt_id"]) == ["all_fail", "all_pass", "mixed", "plain"]
    _, pairs, dropped = build_labels(prompts, candidates, judgments, checks, CHECKS_MARGIN)
    assert sorted(pairs["prompt_id"]) == ["mixed", "plain"]
    assert pairs.filter(pl.col("prompt_id") == "mixed").select("chosen_id", "rejected_id").row(0) == ("mixed-c2", "mixed-c0")
    margins = dropped.filter(pl.col("reason") == "no_check_margin").sort("prompt_id")
    assert margins["prompt_id"].to_list() == ["all_fail", "all_pass"]
    assert margins["detail"].to_list() == ["every candidate that ended passes 0.0 of its constraints",
                                          "every candidate that ended passes 1.0 of its constraints"]

    # Paid work only where it can change a label: the candidates of all_fail and all_pass are never judged, and their
    # prompts are still dropped for the right reason, with no candidate reported as unscored.
    judged = to_judge(candidates, checks, CHECKS_MARGIN)
    assert sorted(set(judged["prompt_id"])) == ["mixed", "plain"]
    assert to_judge(candidates, checks, CHECKS_FIRST).height == candidates.height
    _, pairs_unjudged, dropped_unjudged = build_labels(prompts, candidates, judgments.join(judged.select("candidate_id"), on="candidate_id"),
                                                       checks, CHECKS_MARGIN)
    assert pairs_unjudged.equals(pairs)
    assert dropped_unjudged.sort("prompt_id", "reason").equals(dropped.sort("prompt_id", "reason"))
    assert dropped_unjudged.filter(pl.col("level") == "candidate").height == 0


def test_checks_margin_never_labels_an_answer_cut_at_the_length_limit():
    """A trainer closes every answer with an end-of-turn token: a cut answer would teach the model not to end."""
    prompts, candidates, judgments, checks = labelled_tables({
        "cut": [(PASSING, [5]), (FAILING, [1]), (FAILING, [2])],  # c0 passes but was cut: c1 and c2 both fail
        "kept": [(PASSING, [1]), (FAILING, [5]), (FAILING, [2])],  # c2 was cut: c0 over c1
        "all_cut": [(PASSING, [1]), (FAILING, [5])],
    })
    cut = pl.col("candidate_id").is_in(["cut-c0", "kept-c2", "all_cut-c0", "all_cut-c1"])
    candidates = candidates.with_columns(pl.when(cut).then(pl.lit("length")).otherwise(pl.col("finish_reason")).alias("finish_reason"))
    _, pairs, dropped = build_labels(prompts, candidates, judgments, checks, CHECKS_MARGIN)
    assert pairs.select("prompt_id", "chosen_id", "rejected_id").rows() == [("kept", "kept-c0", "kept-c1")]
    margins = dropped.filter(pl.col("reason") == "no_check_margin").sort("prompt_id")
    assert margins.select("prompt_id", "detail").rows() == [("all_cut", "every candidate was cut at the length limit"),
                                                             ("cut", "every candidate that ended passes 0.0 of its constraints")]
    assert sorted(dropped.filter(pl.col("reason") == "cut_at_length_limit")["candidate_id"]) == ["all_cut-c0", "all_cut-c1", "cut-c0", "kept-c2"]
    judged = to_judge(candidates, checks, CHECKS_MARGIN)  # only the ended answers of the one prompt they can order
    assert judged["candidate_id"].to_list() == ["kept-c0", "kept-c1"]
    _, first, _ = build_labels(prompts, candidates, judgments, checks, CHECKS_FIRST)  # checks_first is unchanged
    assert first.filter(pl.col("prompt_id") == "cut")["chosen_id"].to_list() == ["cut-c0"]


def test_checks_margin_ended_rejects_a_cut_answer_but_never_chooses_one():
    """Ending within the length limit counts after the constraints: a cut answer may be rejected, never chosen."""
    prompts, candidates, judgments, checks = labelled_tables({
        "cut": [(PASSING, [5]), (FAILING, [1]), (FAILING, [2])],  # c0 passes but was cut: no ended answer passes more
        "same": [(FAILING, [1]), (FAILING, [5]), (FAILING, [2])],  # all fail; c1 was cut: c2 ended, over c1
        "kept": [(PASSING, [1]), (FAILING, [5]), (FAILING, [2])],  # c2 was cut: it fails and ranks below c1, so c0 over c2
        "all_cut": [(PASSING, [1]), (FAILING, [5])],
        "plain": [(FAILING, [2]), (PASSING, [4]), (PASSING, [1])],  # no constraint: as checks_margin, c2 cut is no label
    })
    checks = checks.filter(pl.col("prompt_id") != "plain")
    cut = pl.col("candidate_id").is_in(["cut-c0", "same-c1", "kept-c2", "all_cut-c0", "all_cut-c1", "plain-c2"])
    candidates = candidates.with_columns(pl.when(cut).then(pl.lit("length")).otherwise(pl.col("finish_reason")).alias("finish_reason"))
    _, pairs, dropped = build_labels(prompts, candidates, judgments, checks, CHECKS_MARGIN_ENDED)
    assert pairs.select("prompt_id", "chosen_id", "rejected_id").sort("prompt_id").rows() == [
        ("kept", "kept-c0", "kept-c2"), ("plain", "plain-c1", "plain-c0"), ("same", "same-c2", "same-c1")]
    margins = dropped.filter(pl.col("reason") == "no_check_margin").sort("prompt_id")
    assert margins.select("prompt_id", "detail").rows() == [("all_cut", "every candidate was cut at the length limit"),
                                                             ("cut", "every candidate that ended passes 0.0 of its constraints")]
    assert dropped.filter(pl.col("reason") == "cut_at_length_limit")["candidate_id"].to_list() == ["plain-c2"]
    judged = to_judge(candidates, checks, CHECKS_MARGIN_ENDED)  # the cut answers of "same" and "kept" may be rejected
    assert sorted(judged["candidate_id"]) == ["kept-c0", "kept-c1", "kept-c2", "plain-c0", "plain-c1",
                                              "same-c0", "same-c1", "same-c2"]
    _, pairs_unjudged, _ = build_labels(prompts, candidates, judgments.join(judged.select("candidate_id"), on="candidate_id"),
                                        checks, CHECKS_MARGIN_ENDED)
    assert pairs_unjudged.equals(pairs)
    _, many, _ = build_labels(prompts, candidates, judgments, checks, CHECKS_MARGIN_ENDED, pairs_per_prompt=100)
    chosen = many.join(candidates.select(pl.col("candidate_id").alias("chosen_id"), "finish_reason"), on="chosen_id")
    assert (chosen["finish_reason"] != "length").all()  # whatever K, a cut answer is never chosen
    assert many.filter(pl.col("prompt_id") == "kept").select("chosen_id", "rejected_id").rows() == [
        ("kept-c0", "kept-c2"), ("kept-c0", "kept-c1"), ("kept-c1", "kept-c2")]


def test_pairs_per_prompt_adds_the_pairs_nearest_to_best_against_worst():
    prompts, candidates, judgments, checks = labelled_tables({
        "mixed": [(PASSING, [4]), (FAILING, [5]), (PASSING, [2]), (FAILING, [1]), (FAILING, [3])],
        "all_fail": [(FAILING, [5]), (FAILING, [1])],
    })
    _, one, _ = build_labels(prompts, candidates, judgments, checks, CHECKS_MARGIN)
    _, four, dropped = build_labels(prompts, candidates, judgments, checks, CHECKS_MARGIN, pairs_per_prompt=4)
    # chosen-first: c0 (passes, 4), c2 (passes, 2), then the failing ones; rejected-first: c3 (1), c4 (3), c1 (5)
    assert four.select("chosen_id", "rejected_id").rows() == [("mixed-c0", "mixed-c3"), ("mixed-c0", "mixed-c4"),
                                                               ("mixed-c2", "mixed-c3"), ("mixed-c0", "mixed-c1")]
    assert four.head(1).equals(one)
    assert four["chosen_passed"].all() and not four["rejected_passed"].any()  # never a pair the verifiers cannot order
    assert dropped.filter(pl.col("level") == "prompt")["prompt_id"].to_list() == ["all_fail"]
    _, many, _ = build_labels(prompts, candidates, judgments, checks, CHECKS_MARGIN, pairs_per_prompt=100)
    assert many.height == 2 * 3 and many["pair_id"].n_unique() == 6  # every passing answer against every failing one, once


def test_pairs_per_prompt_under_the_judge_alone():
    prompts, candidates, judgments, _ = labelled_tables({"a": [(PASSING, [5]), (PASSING, [4]), (PASSING, [4]), (PASSING, [1])],
                                                          "tie": [(PASSING, [3]), (PASSING, [3])]})
    _, pairs, dropped = build_labels(prompts, candidates, judgments, None, JUDGE_ONLY, pairs_per_prompt=6)
    # c1 and c2 average the same: neither is ever chosen over the other; a tied prompt stays a tie
    assert pairs.select("chosen_id", "rejected_id").rows() == [("a-c0", "a-c3"), ("a-c0", "a-c1"), ("a-c1", "a-c3"),
                                                               ("a-c0", "a-c2"), ("a-c2", "a-c3")]
    assert (pairs["score_margin"] > 0).all()
    assert dropped["reason"].to_list() == ["tie"]


def test_label_quality_classes():
    pairs = pl.DataFrame({"chosen_passed": [True, True, False, False, None], "rejected_passed": [False, True, False, True, None]})
    quality = label_quality(pairs)
    assert quality["verified_pairs"] == 4
    assert quality["counts"] == {"chosen_passes_rejected_fails": 1, "both_pass": 1, "both_fail": 1, "reversed": 1}
    assert label_quality(pl.DataFrame({"chosen_id": ["x"]})) == {"verified_pairs": 0}
    partial = pairs.with_columns(pl.Series("chosen_check_share", [1.0, 1.0, 0.5, 0.0, None]),
                                 pl.Series("rejected_check_share", [0.0, 1.0, 0.0, 1.0, None]))
    quality = label_quality(partial)
    assert quality["both_fail_chosen_passes_more"] == 1  # both fail, but the chosen passes one constraint of two
    assert "both fail: 25.0% (1; in 1 of them the chosen passes more of its constraints, in 0 as many)" in describe_label_quality(quality | {"basis": "verifiers"})


def verifiable_prompts(path, words: int = 6):
    """Prompts the tiny model half follows: its answers run to 4–9 words, and the constraint allows 6 (its short
    answers are 4 or 5 words: 4 splits them)."""
    rows = [{"prompt": f"Name thing number {i}. Use at most {words} words.",
             "constraints": json.dumps([{"kind": "max_words", "params": {"n": words}}])} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


FAST = ["--n-judgments", "2", "--max-new-tokens", "16", "--judge-max-new-tokens", "24", "--batch-size", "8"]


def test_eval_judge_end_to_end(tiny_model, tmp_path):
    store = tmp_path / "store"
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text('{"prompt": "Say hi.", "chosen": "Hi there!", "rejected": "no"}\n'
                          '{"prompt": "Say hi.", "chosen": "Hello!", "rejected": ""}\n')
    args = ["eval", "judge", "--judge", tiny_model, "--prompts", verifiable_prompts(tmp_path / "v.jsonl"), "--pairs", pairs_file,
            "--n-samples", "4", *FAST, "--store", store]
    result = run_builder(*args, check=True)
    vid = result.stdout.strip().splitlines()[-1]
    assert vid.startswith("judge-")
    assert "judge accuracy on pairs of known order" in result.stdout and "judgments parsed" in result.stderr + result.stdout
    version = store / vid
    manifest = json.loads((version / "manifest.json").read_text())
    stats = manifest["stats"]
    assert set(stats["sources"]) == {"verifiable", "pairs"}
    assert stats["sources"]["pairs"]["pairs"] == 2  # a prompt with two labelled pairs keeps both
    v = stats["sources"]["verifiable"]
    assert v["pairs"] == v["judged_pairs"] + v["unscored_pairs"] and v["correct"] + v["ties"] + v["wrong"] == v["judged_pairs"]
    if v["judged_pairs"]:
        assert v["low"] <= v["accuracy"] <= v["high"] and v["low"] < v["high"]
    assert 0 <= stats["parse_rate"] <= 1 and stats["score_histogram"]
    assert stats["verifiable"]["answers"] == 16
    checks = pl.read_parquet(version / "checks.parquet")
    assert checks.height == 16 and set(checks["kind"]) == {"max_words"}
    pairs = pl.read_parquet(version / "judged_pairs.parquet")
    assert pairs.height == v["pairs"] + 2 and set(pairs["outcome"]) <= {"correct", "tie", "wrong", "unscored"}
    assert "## Accuracy (Wilson 95% intervals)" in (version / "README.md").read_text()
    shown = run_builder("show", vid, "--store", store, check=True).stdout
    assert "judge accuracy" in shown and "verifiable" in shown
    listed = run_builder("ls", "--store", store, check=True).stdout
    assert "judge accuracy" in listed
    again = run_builder(*args)
    assert again.returncode == 0 and "already built" in again.stderr + again.stdout

    # the labels of a pairs version made by this judge, on prompts without constraints, cite this measurement
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"prompt": "Say hello."}\n{"prompt": "Name a fruit."}\n')
    built = run_builder("make-pairs", "--model", tiny_model, "--prompts", plain, "--n-samples", "2", *FAST, "--store", store, check=True)
    pairs_id = built.stdout.strip().splitlines()[-1]
    quality = json.loads((store / pairs_id / "manifest.json").read_text())["stats"]["label_quality"]
    assert quality["basis"] == "judge_measurement" and quality["version"] == vid
    assert "last measured accuracy" in (store / pairs_id / "README.md").read_text() or quality["accuracy"] is None


def test_eval_judge_refuses_prompts_without_constraints(tmp_path):
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"prompt": "Say hello."}\n')
    result = run_builder("eval", "judge", "--prompts", plain, "--store", tmp_path / "store")
    assert result.returncode == 2 and "no prompt carries constraints" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_make_pairs_verify_writes_checks_and_changes_only_its_own_identity(tiny_model, tmp_path):
    store = tmp_path / "store"
    prompts = verifiable_prompts(tmp_path / "v.jsonl")
    common = ["make-pairs", "--model", tiny_model, "--prompts", prompts, "--n-samples", "4", *FAST, "--store", store]
    plain = run_builder(*common, check=True).stdout.strip().splitlines()[-1]
    verified = run_builder(*common, "--verify", check=True).stdout.strip().splitlines()[-1]
    assert plain != verified
    plain_m, verified_m = (json.loads((store / v / "manifest.json").read_text()) for v in (plain, verified))
    assert "labels" not in plain_m["identity"] and verified_m["identity"]["labels"] == {"rule": "checks_first"}
    assert verified_m["extra"]["labels"]["rule"] == "checks_first" and plain_m["extra"]["labels"]["rule"] == "judge_only"
    checks = pl.read_parquet(store / verified / "checks.parquet")
    assert checks.height == 16 and checks.columns[:5] == ["candidate_id", "prompt_id", "constraint_index", "kind", "params"]
    pairs = pl.read_parquet(store / verified / "pairs.parquet")
    candidates = pl.read_parquet(store / verified / "candidates.parquet")
    passing = candidates.filter(pl.col("passed") & pl.col("score_mean").is_not_null()).group_by("prompt_id").len()
    assert pairs.join(passing, on="prompt_id").filter(~pl.col("chosen_passed")).height == 0
    quality = verified_m["stats"]["label_quality"]
    assert quality["basis"] == "verifiers" and quality["verified_pairs"] == pairs.height
    assert "## Label quality" in (store / verified / "README.md").read_text()
    assert "label quality" in run_builder("show", verified, "--store", store, check=True).stdout
    split = verifiable_prompts(tmp_path / "v4.jsonl", words=4)
    margin = run_builder(*common, "--verify", "--verify-rule", "checks_margin", "--prompts", split, check=True).stdout.strip().splitlines()[-1]
    margin_m = json.loads((store / margin / "manifest.json").read_text())
    assert margin_m["identity"]["labels"] == {"rule": "checks_margin"} and margin_m["extra"]["labels"]["rule"] == "checks_margin"
    margin_pairs = pl.read_parquet(store / margin / "pairs.parquet")
    assert margin_pairs.height > 0 and margin_pairs.filter(~pl.col("chosen_passed") | pl.col("rejected_passed")).height == 0
    assert margin_m["stats"]["label_quality"]["counts"]["both_fail"] == 0 == margin_m["stats"]["label_quality"]["both_fail_chosen_passes_more"]
    assert (margin_pairs["chosen_check_share"] > margin_pairs["rejected_check_share"]).all()
    more = run_builder(*common, "--verify", "--verify-rule", "checks_margin", "--pairs-per-prompt", "3", "--prompts", split,
                       check=True).stdout.strip().splitlines()[-1]
    more_m = json.loads((store / more / "manifest.json").read_text())
    assert more != margin and more_m["identity"]["pairs_per_prompt"] == 3 == more_m["extra"]["labels"]["pairs_per_prompt"]
    more_pairs = pl.read_parquet(store / more / "pairs.parquet")
    assert more_pairs.height >= margin_pairs.height and more_pairs.group_by("prompt_id").len()["len"].max() <= 3
    assert (more_pairs["chosen_check_share"] > more_pairs["rejected_check_share"]).all()
    assert more_m["stats"]["judgments_parsed"] == margin_m["stats"]["judgments_parsed"]  # the same judgments: no new paid work
    ended = run_builder(*common, "--verify", "--verify-rule", "checks_margin_ended", "--prompts", split, check=True).stdout.strip().splitlines()[-1]
    ended_m = json.loads((store / ended / "manifest.json").read_text())
    assert ended_m["identity"]["labels"] == {"rule": "checks_margin_ended"} == {"rule": ended_m["extra"]["labels"]["rule"]}
    ended_pairs = pl.read_parquet(store / ended / "pairs.parquet")
    finished = pl.read_parquet(store / ended / "candidates.parquet").select(pl.col("candidate_id").alias("chosen_id"), "finish_reason")
    assert ended_pairs.height >= margin_pairs.height and (ended_pairs["chosen_check_share"] >= ended_pairs["rejected_check_share"]).all()
    assert (ended_pairs.join(finished, on="chosen_id")["finish_reason"] != "length").all()  # a cut answer is never chosen
    refused = run_builder(*common, "--verify-rule", "checks_margin")
    assert refused.returncode == 2 and refused.stderr.strip() == "Error: --verify-rule checks_margin needs --verify"


def test_a_judge_gate_stops_a_recipe(tiny_model, tmp_path):
    """One prompt, three answers: at most two pass/fail pairs, whose 95% interval always includes 0.5, so the
    gate in front of M2's make-pairs must stop the recipe, after recording the measurement in M1's lineage."""
    import yaml

    one_step = {"max_steps": 1, "batch_size": 2, "micro_batch_size": 2, "max_length": 256, "save_steps": 1}
    prompts = verifiable_prompts(tmp_path / "v.jsonl")
    recipe = {
        "name": "gated", "base": str(tiny_model), "generation": {"batch_size": 8, "dtype": "float32"},
        "sft": {"name": "M1", **one_step},
        "judge_gate": {"prompts": str(prompts), "limit": 1, "n_samples": 3, "n_judgments": 1, "max_new_tokens": 16,
                       "judge_max_new_tokens": 24, "action": "stop"},
        "iteration": {"make_pairs": {"n_samples": 2, "n_judgments": 1, "max_new_tokens": 8, "judge_max_new_tokens": 16}, "dpo": one_step},
        "iterations": [{"name": "M2", "prompts": str(prompts)}],
    }
    path = tmp_path / "gated.yaml"
    path.write_text(yaml.safe_dump(recipe))
    store = tmp_path / "store"
    plan = run_builder("run", path, "--dry-run", "--store", store, check=True).stdout
    assert "M2 judge gate" in plan and plan.index("M2 judge gate") < plan.index("M2 make-pairs")

    result = run_builder("run", path, "--store", store)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "judge gate (M2 judge gate): judge M1" in last and "recipe stopped" in last
    assert not (store / "models" / "M2").exists()
    lineage = json.loads((store / "models" / "M1" / "lineage.json").read_text())
    (measured,) = lineage["judge_measurements"]
    assert measured["version"].startswith("judge-") and (measured["accuracy"] is None or measured["chance_in_interval"])
    assert "judge accuracy" in run_builder("models", "--store", store, check=True).stdout
    record = json.loads(next((store / "runs").glob("gated-*.json")).read_text())
    assert "recipe stopped" in record["steps"][-1]["stopped"]

    recipe["judge_gate"]["action"] = "maybe"
    path.write_text(yaml.safe_dump(recipe))
    bad = run_builder("run", path, "--store", store)
    assert bad.returncode == 2 and "judge_gate.action: expected one of stop, warn" in bad.stderr


@pytest.mark.parametrize("name", ["verifiable", "gpu-small"])
def test_the_verifiable_recipes_validate(name, tmp_path):
    from pathlib import Path

    recipe = Path(__file__).resolve().parent.parent / "recipes" / f"{name}.yaml"
    plan = run_builder("run", recipe, "--dry-run", "--store", tmp_path / "store", check=True).stdout
    for step in ("M1 make-verifiable", "M2 judge gate", "M2 make-pairs", "M3 judge gate", "M3 train dpo", "eval follow"):
        assert step in plan
    assert "verify_rule=checks_margin" in plan and "train sft" not in plan and not (tmp_path / "store").exists()
