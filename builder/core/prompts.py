"""Read prompts from files, `datasets` datasets or earlier versions, into one typed table.

prompts: prompt_id, prompt (the last user turn), messages (the conversation to answer), source (the input's
content fingerprint, never its path: the same input typed as a relative or an absolute path gives the same
table), source_row, source_id (the input's own `id` column, when it has one), and `constraints` (JSON text of
verifiable constraints, see builder/judging/constraints.py) only when the input has that column.

A version's other tables are read as `VERSION:TABLE` (e.g. `verifiable-3f2a:eval`, a held-out split).
"""

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from builder.core.errors import BuilderError
from builder.core.records import file_sha256, stable_hash
from builder.core.schemas import PROMPTS_SCHEMA, drops


@dataclass(frozen=True)
class PromptSource:
    spec: str
    kind: str  # file | datasets | version
    fingerprint: str
    parent_version: str | None = None

    def to_json(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "fingerprint": self.fingerprint, "parent_version": self.parent_version}


def turn(role: str, column: str) -> pl.Expr:
    """A one-message conversation, [{role, content}], from a text column."""
    return pl.concat_list(pl.struct(pl.lit(role).alias("role"), pl.col(column).alias("content")))


def sample_prompts_path() -> Path:
    return Path(str(resources.files("builder").joinpath("data", "sample_prompts.jsonl")))


def load_prompts(spec: str | None, store=None, limit: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame, PromptSource]:
    """Returns (prompts, dropped prompts, where they came from)."""
    raw, source = read_source(spec or str(sample_prompts_path()), store)
    return normalise(raw, source.spec, limit, source.fingerprint) + (source,)


def read_source(spec: str, store, what: str = "prompts") -> tuple[pl.DataFrame, PromptSource]:
    path = Path(spec).expanduser()
    if path.is_file():
        return read_file(path), PromptSource(spec, "file", "sha256:" + file_sha256(path))
    if path.is_dir() and (path / "manifest.json").exists():
        return _read_version_dir(path, spec)
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        if hasattr(dataset, "keys"):  # a DatasetDict: take its train split, or its only one
            dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
        return dataset.to_polars(), PromptSource(spec, "datasets", f"datasets:{dataset._fingerprint}")
    if spec.startswith("hf:"):
        return _read_hub_dataset(spec)
    if store is not None:
        version = store.find(spec, missing_ok=True)
        if version is not None:
            return _read_version_dir(version, spec)
        name, _, table = spec.rpartition(":")
        version = store.find(name, missing_ok=True) if name and table.isidentifier() else None
        if version is not None:
            return _read_version_dir(version, spec, table)
    raise BuilderError(f"{what} {spec!r}: no such file, folder, dataset version or hf: dataset")


def _read_version_dir(folder: Path, spec: str, name: str = "prompts") -> tuple[pl.DataFrame, PromptSource]:
    manifest = json.loads((folder / "manifest.json").read_text())
    table = folder / f"{name}.parquet"
    if not table.exists():
        raise BuilderError(f"version {manifest['id']} has no {name} table")
    frame = pl.read_parquet(table)
    if "prompt" not in frame.columns or "messages" not in frame.columns:
        raise BuilderError(f"the {name} table of version {manifest['id']} holds no prompts")
    carried = [c for c in CARRIED if c in frame.columns]
    frame = frame.select("prompt", "messages", pl.col("prompt_id").alias("id"), *carried)
    fingerprint = f"version:{manifest['id']}:{manifest['files'][table.name]['sha256']}"
    return frame, PromptSource(spec, "version", fingerprint, manifest["id"])


