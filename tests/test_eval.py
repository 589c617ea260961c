"""Evaluators through the real CLI, on the tiny model: head-to-head, reward-model metrics, judge health."""

import json

import polars as pl
import pytest
from conftest import run_builder

from builder.core.records import Completion, Sampling
from builder.core.store import Store
from builder.judging.pairwise import load_pairwise_template
from evaluators.head_to_head import judge_pairs, summarise

PROMPTS = ["Name thing number 1.", "Say hello.", "Name a fruit.", "Name thing number 2."]
FAST = ["--max-new-tokens", "16", "--judge-max-new-tokens", "24", "--batch-size", "4"]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-inputs")
    return {
        "prompts": write_jsonl(folder / "prompts.jsonl", [{"prompt": p} for p in PROMPTS]),
        "a": write_jsonl(folder / "a.jsonl", [{"prompt": p, "response": f"It is a lamp, {i}."} for i, p in enumerate(PROMPTS)]),
        "b": write_jsonl(folder / "b.jsonl", [{"prompt": p, "response": "A stone."} for p in PROMPTS]),
        "short": write_jsonl(folder / "short.jsonl", [{"prompt": p, "response": "A stone."} for p in PROMPTS[:2]]),
        "ranked": write_jsonl(folder / "ranked.jsonl", [
            {"prompt": "Name a fruit.", "responses": ["It is an apple.", "A stone.", "Hello."], "ranks": [1, 2, 3]},
            {"prompt": "Say hello.", "responses": ["Hello.", "It is a lamp."], "ranks": [1, 2]},
            {"prompt": "Name thing number 3.", "responses": ["It is a comet.", "It is a river.", "No."], "ranks": [1, 1, 2]},
        ]),
        "single": write_jsonl(folder / "single.jsonl", [{"prompt": "Say hello.", "responses": ["Hello."], "ranks": [1]}]),
    }


