"""Read prompts from files, `datasets` datasets or earlier versions, into one typed table.

prompts: prompt_id, prompt (the last user turn), messages (the conversation to answer), source (the input's
content fingerprint, never its path: the same input typed as a relative or an absolute path gives the same
table), source_row, source_id (the input's own `id` column, when it has one), and `constraints` (JSON text of
verifiable constraints, see builder/judging/constraints.py) only when the input has that column.

A version's other tables are read as `VERSION:TABLE` (e.g. `verifiable-3f2a:eval`, a held-out split).

A stage that runs shard by shard reads its prompts through a `PromptIndex` (`index_prompts`): the input
normalised once, a slice at a time, into a parquet file in the store (`.cache/prompts/<key>/`, keyed by the
input's content fingerprint and the limit), from which each shard reads only its own rows. A finished
configuration's rerun then reads neither the input's rows nor their hashes again.
"""

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import polars as pl

from builder.core.errors import BuilderError
from builder.core.records import canonical_json, file_sha256, stable_hash
from builder.core.schemas import DROPPED_SCHEMA, PROMPTS_SCHEMA, drops


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
    frame, source = scan_source(spec, store, what)
    return frame.collect(), source


def scan_source(spec: str, store, what: str = "prompts") -> tuple[pl.LazyFrame, PromptSource]:
    """The input's rows, lazily where the format allows it (parquet files and versions), and where they came from."""
    path = Path(spec).expanduser()
    if path.is_file():
        frame = pl.scan_parquet(path) if path.suffix.lower() == ".parquet" else read_file(path).lazy()
        return frame, PromptSource(spec, "file", "sha256:" + file_sha256(path))
    if path.is_dir() and (path / "manifest.json").exists():
        return _read_version_dir(path, spec)
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        from datasets import load_from_disk

        dataset = load_from_disk(str(path))
        if hasattr(dataset, "keys"):  # a DatasetDict: take its train split, or its only one
            dataset = dataset["train"] if "train" in dataset else next(iter(dataset.values()))
        return dataset.to_polars().lazy(), PromptSource(spec, "datasets", f"datasets:{dataset._fingerprint}")
    if spec.startswith("hf:"):
        frame, source = _read_hub_dataset(spec)
        return frame.lazy(), source
    if store is not None:
        version = store.find(spec, missing_ok=True)
        if version is not None:
            return _read_version_dir(version, spec)
        name, _, table = spec.rpartition(":")
        version = store.find(name, missing_ok=True) if name and table.isidentifier() else None
        if version is not None:
            return _read_version_dir(version, spec, table)
    raise BuilderError(f"{what} {spec!r}: no such file, folder, dataset version or hf: dataset")


def _read_version_dir(folder: Path, spec: str, name: str = "prompts") -> tuple[pl.LazyFrame, PromptSource]:
    from builder.core.store import read_manifest, table_files

    manifest = read_manifest(folder)
    files = table_files(manifest.files).get(name)
    if not files:
        raise BuilderError(f"version {manifest.id} has no {name} table")
    frame = pl.scan_parquet([folder / f for f in files])
    columns = frame.collect_schema().names()
    if "prompt" not in columns or "messages" not in columns:
        raise BuilderError(f"the {name} table of version {manifest.id} holds no prompts")
    carried = [c for c in CARRIED if c in columns]
    frame = frame.select("prompt", "messages", pl.col("prompt_id").alias("id"), *carried)
    shas = [manifest.files[f]["sha256"] for f in files]
    fingerprint = f"version:{manifest.id}:{shas[0] if len(files) == 1 else stable_hash(shas)}"
    return frame, PromptSource(spec, "version", fingerprint, manifest.id)


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
    check_columns(raw.schema, source)
    frame = normalise_rows(raw, source, origin)
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


def check_columns(schema: pl.Schema, source: str) -> None:
    if "messages" not in schema and "prompt" not in schema:
        raise BuilderError(f"{source} needs a 'prompt' or 'messages' column (found: {', '.join(schema.names())})")
    if "messages" not in schema and schema["prompt"] != pl.String:
        raise BuilderError(f"{source}: the 'prompt' column must hold text, not {schema['prompt']}")


def normalise_rows(raw: pl.DataFrame, source: str, origin: str | None = None, offset: int = 0) -> pl.DataFrame:
    """Rows `offset`, `offset + 1`, … of an input as prompts rows, before empty and repeated prompts are dropped
    (an empty conversation has no prompt_id)."""
    if "messages" in raw.columns:
        conversations = [_conversation(m, source, offset + row) for row, m in enumerate(raw["messages"].to_list())]
        keys = [prompt_key(c) for c in conversations]
    else:
        texts = raw["prompt"].to_list()
        conversations = [text_conversation(p) for p in texts]
        keys = [text_prompt_key(p) if c else None for p, c in zip(texts, conversations, strict=True)]
    ids = raw["id"].cast(pl.String).to_list() if "id" in raw.columns else [None] * raw.height
    frame = pl.DataFrame(
        {
            "prompt_id": keys,
            "prompt": [c[-1]["content"] if c else None for c in conversations],
            "messages": conversations,
            "source": [origin or source] * raw.height,
            "source_row": range(offset, offset + raw.height),
            "source_id": ids,
        },
        schema=PROMPTS_SCHEMA,
    )
    if "constraints" in raw.columns:
        frame = frame.with_columns(pl.Series("constraints", _json_texts(raw["constraints"]), pl.String))
    return frame


