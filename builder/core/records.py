"""The typed records that move between stages: generation requests and their completions."""

import functools
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


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def stable_hash(value) -> str:
    """sha256 of a JSON-serialisable value, independent of dict ordering."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _sampling_json(sampling: Sampling) -> str:
    return canonical_json(asdict(sampling))


def request_key(generator_identity: dict, messages: list[Message], sampling: Sampling, seed: int) -> str:
    """stable_hash({"generator", "messages", "sampling", "seed"}), its JSON put together from the canonical JSON
    of each part (the same bytes, keys in sorted order): the sampling's is computed once, not once a request."""
    blob = (
        f'{{"generator":{canonical_json(generator_identity)},"messages":{canonical_json(messages)},'
        f'"sampling":{_sampling_json(sampling)},"seed":{canonical_json(seed)}}}'
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def make_request(generator_identity: dict, messages: list[Message], sampling: Sampling, seed: int) -> Request:
    key = request_key(generator_identity, messages, sampling, seed)
    # Each request carries its own seed so that backends with per-request seeds (vLLM, HTTP) are reproducible.
    return Request(key=key, messages=tuple(messages), sampling=sampling, seed=int(key[:15], 16))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