@pytest.fixture(scope="module")
def h2h(tiny_model, files, tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    # free text: the tiny judge was never taught the verdict format, which is what these tests need (guided: test_judge_constraint)
    args = ["eval", "head-to-head", "--a", tiny_model, "--b", tiny_model, "--a-temperature", "1.0", "--judge", tiny_model,
            "--prompts", files["prompts"], "--store", store, *FAST, "--judge-constraint", "off"]
    result = run_builder(*args, check=True)
    return store, result.stdout.strip().splitlines()[-1], result, args


def test_head_to_head_writes_the_verdict_dataset(h2h):
    store, version, result, _ = h2h
    folder = store / version
    assert version.startswith("h2h-")
    names = {p.name for p in folder.iterdir()}
    assert {"verdicts.parquet", "summary.parquet", "answers.parquet", "prompts.parquet", "README.md", "manifest.json", "outcomes.png"} <= names
    verdicts = pl.read_parquet(folder / "verdicts.parquet")
    assert verdicts.height == len(PROMPTS)
    assert {"prompt", "answer_a", "answer_b", "raw_ab", "raw_ba", "verdict_ab", "verdict_ba", "outcome"} <= set(verdicts.columns)
    assert verdicts["a"][0].endswith(" T=1") and verdicts["b"][0].endswith(" T=0.7"), "one model, two temperatures, two names"
    # the tiny judge was never taught the verdict format: every pair is unparsed, none is a win, tie or loss
    assert verdicts["raw_ab"].str.len_chars().min() > 0
    assert (verdicts["outcome"] == "unparsed").all() and verdicts["verdict_ab"].is_null().all()
    [summary] = json.loads((folder / "manifest.json").read_text())["stats"]["matches"]
    assert (summary["decided"], summary["unparsed"], summary["win_rate"]) == (0, len(PROMPTS), None)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sampling"]["judgments"]["temperature"] == 0.0, "greedy judging by default"
    assert [c["sampling"]["temperature"] for c in manifest["extra"]["contestants"]] == [1.0, 0.7]
    assert "outcomes.png" in manifest["files"] and "![win / tie / loss per match](outcomes.png)" in (folder / "README.md").read_text()
    assert version in result.stdout and "4 of 4 pairs unparsed" in result.stderr.replace("\n", " ")


def test_head_to_head_rerun_and_resume_reuse_the_cache(h2h):
    store, version, _, args = h2h
    again = run_builder(*args, check=True)
    assert again.stdout.strip().splitlines()[-1] == version and "already built" in again.stderr
    # a run that stopped before writing its version finds every answer and judgment in the generation cache
    shards = sorted((store / ".cache" / "generations").glob("*/*.parquet"))
    before = pl.read_parquet(store / version / "verdicts.parquet")
    for path in [store / version, *(store / version).iterdir()]:
        path.chmod(0o755)
    for path in (store / version).iterdir():
        path.unlink()
    (store / version).rmdir()
    resumed = run_builder(*args, check=True)
    assert resumed.stdout.strip().splitlines()[-1] == version
    assert sorted((store / ".cache" / "generations").glob("*/*.parquet")) == shards, "nothing generated twice"
    assert pl.read_parquet(store / version / "verdicts.parquet").equals(before)


def test_show_and_health_on_a_verdict_version(h2h):
    store, version, _, _ = h2h
    shown = run_builder("show", version, "--store", store, check=True)
    assert "head-to-head" in shown.stdout and "checksums ok" in shown.stdout
    assert run_builder("verify", version, "--store", store).returncode == 0  # the id comes back from the manifest
    health = run_builder("health", version, "--store", store, "--format", "json", check=True)
    numbers = json.loads(health.stdout)
    assert numbers["kind"] == "h2h" and numbers["parse_failure_rate"] == 1.0
    assert numbers["verdict_histogram"] == {"unparsed": 2 * len(PROMPTS)}
    queried = run_builder("query", "--store", store, "--format", "json", "SELECT version, count(*) AS n FROM verdicts GROUP BY version", check=True)
    assert json.loads(queried.stdout) == {"version": version, "n": len(PROMPTS)}


def test_answers_from_files_in_baseline_mode(tiny_model, files, tmp_path):
    result = run_builder("eval", "head-to-head", "--a", files["a"], "--a", files["short"], "--b", files["b"],
                         "--judge", tiny_model, "--store", tmp_path, *FAST)
    # short.jsonl answers only two of b's four prompts: it does not align
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "answers do not align" in result.stderr
    built = run_builder("eval", "head-to-head", "--a", files["a"], "--a", files["short"], "--b", files["b"],
                        "--prompts", files["short"], "--judge", tiny_model, "--store", tmp_path, *FAST, check=True)
    verdicts = pl.read_parquet(tmp_path / built.stdout.strip().splitlines()[-1] / "verdicts.parquet")
    assert verdicts.group_by("match").len().sort("match").rows() == [("a.jsonl vs b.jsonl", 2), ("short.jsonl vs b.jsonl", 2)]
    assert verdicts.filter(pl.col("a") == "a.jsonl")["answer_a"].to_list() == ["It is a lamp, 0.", "It is a lamp, 1."]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--a", "/no/such/model", "--b", "TINY"], "unknown model"),
        (["--a", "x", "--a", "y", "--b", "p", "--b", "q", "--b", "r"], "give one --b"),
        (["--a", "TINY", "--b", "TINY"], "cannot play itself"),
        (["--a", "m", "--b", "n", "--judge-temperature", "-1"], "must not be negative"),
    ],
)
def test_head_to_head_bad_input(args, expected, tiny_model, tmp_path):
    args = [tiny_model if a == "TINY" else a for a in args]
    result = run_builder("eval", "head-to-head", *args, "--judge", tiny_model, "--store", tmp_path)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr


class ScriptedJudge:
    """A Generator whose verdicts follow a rule, to check the order-swap arithmetic without a model."""

    identity = {"backend": "scripted"}

    def __init__(self, rule):
        self.rule = rule

    def generate(self, requests):
        return [[Completion(self.rule(r.messages[0]["content"]), "stop", 3)] * r.sampling.n for r in requests]


def scripted_verdicts(rule, tmp_path):
    pairs = pl.DataFrame({
        "match": "A vs B", "a": "A", "b": "B", "prompt_id": ["p0", "p1", "p2", "p3"], "prompt": ["q0", "q1", "q2", "q3"],
        "answer_a": ["long answer one", "x", "long answer two", "y"], "answer_b": ["b", "long b answer", "c", "d"],
        "len_a": [15, 1, 15, 1], "len_b": [1, 13, 1, 1],
    })
    verdicts = judge_pairs(ScriptedJudge(rule), load_pairwise_template(), pairs, Sampling(1, 0.0, 1.0, 32), 0, Store(tmp_path), 4)
    return verdicts, summarise(verdicts, ["A vs B"]).row(0, named=True)


def _shown(text, position):
    return text.split("<response_1>")[1].split("</response_1>")[0].strip() if position == 1 else text.split("<response_2>")[1].split("</response_2>")[0].strip()


def test_a_judge_that_always_picks_the_first_position_gives_only_ties(tmp_path):
    verdicts, summary = scripted_verdicts(lambda text: "Verdict: 1", tmp_path)
    assert verdicts["outcome"].to_list() == ["tie"] * 4
    assert (summary["tie_rate"], summary["position_flip_rate"], summary["first_position_win_rate"]) == (1.0, 1.0, 1.0)


