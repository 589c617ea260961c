"""Where a contestant's answers come from: a file of answers, a dataset version, or a model that generates them.

A spec is tried in that order: an existing file (columns `prompt` or `messages`, and `response`), a version
in the store (a pairs version gives each prompt's first candidate), otherwise a model spec (a folder, a
registered name, a Hub id, or the embedded default) whose answers are generated through the cache.

answers: prompt_id, response, n_tokens (null when read from a file), finish_reason, n_chars.
"""

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import polars as pl

from builder.core.errors import BuilderError
from builder.core.prompts import normalise, read_file
from builder.core.records import Sampling, file_sha256, make_request
from builder.core.schemas import ANSWERS_SCHEMA
from builder.core.store import Store
from builder.engines.generators import Generator
from builder.engines.models import ModelRef, resolve_model
from builder.engines.runner import run_requests


@dataclass(frozen=True)
class Contestant:
    label: str  # how tables, the summary and the card name it
    spec: str
    kind: str  # file | version | model
    fingerprint: str
    sampling: Sampling | None = None  # models only
    model: ModelRef | None = None

    def to_json(self) -> dict:
        return {"label": self.label, "spec": self.spec, "kind": self.kind, "fingerprint": self.fingerprint,
                "sampling": asdict(self.sampling) if self.sampling else None}


def resolve_contestant(spec: str, sampling: Sampling, store: Store, served: bool = False) -> Contestant:
    path = Path(spec).expanduser()
    if path.is_file():
        return Contestant(spec, spec, "file", "sha256:" + file_sha256(path))
    version = store.find(spec, missing_ok=True) if not path.is_dir() else None
    if version is not None:
        return Contestant(version.name, spec, "version", f"version:{version.name}")
    model = resolve_model(spec, store.root, served)
    return Contestant(spec, spec, "model", model.fingerprint, sampling, model)


def labelled(contestants: list[Contestant]) -> list[Contestant]:
    """Short, distinct names: a path by its last part (unless two share it), and the temperature where the
    same model is sampled two ways."""
    short = {c.spec: Path(c.spec.rstrip("/")).name if c.kind != "version" and c.spec.startswith(("/", ".", "~")) else c.label for c in contestants}
    if len(set(short.values())) < len(short):
        short = {c.spec: c.label for c in contestants}
    temperatures: dict[str, set] = {}
    for c in contestants:
        temperatures.setdefault(c.spec, set()).add(c.sampling.temperature if c.sampling else None)
    return [
        replace(c, label=short[c.spec] + (f" T={c.sampling.temperature:g}" if c.sampling and len(temperatures[c.spec]) > 1 else ""))
        for c in contestants
    ]


def read_answers(contestant: Contestant, store: Store) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(prompts, answers) of a file or version contestant."""
    if contestant.kind == "version":
        version = store.load(contestant.spec)
        if not version.has_table("candidates"):
            raise BuilderError(f"version {version.id} has no candidates to read answers from")
        prompts = version.read("prompts")
        answers = version.scan("candidates").filter(pl.col("sample_index") == 0).collect()
        return prompts, answers.select(list(ANSWERS_SCHEMA)).cast(ANSWERS_SCHEMA)
    raw = read_file(Path(contestant.spec).expanduser())
    if "response" not in raw.columns:
        raise BuilderError(f"answers file {contestant.spec} needs a 'response' column (found: {', '.join(raw.columns)})")
    prompts, _ = normalise(raw, contestant.spec, None)
    responses = raw.select(pl.col("response").cast(pl.String)).with_row_index("source_row")
    answers = prompts.join(responses.with_columns(pl.col("source_row").cast(pl.Int64)), on="source_row").select(
        "prompt_id", "response", pl.lit(None, pl.Int32).alias("n_tokens"), pl.lit(None, pl.String).alias("finish_reason")
    )
    return prompts, answers.cast(ANSWERS_SCHEMA)


def generate_answers(generator: Generator, contestant: Contestant, prompts: pl.DataFrame, seed: int, store: Store, batch_size: int) -> pl.DataFrame:
    requests = [make_request(generator.identity, messages, contestant.sampling, seed) for messages in prompts["messages"].to_list()]
    done = run_requests(generator, requests, store.generation_cache(generator.identity), batch_size, f"answers {contestant.label}")
    rows = [
        {"prompt_id": prompt_id, "response": done[r.key][0].text, "n_tokens": done[r.key][0].n_tokens, "finish_reason": done[r.key][0].finish_reason}
        for prompt_id, r in zip(prompts["prompt_id"].to_list(), requests)
    ]
    return pl.DataFrame(rows, schema=ANSWERS_SCHEMA)


def aligned(answers: pl.DataFrame, prompts: pl.DataFrame, contestant: Contestant, reference: str) -> pl.DataFrame:
    """The contestant's answer to every prompt, in the prompts' order; a missing answer is an error."""
    joined = prompts.select("prompt_id").join(answers.unique("prompt_id", keep="first"), on="prompt_id", how="left", maintain_order="left")
    missing = joined.filter(pl.col("response").is_null()).height
    if missing:
        raise BuilderError(
            f"answers do not align: {contestant.label} has no answer for {missing} of the {prompts.height} prompts of {reference}"
        )
    return joined.with_columns(pl.col("response").str.len_chars().cast(pl.Int32).alias("n_chars"))
