import hashlib
from itertools import combinations

import pytest

from builder.judging import instructions
from builder.judging.constraints import KINDS, Constraint, from_json
from builder.judging.instructions import (
    CONFLICTS,
    EXCLUSIVE_GROUPS,
    INCOMPATIBLE,
    compatible,
    compose,
    instruction_id,
    load_tasks,
    split,
)


@pytest.fixture(scope="module")
def tasks() -> list[str]:
    return load_tasks()


@pytest.fixture(scope="module")
def many(tasks) -> list[dict]:
    return compose(tasks, 2000, seed=11)


def kinds_of(row: dict) -> list[str]:
    return [c.kind for c in from_json(row["constraints"])]


def test_shipped_tasks(tasks):
    assert len(tasks) >= 150
    assert len(set(tasks)) == len(tasks)
    assert all(task == task.strip() and task[-1] in ".?!\"" for task in tasks)


def test_rows_have_the_documented_columns(many):
    assert len(many) == 2000
    for row in many[:50]:
        assert set(row) == {"prompt", "task", "constraints", "instruction_id"}
        constraints = from_json(row["constraints"])
        assert row["prompt"].startswith(row["task"])
        assert all(c.describe() in row["prompt"] for c in constraints)


def test_composition_is_deterministic_for_a_seed(tasks):
    assert compose(tasks, 300, seed=5) == compose(tasks, 300, seed=5)
    assert compose(tasks, 300, seed=5) != compose(tasks, 300, seed=6)


def test_constraint_counts_stay_within_bounds(tasks):
    for low, high in [(1, 1), (1, 3), (2, 4)]:
        counts = {len(kinds_of(row)) for row in compose(tasks, 300, seed=3, min_constraints=low, max_constraints=high)}
        assert counts == set(range(low, high + 1))


def test_no_conflicts_in_2000_instructions(many):
    for row in many:
        kinds = kinds_of(row)
        assert len(set(kinds)) == len(kinds), kinds
        for a, b in combinations(kinds, 2):
            assert frozenset((a, b)) not in CONFLICTS, (a, b)


@pytest.mark.parametrize(("a", "b"), [("all_lowercase", "all_uppercase"), ("json_format", "bullet_count"),
                                      ("min_words", "max_words"), ("starts_with", "quoted"),
                                      ("ends_with", "end_punctuation"), ("no_digits", "numbered_items")])
def test_known_contradictions_are_declared(a, b):
    assert not compatible(a, b) and not compatible(b, a)


def test_conflicts_name_only_known_kinds():
    named = {k for group in EXCLUSIVE_GROUPS for k in group} | set(INCOMPATIBLE)
    named |= {k for others in INCOMPATIBLE.values() for k in others}
    assert named <= set(KINDS)
    assert all(len(pair) == 2 for pair in CONFLICTS)


def test_every_kind_appears_when_composing_many(many):
    assert {kind for row in many for kind in kinds_of(row)} == set(KINDS)


def test_ids_are_stable_content_hashes(tasks, many):
    assert instruction_id("Write a haiku.") == hashlib.sha256(b"Write a haiku.").hexdigest()[:16]
    assert instruction_id("Write a haiku.") == "4a85c0ccd31aff09"
    assert all(row["instruction_id"] == instruction_id(row["prompt"]) for row in many)
    assert len({row["instruction_id"] for row in many}) == len(many)
    again = compose(tasks, 2000, seed=11)
    assert [row["instruction_id"] for row in again] == [row["instruction_id"] for row in many]


def test_split_is_disjoint_by_task(tasks, many):
    train, evaluation = split(many, eval_share=0.2, seed=0)
    assert len(train) + len(evaluation) == len(many)
    assert not {row["task"] for row in train} & {row["task"] for row in evaluation}
    eval_tasks = {row["task"] for row in evaluation}
    assert 0.1 < len(eval_tasks) / len(tasks) < 0.3
    assert split(many, eval_share=0.2, seed=0) == (train, evaluation)
    assert split(many, eval_share=0.2, seed=1) != (train, evaluation)


def test_split_keeps_a_task_on_its_side_across_compositions(tasks):
    first = {row["task"] for row in split(compose(tasks, 400, seed=1), seed=0)[1]}
    second = {row["task"] for row in split(compose(tasks, 400, seed=2), seed=0)[0]}
    assert not first & second


def test_split_extremes(many):
    assert split(many, eval_share=0.0) == (many, [])
    assert split(many, eval_share=1.0) == ([], many)


def test_too_few_tasks_give_fewer_distinct_prompts_without_looping_forever(monkeypatch):
    monkeypatch.setattr(instructions, "KINDS", ("title", "quoted"))  # two possible prompts, no parameters
    rows = compose(["Say hello."], 50, seed=0, min_constraints=1, max_constraints=1)
    assert sorted(row["prompt"] for row in rows) == sorted(
        f"Say hello. {Constraint(kind, {}).describe()}" for kind in ("title", "quoted"))


@pytest.mark.parametrize(("tasks_", "low", "high"), [([], 1, 3), (["Say hello."], 0, 2), (["Say hello."], 3, 2)])
def test_compose_rejects_bad_arguments(tasks_, low, high):
    with pytest.raises(ValueError):
        compose(tasks_, 10, seed=0, min_constraints=low, max_constraints=high)