def _read_hub_dataset(spec: str) -> tuple[pl.DataFrame, PromptSource]:
    from datasets import load_dataset

    name, _, split = spec[3:].partition(":")
    try:
        dataset = load_dataset(name, split=split or "train")
    except Exception as error:
        raise BuilderError(f"cannot load dataset {name!r} ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    return dataset.to_polars(), PromptSource(spec, "datasets", f"datasets:{dataset._fingerprint}")


def read_file(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pl.read_parquet(path)
        text = path.read_bytes().decode("utf-8")
        if not text.strip():
            raise BuilderError(f"{path} is empty")
        if suffix in (".jsonl", ".ndjson"):
            return pl.read_ndjson(text.encode())
        if suffix == ".json":
            return pl.read_json(text.encode()) if text.lstrip().startswith("[") else pl.read_ndjson(text.encode())
        if suffix in (".csv", ".tsv"):
            return pl.read_csv(text.encode(), separator="\t" if suffix == ".tsv" else ",")
    except UnicodeDecodeError as error:
        raise BuilderError(f"{path} is not valid UTF-8 (byte {error.start})") from None
    except (pl.exceptions.PolarsError, OSError, ValueError) as error:
        raise BuilderError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    raise BuilderError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .parquet or .csv)")


CARRIED = ("constraints",)  # optional columns a prompts table keeps when its input has them


def normalise(raw: pl.DataFrame, source: str, limit: int | None, origin: str | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`source` names the input in messages; `origin` (its fingerprint, default `source`) fills the source column."""
    if raw.height == 0:
        raise BuilderError(f"no prompts in {source}")
    if "messages" in raw.columns:
        conversations = [_conversation(m, source, row) for row, m in enumerate(raw["messages"].to_list())]
    elif "prompt" in raw.columns:
        if raw.schema["prompt"] != pl.String:
            raise BuilderError(f"{source}: the 'prompt' column must hold text, not {raw.schema['prompt']}")
        conversations = [text_conversation(p) for p in raw["prompt"].to_list()]
    else:
        raise BuilderError(f"{source} needs a 'prompt' or 'messages' column (found: {', '.join(raw.columns)})")
    ids = raw["id"].cast(pl.String).to_list() if "id" in raw.columns else [None] * raw.height
    frame = pl.DataFrame(
        {
            "prompt_id": [prompt_key(c) for c in conversations],
            "prompt": [c[-1]["content"] if c else None for c in conversations],
            "messages": conversations,
            "source": [origin or source] * raw.height,
            "source_row": list(range(raw.height)),
            "source_id": ids,
        },
        schema=PROMPTS_SCHEMA,
    )
    if "constraints" in raw.columns:
        frame = frame.with_columns(pl.Series("constraints", _json_texts(raw["constraints"]), pl.String))
    if limit is not None:
        frame = frame.head(limit)
    empty = frame.filter(pl.col("prompt_id").is_null())
    frame = frame.filter(pl.col("prompt_id").is_not_null())
    duplicate = frame.filter(pl.col("prompt_id").is_duplicated() & ~pl.col("prompt_id").is_first_distinct())
    frame = frame.filter(pl.col("prompt_id").is_first_distinct())
    if frame.height == 0:
        raise BuilderError(f"no usable prompts in {source} (all empty)")
    detail = pl.format("source row {}", "source_row")
    return frame, pl.concat([drops(empty, "prompt", "empty_prompt", detail), drops(duplicate, "prompt", "duplicate_prompt", detail)])


def text_conversation(text: str | None) -> list[dict]:
    """A prompt text as a one-turn conversation (empty for a blank text)."""
    return [{"role": "user", "content": text}] if text and text.strip() else []


def conversation_of(value, source: str, row: int) -> list[dict]:
    """A prompt cell, a text or a list of messages, as the conversation to answer."""
    return text_conversation(value) if value is None or isinstance(value, str) else _conversation(value, source, row)


def prompt_key(conversation: list[dict]) -> str | None:
    """A prompt's id: the hash of its conversation (None for an empty one)."""
    return stable_hash(conversation)[:16] if conversation else None


def _json_texts(column: pl.Series) -> list[str | None]:
    """Constraints as JSON text, whether the input kept them as text or as parsed JSON (lists of objects). Parsed
    JSON read by polars has the union of every row's object keys, the missing ones null: those are dropped."""
    if column.dtype == pl.String:
        return column.to_list()
    return [None if value is None else json.dumps(_without_nulls(value), ensure_ascii=False, sort_keys=True) for value in column.to_list()]


def _without_nulls(value):
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _conversation(messages, source: str, row: int) -> list[dict]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in messages):
        raise BuilderError(f"{source} row {row}: 'messages' must be a list of {{role, content}}")
    for index, m in enumerate(messages):
        if not isinstance(m["role"], str) or not isinstance(m["content"], str):
            raise BuilderError(f"{source} row {row}: message {index} needs a text role and content (found {m['role']!r}, {type(m['content']).__name__})")
    conversation = [{"role": m["role"], "content": m["content"]} for m in messages]
    if conversation and conversation[-1]["role"] == "assistant":
        conversation = conversation[:-1]  # the reference answer: not part of the prompt
    if conversation and (conversation[-1]["role"] != "user" or not (conversation[-1]["content"] or "").strip()):
        raise BuilderError(f"{source} row {row}: the conversation must end with a non-empty user turn")
    return conversation