def text_prompt_key(text: str) -> str:
    """prompt_key of a one-turn text conversation, its canonical JSON put together directly."""
    blob = '[{"content":' + json.dumps(text, ensure_ascii=False) + ',"role":"user"}]'
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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


INDEX_SLICE = 65_536  # input rows normalised at a time


@dataclass(frozen=True)
class PromptIndex:
    """An input's usable prompts (the first `limit` rows, less empty and repeated ones), normalised, in input order."""

    folder: Path  # prompts.parquet (the prompts table), dropped.parquet (the empty and repeated prompts), index.json
    rows: int
    fingerprint: str  # stable_hash of every row's (prompt_id, source, source_row, source_id): what names the input
    source: PromptSource
    constrained: int = 0  # prompts with a constraints text

    def read(self, rows: range) -> pl.DataFrame:
        """Those prompts (positions in the index), read from the file without the others."""
        return pl.scan_parquet(self.folder / "prompts.parquet").slice(rows.start, len(rows)).collect()

    @property
    def dropped(self) -> Path:
        return self.folder / "dropped.parquet"


def index_prompts(spec: str | None, store, limit: int | None = None) -> PromptIndex:
    """The input's prompt index, from the store when it was made before (the same content and limit), else made
    now, a slice at a time, and kept."""
    frame, source = scan_source(spec or str(sample_prompts_path()), store)
    key = stable_hash({"input": source.fingerprint, "limit": limit, "layout": 1})[:24]
    folder = store.root / ".cache" / "prompts" / key
    if not (folder / "index.json").is_file():
        partial = folder.with_name(f".partial-{key}-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            _write_index(frame, source, limit, partial)
            partial.rename(folder)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not (folder / "index.json").is_file():  # not built meanwhile by another run
                raise
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    recorded = json.loads((folder / "index.json").read_text())
    return PromptIndex(folder, recorded["rows"], recorded["fingerprint"], source, recorded["constrained"])


def _write_index(frame: pl.LazyFrame, source: PromptSource, limit: int | None, folder: Path) -> None:
    import pyarrow.parquet as pq

    from builder.core.store import plain_types

    schema = frame.collect_schema()
    check_columns(schema, source.spec)
    columns = PROMPTS_SCHEMA | ({"constraints": pl.String} if "constraints" in schema else {})
    total = frame.select(pl.len()).collect().item()
    total = total if limit is None else min(limit, total)
    if total == 0:
        raise BuilderError(f"no prompts in {source.spec}")
    seen = pl.Series("prompt_id", [], pl.String)
    dropped, kept, constrained = [], 0, 0
    digest = hashlib.sha256(b"[")
    with pq.ParquetWriter(folder / "prompts.parquet", plain_types(pl.DataFrame(schema=columns)).schema, compression="zstd") as writer:
        for offset in range(0, total, INDEX_SLICE):
            raw = frame.slice(offset, min(INDEX_SLICE, total - offset)).collect()
            rows = normalise_rows(raw, source.spec, source.fingerprint, offset)
            empty = rows["prompt_id"].is_null()
            first = rows["prompt_id"].is_first_distinct() & ~rows["prompt_id"].is_in(seen.implode()) & ~empty
            detail = pl.format("source row {}", "source_row")
            dropped += [drops(rows.filter(empty), "prompt", "empty_prompt", detail),
                        drops(rows.filter(~empty & ~first), "prompt", "duplicate_prompt", detail)]
            usable = rows.filter(first)
            seen = pl.concat([seen, usable["prompt_id"]], rechunk=False)
            if "constraints" in usable.columns:
                constrained += usable.filter(pl.col("constraints").str.strip_chars().str.len_chars() > 0).height
            if usable.height:
                ids = canonical_json(usable.select("prompt_id", "source", "source_row", "source_id").rows())
                digest.update(("," if kept else "").encode() + ids[1:-1].encode())
                writer.write_table(plain_types(usable))
                kept += usable.height
    if kept == 0:
        raise BuilderError(f"no usable prompts in {source.spec} (all empty)")
    digest.update(b"]")
    pl.concat(dropped).cast(DROPPED_SCHEMA).write_parquet(folder / "dropped.parquet")
    (folder / "index.json").write_text(json.dumps({"rows": kept, "fingerprint": digest.hexdigest(), "source": source.fingerprint,
                                                     "limit": limit, "constrained": constrained}))
