"""Instructions with verifiable constraints: a seed task plus one to a few constraint sentences.

`compose` draws constraint kinds at random (seeded) but never two that conflict; which kinds conflict is data
(`CONFLICTS`), and a kind appears at most once in an instruction. `split` keeps every variant of a task on
one side. Rows: `prompt` (task and constraint sentences), `task`, `constraints` (JSON text, see
`constraints.from_json`), `instruction_id` (first 16 hex digits of the prompt's sha256).
"""

import hashlib
import random
from collections.abc import Iterator
from importlib import resources
from itertools import combinations

from builder.judging.constraints import KINDS, Constraint, sample, to_json

# Kinds that pin down the same property (length, case, first or last characters, list style): at most one of
# each group in an instruction.
EXCLUSIVE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("min_words", "max_words", "words_between"),
    ("min_sentences", "max_sentences"),
    ("all_lowercase", "all_uppercase"),
    ("min_capital_words", "max_capital_words"),
    ("bullet_count", "numbered_items"),
    ("starts_with", "repeat_request", "quoted"),
    ("ends_with", "end_punctuation", "quoted"),
)

# kind → kinds it cannot share an instruction with: they contradict it, make it unsatisfiable for some
# parameters, or make its rule ambiguous (a title line is a paragraph of its own).
INCOMPATIBLE: dict[str, tuple[str, ...]] = {
    "json_format": ("title", "quoted", "postscript", "two_responses", "bullet_count", "numbered_items",
                    "section_count", "markdown_headings", "paragraph_count", "starts_with", "ends_with",
                    "end_punctuation", "repeat_request", "no_commas", "all_uppercase", "min_sentences",
                    "max_sentences", "max_sentence_words", "min_highlights"),
    "two_responses": ("paragraph_count", "bullet_count", "numbered_items", "section_count", "markdown_headings",
                      "postscript", "quoted", "starts_with", "ends_with", "repeat_request"),
    "paragraph_count": ("title", "postscript", "section_count", "markdown_headings"),
    # At most 6 to 10 sentences leave no room for 150 words, or for list items and headings (a line is a sentence).
    "max_sentences": ("min_words", "words_between", "bullet_count", "numbered_items", "section_count",
                      "markdown_headings"),
    "max_characters": ("min_words", "words_between", "repeat_request"),
    # The repeated request is the task's own text, which may hold commas, digits, capitals or forbidden words.
    "repeat_request": ("forbidden_words", "no_commas", "no_digits", "max_capital_words", "max_words",
                       "max_sentence_words", "max_sentences"),
    "no_digits": ("numbered_items", "section_count"),
    "section_count": ("all_lowercase", "all_uppercase", "max_capital_words"),
    "all_lowercase": ("starts_with", "ends_with", "postscript", "min_capital_words"),
    "all_uppercase": ("starts_with", "ends_with", "max_capital_words"),
    "ends_with": ("postscript",),
    # An opening quote would stand before the first list marker or heading, which must start its line.
    "quoted": ("bullet_count", "numbered_items", "section_count", "markdown_headings"),
}

CONFLICTS: frozenset[frozenset[str]] = frozenset(
    {frozenset(pair) for group in EXCLUSIVE_GROUPS for pair in combinations(group, 2)}
    | {frozenset((kind, other)) for kind, others in INCOMPATIBLE.items() for other in others}
)


def compatible(a: str, b: str) -> bool:
    """Whether two kinds may share an instruction (a kind never shares one with itself)."""
    return a != b and frozenset((a, b)) not in CONFLICTS


def pick_kinds(rng: random.Random, count: int) -> list[str]:
    """Up to `count` kinds, pairwise compatible, each drawn uniformly from those still compatible."""
    chosen: list[str] = []
    candidates = list(KINDS)
    while len(chosen) < count and candidates:
        kind = rng.choice(candidates)
        chosen.append(kind)
        candidates = [c for c in candidates if compatible(kind, c)]
    return chosen


def instruction_id(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def instruction_row(task: str, constraints: list[Constraint]) -> dict:
    prompt = " ".join([task.strip(), *(c.describe() for c in constraints)])
    return {"prompt": prompt, "task": task, "constraints": to_json(constraints),
            "instruction_id": instruction_id(prompt)}


def _task_stream(rng: random.Random, tasks: list[str]) -> Iterator[str]:
    """Tasks in shuffled rounds, so that every task is used about equally often."""
    order = list(tasks)
    while True:
        rng.shuffle(order)
        yield from order


def compose(tasks: list[str], n: int, seed: int, min_constraints: int = 1, max_constraints: int = 3) -> list[dict]:
    """n instructions (fewer only if the tasks cannot give n distinct prompts), the same for the same arguments."""
    if not tasks:
        raise ValueError("compose needs at least one task")
    if not 1 <= min_constraints <= max_constraints:
        raise ValueError(f"need 1 <= min_constraints <= max_constraints, got {min_constraints}, {max_constraints}")
    rng = random.Random(seed)
    stream = _task_stream(rng, tasks)
    rows: list[dict] = []
    seen: set[str] = set()
    for _ in range(20 * n + 100):  # a bound, so that too few tasks for n distinct prompts cannot loop forever
        if len(rows) == n:
            break
        task = next(stream)
        kinds = pick_kinds(rng, rng.randint(min_constraints, max_constraints))
        row = instruction_row(task, [sample(kind, rng, task) for kind in kinds])
        if row["instruction_id"] not in seen:
            seen.add(row["instruction_id"])
            rows.append(row)
    return rows


def in_eval(task: str, eval_share: float, seed: int = 0) -> bool:
    """A task's side, from a hash of the task and the seed: the same task is always on the same side."""
    digest = hashlib.sha256(f"{seed}\0{task}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_share


def split(rows: list[dict], eval_share: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(train, eval), split by task: all instructions made from one task land on the same side."""
    train, evaluation = [], []
    for row in rows:
        (evaluation if in_eval(row["task"], eval_share, seed) else train).append(row)
    return train, evaluation


def load_tasks() -> list[str]:
    """The shipped seed tasks (builder/data/verifiable/tasks.txt), one per non-blank line."""
    text = resources.files("builder").joinpath("data", "verifiable", "tasks.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
