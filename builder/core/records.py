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
class Constraint:
    """Guided decoding: the whole answer must match `regex` (a full match; no lookarounds or backreferences).

    The answer is free text up to the first `closer` character, then a fixed-form tail of at most `tail_chars`
    characters (e.g. "\nScore: 5"); an engine that can count tokens forces the closer early enough for the tail
    to fit in the token budget. `choices` are the alternatives of the answer's last token (e.g. the score
    digits): the engine reports the probability of each at that position, renormalised over the choices.
    """

    regex: str
    closer: str = "\n"
    tail_chars: int = 0
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class Request:
    """One call to a model: a conversation to continue, n samples of it."""

    key: str  # content hash of everything that determines the answer; the cache key
    messages: tuple[Message, ...]
    sampling: Sampling
    seed: int
    constraint: Constraint | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    n_tokens: int
    # The probability of each of the request's constraint.choices at the answer's last token; None when the
    # request asked for none, or the answer does not end with one of them.
    choice_probs: tuple[float, ...] | None = None


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def stable_hash(value) -> str:
    """sha256 of a JSON-serialisable value, independent of dict ordering."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


@functools.lru_cache(maxsize=256)
def _sampling_json(sampling: Sampling) -> str:
    return canonical_json(asdict(sampling))


def request_key(generator_identity: dict, messages: list[Message], sampling: Sampling, seed: int,
                constraint: Constraint | None = None) -> str:
    """stable_hash({"constraint" (when there is one), "generator", "messages", "sampling", "seed"}), its JSON put
    together from the canonical JSON of each part (the same bytes, keys in sorted order)."""
    return KeyMaker(generator_identity, sampling, seed, constraint)(messages)


class KeyMaker:
    """request_key for many requests that share a generator, sampling, seed and constraint: the JSON of all but
    the messages is put together once, and the messages' JSON is written directly (the same bytes as
    canonical_json)."""

    def __init__(self, generator_identity: dict, sampling: Sampling, seed: int, constraint: Constraint | None = None):
        head = f'"constraint":{_constraint_json(constraint)},' if constraint else ""
        self.prefix = f'{{{head}"generator":{canonical_json(generator_identity)},"messages":'.encode()
        self.suffix = f',"sampling":{_sampling_json(sampling)},"seed":{canonical_json(seed)}}}'.encode()

    def __call__(self, messages: list[Message]) -> str:
        return hashlib.sha256(self.prefix + messages_json(messages).encode() + self.suffix).hexdigest()


def messages_json(messages: list[Message]) -> str:
    """canonical_json of a conversation, written directly for the usual {role, content} messages."""
    if not all(len(m) == 2 and "role" in m and "content" in m and isinstance(m["content"], str) and isinstance(m["role"], str)
               for m in messages):
        return canonical_json(messages)
    return "[" + ",".join(f'{{"content":{_string(m["content"])},"role":{_string(m["role"])}}}' for m in messages) + "]"


_string = json.encoder.encode_basestring  # a str as JSON, as json.dumps(ensure_ascii=False) writes it


@functools.lru_cache(maxsize=256)
def _constraint_json(constraint: Constraint) -> str:
    return canonical_json(asdict(constraint))


def make_request(
    generator_identity: dict, messages: list[Message], sampling: Sampling, seed: int, constraint: Constraint | None = None,
    key: str | None = None,
) -> Request:
    """`key`: the request's key when it is known already (request_key of the same arguments)."""
    # An unconstrained request keeps the key it had before constraints existed, so old caches stay valid.
    key = key or request_key(generator_identity, messages, sampling, seed, constraint)
    # Each request carries its own seed so that backends with per-request seeds (vLLM, HTTP) are reproducible.
    return Request(key=key, messages=tuple(messages), sampling=sampling, seed=int(key[:15], 16), constraint=constraint)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()
