"""The labelling rules, on hand-made tables whose answers are worked out by hand."""

import polars as pl

from builder.core.schemas import CANDIDATES_SCHEMA, JUDGMENTS_SCHEMA, PROMPTS_SCHEMA
from builder.stages.aggregate import build_labels


def tables(scores: dict[str, list[list[float | None]]]):
    """scores[prompt_id][candidate][judgment] -> (prompts, candidates, judgments); None = unparsed."""
    prompts = pl.DataFrame(
        [{"prompt_id": p, "prompt": p, "messages": [{"role": "user", "content": p}], "source": "t", "source_row": i, "source_id": None}
         for i, p in enumerate(scores)],
        schema=PROMPTS_SCHEMA,
    )
    candidates, judgments = [], []
    for p, per_candidate in scores.items():
        for c, judged in enumerate(per_candidate):
            cid = f"{p}-c{c}"
            candidates.append({"candidate_id": cid, "prompt_id": p, "sample_index": c, "response": f"answer {cid}",
                               "finish_reason": "stop", "n_tokens": 10 * (c + 1), "request_key": "k"})
            for j, s in enumerate(judged):
                judgments.append({"judgment_id": f"{cid}-j{j}", "candidate_id": cid, "prompt_id": p, "sample_index": j,
                                  "raw": "", "rationale": "", "score": s, "parse_error": None if s is not None else "no_final_score_line",
                                  "finish_reason": "stop", "n_tokens": 5, "request_key": "k"})
    return prompts, pl.DataFrame(candidates, schema=CANDIDATES_SCHEMA), pl.DataFrame(judgments, schema=JUDGMENTS_SCHEMA)


def test_chosen_is_highest_mean_rejected_lowest():
    scored, pairs, dropped = build_labels(*tables({"a": [[3, 4, 4], [1, 2, 2], [4, 4, 4], [2, 2, 2]]}))
    row = pairs.row(0, named=True)
    assert (row["chosen_id"], row["rejected_id"]) == ("a-c2", "a-c1")
    assert row["score_chosen"] == 4.0 and abs(row["score_rejected"] - 5 / 3) < 1e-12
    assert row["prompt"] == [{"role": "user", "content": "a"}]
    assert row["chosen"] == [{"role": "assistant", "content": "answer a-c2"}]
    assert dropped.height == 0


def test_unparsed_judgments_are_absent_not_zero():
    # c0: one parse failure, mean of the rest is 5; c1 never parses and is no label.
    scored, pairs, dropped = build_labels(*tables({"a": [[None, 5, 5], [None, None, None], [1, 1, 1], [2, None, 2]]}))
    assert pairs["chosen_id"].to_list() == ["a-c0"] and pairs["rejected_id"].to_list() == ["a-c2"]
    reasons = dict(dropped.group_by("reason").len().iter_rows())
    assert reasons == {"unparsed_judgment": 5, "no_parsed_score": 1}
    assert scored.filter(pl.col("candidate_id") == "a-c1")["n_scored"].item() == 0


def test_ties_and_too_few_scored_are_dropped_with_reasons():
    _, pairs, dropped = build_labels(*tables({
        "tie": [[3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        "one": [[4, 4, 4], [None, None, None], [None, None, None], [None, None, None]],
        "ok": [[1, 1, 1], [5, 5, 5], [None, None, None], [3, 3, 3]],
    }))
    assert pairs["prompt_id"].to_list() == ["ok"]
    prompt_drops = dropped.filter(pl.col("level") == "prompt").sort("prompt_id")
    assert prompt_drops.select("prompt_id", "reason").rows() == [("one", "too_few_scored"), ("tie", "tie")]


def test_first_highest_wins_a_tie_for_first_place():
    _, pairs, _ = build_labels(*tables({"a": [[2, 2, 2], [4, 4, 4], [4, 4, 4], [2, 2, 2]]}))
    assert (pairs["chosen_id"].item(), pairs["rejected_id"].item()) == ("a-c1", "a-c0")