def test_a_judge_that_prefers_the_longer_answer(tmp_path):
    def longer(text):
        first, second = _shown(text, 1), _shown(text, 2)
        return "Verdict: tie" if len(first) == len(second) else f"Verdict: {1 if len(first) > len(second) else 2}"

    verdicts, summary = scripted_verdicts(longer, tmp_path)
    assert verdicts["outcome"].to_list() == ["win", "loss", "win", "tie"]
    assert (summary["win_rate"], summary["tie_rate"], summary["loss_rate"]) == pytest.approx((0.5, 0.25, 0.25))
    assert summary["position_flip_rate"] == 0 and summary["first_position_win_rate"] == 0.5
    assert summary["longer_answer_won_rate"] == 1.0
    assert summary["win_low"] <= 0.5 <= summary["win_high"]
    assert summary["lc_slope"] > 0 and summary["lc_win_rate"] < summary["win_rate_ties_half"]


def test_an_unparsed_order_is_never_a_win(tmp_path):
    verdicts, summary = scripted_verdicts(lambda text: "Verdict: 1" if "long answer one" in _shown(text, 1) else "I like it.", tmp_path)
    assert verdicts["outcome"].to_list() == ["unparsed"] * 4
    assert (summary["decided"], summary["unparsed"], summary["win_rate"]) == (0, 4, None)


def test_reward_model_metrics_on_ranked_groups(tiny_model, files, tmp_path):
    result = run_builder("eval", "reward-model", "--model", tiny_model, "--ranked", files["ranked"], "-k", "2",
                         "--judge-max-new-tokens", "24", "--store", tmp_path, check=True)
    version = result.stdout.strip().splitlines()[-1]
    assert version.startswith("rm-") and "pairwise accuracy" in result.stdout
    folder = tmp_path / version
    groups = pl.read_parquet(folder / "groups.parquet")
    candidates = pl.read_parquet(folder / "candidates.parquet")
    assert groups.height == 3 and candidates.height == 8 and groups["pairs"].sum() == 3 + 1 + 2
    assert pl.read_parquet(folder / "judgments.parquet").height == 16
    stats = json.loads((folder / "manifest.json").read_text())["stats"]
    assert stats["groups"] == 3 and stats["pairs"] == 6
    assert stats["pairwise_accuracy"] == groups["pairs_agreeing"].sum() / 6
    card = (folder / "README.md").read_text()
    assert "pairwise accuracy" in card and "How ties count" in card and "scores.png" in card
    assert run_builder("show", version, "--store", tmp_path, check=True).stdout.count("pairwise accuracy") == 1


def test_reward_model_bad_input(tiny_model, files, tmp_path):
    single = run_builder("eval", "reward-model", "--model", tiny_model, "--ranked", files["single"], "--store", tmp_path)
    assert single.returncode == 2 and "at least two responses" in single.stderr and len(single.stderr.strip().splitlines()) == 1
    missing = run_builder("eval", "reward-model", "--model", tiny_model, "--ranked", files["prompts"], "--store", tmp_path)
    assert missing.returncode == 2 and "is not ranked data (missing column: responses, ranks)" in missing.stderr
    unknown = run_builder("eval", "reward-model", "--model", "/no/model", "--ranked", files["ranked"], "--store", tmp_path)
    assert unknown.returncode == 2 and "unknown model" in unknown.stderr


def test_health_of_a_make_pairs_version(tiny_model, files, tmp_path):
    built = run_builder("make-pairs", "--model", tiny_model, "--prompts", files["prompts"], "-n", "3", "-k", "2",
                        "--max-new-tokens", "16", "--judge-max-new-tokens", "32", "--store", tmp_path, check=True)
    version = built.stdout.strip().splitlines()[-1]
    health = json.loads(run_builder("health", version, "--store", tmp_path, "--format", "json", check=True).stdout)
    assert health["kind"] == "pairs" and health["judgments"] == 24
    assert {"score_histogram", "collapse", "length_score_spearman", "chosen_minus_rejected_tokens", "chosen_longer_rate"} <= set(health)
    assert sum(health["score_histogram"].values()) == health["judgments_parsed"]
    shown = run_builder("health", version, "--store", tmp_path, check=True).stdout
    assert "judge health" in shown and "length–score Spearman" in shown
    assert "judge health" in run_builder("show", version, "--store", tmp_path, check=True).stdout
    assert "## Judge health" in (tmp_path / version / "README.md").read_text()


def test_without_matplotlib_there_is_no_plot_and_no_error(monkeypatch):
    import sys

    from evaluators.plots import outcome_bars, score_histogram

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if it were not installed
    assert outcome_bars([]) is None and score_histogram({"5": 1}, "x") is None
