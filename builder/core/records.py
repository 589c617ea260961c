"""The typed records that move between stages: generation requests and their completions."""

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

Message = dict[str, str]  # {"role": ..., "content": ...}


@dataclass(frozen=True)
class Sampling:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Request:
    """One call to a model: a conversation to continue, n samples of it."""

    key: str  # content hash of everything that determines the answer; the cache key
    messages: tuple[Message, ...]
    sampling: Sampling
    seed: int


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    n_tokens: int


def stable_hash(value) -> str:
    """sha256 of a JSON-serialisable value, independent of dict ordering."""
    blob = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def make_request(generator_identity: dict, messages: list[Message], sampling: Sampling, seed: int) -> Request:
    key = stable_hash({"generator": generator_identity, "messages": messages, "sampling": asdict(sampling), "seed": seed})
    # Each request carries its own seed so that backends with per-request seeds (vLLM, HTTP) are reproducible.
    return Request(key=key, messages=tuple(messages), sampling=sampling, seed=int(key[:15], 16))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
